"""A trial that a launcher (submitit: local or Slurm) runs in a process of its own is set up from what the
sweeper published in the job's Hydra config: its Optuna trial with the sweep's pruner, and the sweep's
deadline (before, such a job pruned with Optuna's default pruner and trained past the deadline)."""

from __future__ import annotations

from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.pruners import ThresholdPruner
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from sweeps.launch import submitit


def test_a_job_of_its_own_prunes_with_the_sweeps_pruner_and_stops_at_its_deadline(tmp_path: Path) -> None:
    journal = str(tmp_path / "optuna.journal")
    storage = JournalStorage(JournalFileBackend(journal))
    optuna.create_study(study_name="elsewhere", storage=storage, direction="maximize").ask()
    sweeper = {
        "sweeplab_study": "elsewhere",
        "sweeplab_trial": 0,
        "storage": journal,
        # Prunes every trial at its first report; Optuna's default (median, 5 start-up trials) none here.
        "pruner": {"_target_": "optuna.pruners.ThresholdPruner", "lower": 2.0},
        "deadline": 1893456000.0,
    }
    hydra_cfg = OmegaConf.create({"sweeper": sweeper, "job": {"num": 0}})
    tracker, trial = submitit.attach(OmegaConf.create({"tracking": {"enabled": False}}), hydra_cfg)
    assert tracker is None and trial is not None and trial.number == 0
    assert isinstance(trial.trial.study.pruner, ThresholdPruner)
    trial.trial.report(0.9, 1)
    assert trial.trial.should_prune()
    assert submitit.deadline(hydra_cfg) == 1893456000.0
    assert submitit.deadline(OmegaConf.create({"sweeper": {"deadline": None}})) is None
