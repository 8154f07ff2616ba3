"""Orchestration: compose configs, build and run trainings, drive sweeps, record them."""
