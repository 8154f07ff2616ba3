"""Overnight sweeps: plans, the one-copy-per-plan lock, the morning report, schedules and the webhook."""
