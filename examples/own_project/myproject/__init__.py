"""A user's own project: a data module, a network, a loss and a LightningModule, nothing sweeplab-specific."""
