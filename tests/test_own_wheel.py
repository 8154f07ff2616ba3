"""examples/own_project run from its own folder against sweeplab installed from a wheel, as a user would:
configs found through Hydra's search path (``--config-dir ./conf``), the project's package importable from
the folder, everything written under its ./mlruns.

To stay offline and fast, the fresh virtual environment reaches the dependencies through a ``.pth`` line to
the project's own environment and installs only the wheel (``--no-deps``); it is kept in pytest's cache,
keyed by the hash of the wheel's contents (its RECORD), so a rerun with unchanged code skips the install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT

SOURCES = ("pyproject.toml", "README.md", "sweeps", "lightning_modules", "hydra_plugins", "conf")


def build_wheel(folder: Path) -> Path:
    """A wheel of this checkout, built from a copy of its sources (nothing written into the checkout)."""
    src = folder / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        check=True,
    )
    return folder / "dist" / out.stdout.strip().splitlines()[-1]


def content_hash(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        return hashlib.sha256(zf.read(record)).hexdigest()[:16]


def installed(wheel: Path, cache: Path) -> Path:
    """The python of a venv holding only ``wheel`` (cached by its content hash)."""
    venv = cache / content_hash(wheel)
    python = venv / "bin" / "python"
    if (venv / "ready").exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --force-reinstall: the shared dependencies hold this checkout's own (editable) sweeplab, which pip would
    # otherwise take as already installed, leaving the venv without the wheel.
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    pip.append("--force-reinstall")
    subprocess.run([*pip, str(wheel)], check=True)
    (venv / "ready").touch()
    return python


def test_example_project_runs_from_its_folder_against_the_installed_wheel(
    tmp_path: Path, request: pytest.FixtureRequest
):
    python = installed(build_wheel(tmp_path), request.config.cache.mkdir("sweeplab-wheel-venvs"))
    project = tmp_path / "own_project"
    shutil.copytree(ROOT / "examples" / "own_project", project)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from this checkout
    where = subprocess.run(
        [str(python), "-c", "import sweeps; print(sweeps.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(python.parents[1])), where.stdout + where.stderr

    args = ["-m", "sweeps.run", "-m", "--config-dir", "./conf", "module=mine", "data=mine", "model=mine"]
    args += ["objective.metric=val/acc", "optimizer=adam,sgd", "data.n=200", "trainer.max_epochs=2"]
    proc = subprocess.run([str(python), *args], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in project.iterdir()) == ["conf", "mlruns", "myproject"]
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    assert sorted(r.data.params["optimizer"] for r in runs) == ["adam", "sgd"]
    assert all(r.info.status == "FINISHED" and "best_val/acc" in r.data.metrics for r in runs)
    assert list(project.glob("mlruns/multirun/*/*/0/checkpoints/best.ckpt"))
