"""A trial in a process of its own, started by a launcher such as submitit (local or Slurm): it records
its MLflow run under the sweep's parent run and reports to its Optuna trial (pruning), as trials run by
the sweeper's own process do.

The sweeper leaves what a job needs as Hydra overrides of the sweep (``hydra.overrides.hydra``), from which
Hydra composes every job's config, wherever it runs: ``hydra.sweeper.sweeplab_sweep_id`` (the parent run),
``hydra.sweeper.sweeplab_study`` (the study) and, in each job's own overrides,
``hydra.sweeper.sweeplab_trial`` (its trial number; else the job number is).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeps.tracking import session as tracking
from sweeps.training.context import TrialHandle


def publish(config: DictConfig, **values: Any) -> None:
    """Add ``values`` to ``hydra.sweeper`` of every job's config (as ``++hydra.sweeper.sweeplab_KEY=...``)."""
    with read_write(config), open_dict(config):
        for key, value in values.items():
            if value is not None:
                config.hydra.overrides.hydra.append(override(key, value))


def override(key: str, value: Any) -> str:
    """``++hydra.sweeper.sweeplab_KEY=VALUE``, quoted for Hydra's parser."""
    if isinstance(value, int):
        return f"++hydra.sweeper.sweeplab_{key}={value}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"++hydra.sweeper.sweeplab_{key}='{text}'"


def attach(cfg: DictConfig, hydra_cfg: Any) -> tuple[tracking.Session | None, TrialHandle | None]:
    """In a job of its own: a tracking session joined to the sweep (the caller closes it) and the job's
    Optuna trial with the sweep's pruner (a loaded study would decide with Optuna's default one), from what
    the sweeper published; (None, None) where it published nothing."""
    sweeper = hydra_cfg.sweeper
    trial = None
    study_name = sweeper.get("sweeplab_study")
    if study_name:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        number = sweeper.get("sweeplab_trial")
        number = int(hydra_cfg.job.num if number is None else number)
        pruner = sweeper.get("pruner")
        spec = {
            "study": study_name,
            "storage": sweeper.get("storage"),
            "number": number,
            "pruner": OmegaConf.to_container(pruner, resolve=True) if pruner is not None else None,
        }
        trial = TrialHandle.load(spec)
    sweep_id = sweeper.get("sweeplab_sweep_id")
    if not sweep_id or not cfg.get("tracking") or not cfg.tracking.get("enabled"):
        return None, trial
    return tracking.start(cfg.tracking, sweep_id), trial


def deadline(hydra_cfg: Any) -> float | None:
    """The sweep's deadline (``hydra.sweeper.deadline``, a Unix time) in a job of its own: it stops training
    there, as a trial in the sweeper's process does."""
    value = hydra_cfg.sweeper.get("deadline")
    return float(value) if value else None
