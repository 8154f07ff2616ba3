"""The name Hydra's Optuna sweeper plugin (hydra-optuna-sweeper) is imported by, served by sweeplab's sweeper.

Search files written for that plugin (lightning-hydra-template's ``configs/hparams_search/*.yaml``) name
its class as ``hydra.sweeper._target_``; Hydra only instantiates a sweeper class found in the
``hydra_plugins`` namespace under that exact name. The plugin itself cannot be installed beside sweeplab:
every release pins an Optuna older than the 5.x sweeplab needs.
"""
