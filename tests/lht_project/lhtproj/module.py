"""The template's ``MNISTLitModule``, shortened: ``net``, ``optimizer`` and ``scheduler`` partials from its
config, ``train/loss``, ``val/acc``, ``val/acc_best``, ``test/acc`` logged, the optimizer built in
``configure_optimizers`` from ``self.trainer.model.parameters()``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn


class BlobsLitModule(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Any, scheduler: Any, compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.criterion = nn.CrossEntropyLoss()
        self.val_acc_best = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), (logits.argmax(dim=1) == y).float().mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, acc = self.model_step(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        self.log("train/acc", acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self.model_step(batch)
        self.log("val/loss", loss, on_step=False, on_epoch=True)
        self.log("val/acc", acc, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        acc = float(self.trainer.callback_metrics.get("val/acc", 0.0))
        self.val_acc_best = max(self.val_acc_best, acc)
        self.log("val/acc_best", self.val_acc_best)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self.model_step(batch)
        self.log("test/loss", loss, on_step=False, on_epoch=True)
        self.log("test/acc", acc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.hparams.optimizer(params=self.trainer.model.parameters())
        if self.hparams.scheduler is not None:
            scheduler = self.hparams.scheduler(optimizer=optimizer)
            config = {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch", "frequency": 1}
            return {"optimizer": optimizer, "lr_scheduler": config}
        return {"optimizer": optimizer}
