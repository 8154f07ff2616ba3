"""Orchestration: compose configs, build and run trainings, drive sweeps, record them."""

from lightning_modules import deferred_imports

deferred_imports.install()
