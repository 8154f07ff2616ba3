"""Optuna's grid sampler for an ask/tell search.

``optuna.samplers.GridSampler.after_trial`` calls ``study.stop()`` once the grid is covered, which works only
inside ``study.optimize``: under ask/tell it raises RuntimeError from ``study.tell`` (after the trial is
stored), so a grid search crashed at its last point. Here the search stops asking instead
(``Ledger.may_start`` reads ``is_exhausted``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna


class GridSampler(optuna.samplers.GridSampler):
    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        """Nothing: the parent's only work here is the ``study.stop()`` that ask/tell cannot take."""
