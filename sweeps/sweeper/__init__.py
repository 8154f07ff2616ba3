"""The Hydra sweeper: the grid, the Optuna loop, and its typed settings (``hydra_plugins`` holds only the
class Hydra requires)."""
