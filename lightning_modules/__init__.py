"""Plain Lightning code: models, losses, data and the LightningModule. No Hydra, Optuna or MLflow here."""

from lightning_modules import deferred_imports

deferred_imports.install()
