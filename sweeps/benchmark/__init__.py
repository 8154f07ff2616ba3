"""The optimizer benchmark protocol (``python -m sweeps.benchmark``)."""
