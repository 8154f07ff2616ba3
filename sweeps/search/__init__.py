"""Optuna search: the space from Hydra's sweep syntax, the persistent study, and the coordination of the
workers that share one study."""

DEFAULT_STORAGE = "mlruns/optuna.journal"  # here, not in ``study``: the settings read it without Optuna
