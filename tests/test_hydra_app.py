"""A user's own ``@hydra.main`` app that selects ``hydra/sweeper=sweeplab_standalone`` with the settings
written for Hydra's Optuna sweeper (direction, n_trials, n_jobs, storage, study_name, sampler, params): it
runs as written, and Optuna holds the study it describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tests.conftest import cli_env

APP = """
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return (cfg.x - 2.0) ** 2 + (cfg.y + 1.0) ** 2


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: sweeplab_standalone
  - _self_

x: 0.0
y: 0

hydra:
  sweeper:
    direction: minimize
    n_trials: 8
    n_jobs: 1
    storage: sqlite:///quadratic.db
    study_name: quadratic
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 123
      n_startup_trials: 4
    params:
      x: interval(-5.0, 5.0)
      y: choice(-5, -1, 0, 5)
"""


def test_optuna_sweeper_style_app_runs_as_written(workdir: Path):
    (workdir / "app.py").write_text(APP)
    (workdir / "conf").mkdir()
    (workdir / "conf" / "config.yaml").write_text(CONFIG)
    command = [sys.executable, "app.py", "-m"]
    proc = subprocess.run(command, cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="quadratic", storage=f"sqlite:///{workdir / 'quadratic.db'}")
    assert study.direction == StudyDirection.MINIMIZE
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 8
    for t in trials:
        assert t.value == (t.params["x"] - 2.0) ** 2 + (t.params["y"] + 1.0) ** 2
        assert -5.0 <= t.params["x"] <= 5.0 and t.params["y"] in (-5, -1, 0, 5)
    assert study.best_value == min(t.value for t in trials)
