"""A LightningModule in lightning-hydra-template's style: it takes ``net``, ``optimizer`` and ``scheduler``
(partials: the optimizer and scheduler are built in ``configure_optimizers``) and logs ``train/loss``,
``val/loss`` and ``val/acc``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class ClassifierSteps:
    """The steps, shared by the ``lightning`` and the ``pytorch_lightning`` variant of the module."""

    def __init__(self, net: nn.Module, optimizer: Any, scheduler: Any = None, compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> Any:
        hparams = self.hparams
        optimizer = hparams.optimizer(params=self.parameters())
        if hparams.scheduler is None:
            return {"optimizer": optimizer}
        scheduler = hparams.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Classifier(ClassifierSteps, L.LightningModule):
    """The module, on the ``lightning`` package (as lightning-hydra-template writes it)."""
