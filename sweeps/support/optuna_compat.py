"""Optuna's private APIs that sweeplab relies on, in one place; checked against Optuna 5.0.0, each with a test
in ``tests/test_compat.py`` that fails when Optuna changes it.

- ``trial``: the constructor of ``optuna.trial.Trial``, which Optuna documents as not for direct use. A trial
  that another process asked for (the sweeper asks; a worker, a DDP job or a Slurm job trains it and
  reports) has no public handle: ``Study.ask`` only creates a trial or takes a waiting one.
- ``CACHE_CALLS``: the private ``RDBStorage`` methods that a study's own storage cache (``_CachedStorage``)
  calls directly instead of the public ones. A storage that changes every call (``search.retry``) must
  override these too; Optuna has no public hook around its storage calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage

CACHE_CALLS = (
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
    "_get_stale_trial_ids",
)


def trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The running trial ``trial_id`` of ``study``, to suggest, report and ask ``should_prune`` through."""
    return optuna.trial.Trial(study, trial_id)


def override_cache_calls(storage_class: type[RDBStorage], method: Callable[[str], Any]) -> None:
    """Give ``storage_class`` (a subclass of ``RDBStorage``) ``method(name)`` in place of each private method
    named in ``CACHE_CALLS`` that this Optuna has."""
    for name in CACHE_CALLS:
        if callable(getattr(RDBStorage, name, None)):
            setattr(storage_class, name, method(name))
