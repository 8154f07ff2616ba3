"""The bottom layer: processes, secrets, errors, the stop file that moves a deadline, and the private
APIs of Optuna and the standard library (one ``*_compat`` module per library)."""
