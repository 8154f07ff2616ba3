"""The MLflow UI shows a sweep: a real ``mlflow server`` on loopback, headless Chromium driven by Playwright.

Chromium comes from the system (Debian's ``chromium`` package; .ci/run installs it). Without it the test is
skipped on a developer's machine and fails under CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, mlflow_server, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = Path(os.environ.get("SWEEPLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# Chromium's background services try to reach the internet; this machine has none.
QUIET_CHROMIUM = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


def test_mlflow_ui_shows_the_parent_and_its_child_runs(workdir: Path, chromium: str, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    proc = run_cli(["-m", "optimizer=adam,sgd", "lr=1e-3,1e-2", "trainer.max_epochs=2"], cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    db = workdir / "mlruns" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep")
    children = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4

    with mlflow_server(tmp_path_factory.mktemp("ui"), store=db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=QUIET_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs")
            name_cells = page.locator("[role=gridcell][col-id='attributes.`Run Name`']")
            parent_cell = name_cells.filter(has_text=parent.info.run_name).first
            parent_cell.wait_for(timeout=60_000)
            parent_cell.locator("button").first.click()  # expand the parent to list its children
            for name in children:
                name_cells.filter(has_text=name).first.wait_for(timeout=30_000)
            shown = page.locator("[role=gridcell][col-id='attributes.`Run Name`']").all_inner_texts()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-sweep.png"))
        finally:
            browser.close()
    assert any(parent.info.run_name in text for text in shown)
    assert all(any(name in text for text in shown) for name in children)
    assert (ARTIFACTS / "mlflow-ui-sweep.png").stat().st_size > 10_000
