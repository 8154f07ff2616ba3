"""Plain Lightning code: models, losses, data and the LightningModule. No Hydra, Optuna or MLflow here."""
