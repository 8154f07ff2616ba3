"""The bottom layer: processes, secrets, errors, process-wide context, and the private APIs of Optuna and the
standard library (one ``*_compat`` module per library)."""
