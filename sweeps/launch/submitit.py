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

from omegaconf import DictConfig, open_dict, read_write

from sweeps.support.context import Trial, current_trial, set_trial
from sweeps.tracking import session as tracking


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


def attach(cfg: DictConfig, hydra_cfg: Any) -> tracking.Session | None:
    """In a job of its own: open a tracking session joined to the sweep, and set the current trial.

    Returns the session (the caller closes it), or None where the sweeper's process runs this job (it has
    both already) or nothing was published.
    """
    if tracking.active() is not None or current_trial() is not None:
        return None
    sweeper = hydra_cfg.sweeper
    study_name = sweeper.get("sweeplab_study")
    if study_name:
        import optuna

        from sweeps.search.study import load

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        ref = load(study_name, sweeper.get("storage"))
        number = sweeper.get("sweeplab_trial")
        set_trial(Trial(ref.trial(int(hydra_cfg.job.num if number is None else number)), study_name))
    sweep_id = sweeper.get("sweeplab_sweep_id")
    if not sweep_id or not cfg.get("tracking") or not cfg.tracking.get("enabled"):
        return None
    session = tracking.start(cfg.tracking)
    if session is not None:
        session.join_sweep(sweep_id)
    return session
