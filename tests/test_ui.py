"""The MLflow UI shows a sweep (its runs, and several compared), optuna-dashboard a search: real servers on
loopback, headless Chromium driven by Playwright.

Chromium comes from the system (Debian's ``chromium`` package; .ci/run installs it). Without it the test is
skipped on a developer's machine and fails under CI.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tests.conftest import ROOT, free_port, mlflow_server, run_cli, start_cli, wait_until_up

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


@contextlib.contextmanager
def make_ui(workdir: Path, timeout: float = 180) -> Iterator[str]:
    """``make ui`` (``python -m sweeps.ui``) over ``workdir``'s store: the address it prints."""
    proc = start_cli(
        ["--port", str(free_port()), "--workers", "1"], workdir, module="sweeps.ui", start_new_session=True
    )
    said: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("the runs: ") for line in said):
            line = proc.stdout.readline() if proc.stdout else ""
            assert line and time.monotonic() < deadline, "".join(said)
            said.append(line)
        # the server goes on writing: keep its pipe drained
        threading.Thread(target=proc.communicate, daemon=True).start()
        yield said[-1].removeprefix("the runs: ").strip()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
        proc.wait(timeout=30)
    assert not any("Deprecat" in line for line in said), "".join(said)  # Starlette's, from MLflow


@pytest.mark.timeout(450)  # run_cli 240 + the server's 180 + the page's 60 + 30 (some overlap), + 60
def test_make_ui_opens_on_the_sweeps_runs_with_the_parent_and_its_child_runs(workdir: Path, chromium: str):
    """MLflow 3.17's UI opens an experiment on its GenAI pages (Traces, "No data") even when the experiment
    is tagged as model training; the address ``make ui`` prints opens the runs table."""
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

    with make_ui(workdir) as url, sync_playwright() as pw:
        assert f"/#/experiments/{experiment.experiment_id}/runs?" in url
        browser = pw.chromium.launch(executable_path=chromium, args=QUIET_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
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


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished Optuna search of three trials (journal file and MLflow store under its mlruns/)."""
    folder = tmp_path_factory.mktemp("search")
    args = ["-m", "search=lr_betas", "hydra.sweeper.n_trials=3", "trainer.max_epochs=2"]
    proc = run_cli(args, cwd=folder, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@contextlib.contextmanager
def optuna_dashboard(storage: Path, log: Path, timeout: float = 120) -> Iterator[str]:
    """``optuna-dashboard`` as ``make dashboard`` starts it: on loopback, over the study storage."""
    port = free_port()
    program = str(Path(sys.executable).parent / "optuna-dashboard")
    command = [program, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, str(storage)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/api/studies", proc, timeout, "optuna-dashboard", log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.timeout(900)  # the first test to use ``search`` runs it
def test_optuna_dashboard_shows_the_finished_search_and_its_trials(search: Path, chromium: str):
    from playwright.sync_api import sync_playwright

    journal = search / "mlruns" / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    study_id = storage.get_study_id_from_name(summary.study_name)
    assert summary.study_name.startswith("lr_betas ") and summary.n_trials == 3
    with optuna_dashboard(journal, search / "dashboard.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=QUIET_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/dashboard/")
            page.get_by_text(summary.study_name).first.wait_for(timeout=60_000)
            page.goto(f"{url}/dashboard/studies/{study_id}/trials")
            page.get_by_text("3 Trials").first.wait_for(timeout=60_000)
            for number in range(3):
                page.get_by_text(f"Trial {number}", exact=True).first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "optuna-dashboard-study.png"))
        finally:
            browser.close()
    assert summary.study_name in body and "Complete" in body
    assert "optimizer.beta1" in body and "lr" in body
    assert (ARTIFACTS / "optuna-dashboard-study.png").stat().st_size > 10_000


# The value cells of a metric in the compare view's grid: the cells at the height of its name cell.
METRIC_VALUES = """(link) => {
  const cell = link.parentElement;
  for (let up = cell.parentElement; up; up = up.parentElement) {
    const same = [...up.querySelectorAll('div')].filter(
      (d) => d !== cell && d.style.position === 'absolute' && d.style.top === cell.style.top);
    if (same.length) return same.map((d) => d.innerText.trim());
  }
  return [];
}"""


@pytest.mark.timeout(900)
def test_mlflow_compare_view_shows_the_swept_params_and_the_objective_of_each_selected_run(
    search: Path, chromium: str, tmp_path_factory
):
    from playwright.sync_api import sync_playwright

    db = search / "mlruns" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep")
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(children) == 3

    with mlflow_server(tmp_path_factory.mktemp("compare"), store=db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=QUIET_CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs")
            name_cells = page.locator("[role=gridcell][col-id='attributes.`Run Name`']")
            parent_cell = name_cells.filter(has_text=parent.info.run_name).first
            parent_cell.wait_for(timeout=60_000)
            parent_cell.locator("button").first.click()  # expand the parent to list its children
            for child in children.values():  # select each child run's row
                cell = name_cells.filter(has_text=child.info.run_name).first
                cell.wait_for(timeout=30_000)
                page.locator("[role=row]").filter(has=cell).first.locator(
                    "input[type=checkbox]"
                ).first.check()
            page.get_by_role("button", name="Compare").first.click()
            page.get_by_text("Comparing 3 Runs").first.wait_for(timeout=60_000)
            objective = page.get_by_text("best_val_acc", exact=True).first
            objective.wait_for(timeout=30_000)
            shown_objective = objective.evaluate(METRIC_VALUES)
            order = re.findall(r"[0-9a-f]{32}", urllib.parse.unquote(page.url))
            lines = page.inner_text("body").splitlines()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-compare.png"))  # the runs and their plot
            objective.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-compare-metrics.png"))
        finally:
            browser.close()
    assert sorted(order) == sorted(children)
    for key in ("lr", "optimizer.beta1", "optimizer.beta2"):  # the swept params, one column per run
        assert "\t".join([key, *(children[run].data.params[key] for run in order)]) in lines, key
    expected = [f"{children[run].data.metrics['best_val_acc']:.3g}" for run in order]
    assert shown_objective == expected
    for picture in ("mlflow-ui-compare.png", "mlflow-ui-compare-metrics.png"):
        assert (ARTIFACTS / picture).stat().st_size > 10_000
