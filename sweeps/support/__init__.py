"""The bottom layer: processes, secrets, errors, process-wide context and the one module of private APIs."""
