"""Orchestration: compose configs, build and run trainings, drive sweeps, record them."""

import lightning_modules  # noqa: F401 - its import keeps transformers out of torchmetrics' (deferred_imports)
