"""``hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper``: sweeplab's sweeper under the name
that search files written for Hydra's Optuna sweeper give it (see the package's docstring)."""

from __future__ import annotations

from hydra_plugins.sweeplab_sweeper import SweeplabSweeper


class OptunaSweeper(SweeplabSweeper):
    """sweeplab's sweeper: that plugin's settings (``direction``, ``n_trials``, ``sampler``, ``params``,
    ...) are sweeplab's (``sweeps.sweeper.settings``)."""
