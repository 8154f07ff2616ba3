"""Which Lightning trains a run: ``pytorch_lightning`` (sweeplab's LitModule, and user modules written
against it) or ``lightning.pytorch`` (the ``lightning`` package, which lightning-hydra-template and most
current code use). The two ship the same code, but a module of one is refused by the other's Trainer, and
each Trainer only recognises its own checkpoint and early-stopping callbacks; so the Trainer and those
callbacks come from the package the module subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Any

import pytorch_lightning as pl

from sweeps.training.build import Built
from sweeps.training.datainfo import has_hook
from sweeps.training.guards import FiniteLoss, ObjectiveLogged
from sweeps.training.usermodule import lightning_package


@dataclass(frozen=True)
class Lightning:
    package: ModuleType

    @classmethod
    def of(cls, built: Built) -> Lightning:
        return cls(lightning_package(type(built.module)) or pl)

    @property
    def callbacks(self) -> Any:
        return self.package.callbacks

    def plugins(self, built: Built) -> list[Any]:
        """Checkpoints written in a thread, off the training path (a user module's without its
        hyperparameters: ``plain_checkpoints``); under Slurm, stop signals and requeues are ours
        (``preemption``), not Lightning's."""
        name = self.package.__name__
        io = import_module(f"{name}.plugins.io")
        inner = None if built.sweeplab_module else plain_checkpoints(io.TorchCheckpointIO)()
        plugins: list[Any] = [io.AsyncCheckpointIO(inner)]
        slurm = import_module(f"{name}.plugins.environments").SLURMEnvironment
        if slurm.detect():
            plugins.append(slurm(auto_requeue=False))
        return plugins

    @staticmethod
    def guards(built: Built) -> list[Any]:
        """For a user's module, the checks sweeplab's module makes inside itself (``guards``)."""
        if built.sweeplab_module:
            return []
        return [ObjectiveLogged(built.metric, type(built.module).__name__), FiniteLoss()]

    def data(self, built: Built, stage: str = "fit") -> dict[str, Any]:
        """How the Trainer gets the data: the data module itself, or its loaders where it subclasses the
        other Lightning package's LightningDataModule (DataLoaders are plain torch; DDP still shards them)."""
        dm = built.datamodule
        if lightning_package(type(dm)) in (self.package, None):
            return {"datamodule": dm}
        if stage == "test":
            return {"dataloaders": dm.test_dataloader()}
        return {"train_dataloaders": dm.train_dataloader(), "val_dataloaders": dm.val_dataloader()}

    @staticmethod
    def can_test(built: Built) -> bool:
        """Test the best weights where the data has a test split and the module a test step."""
        steps = built.sweeplab_module or has_hook(built.module, "test_step")
        return steps and has_hook(built.datamodule, "test_dataloader")

    @staticmethod
    def metrics(built: Built, trainer: Any, before: dict[str, float] | None = None) -> dict[str, float]:
        """The run's last metrics: sweeplab's module keeps them all; a user's module logs them."""
        if built.sweeplab_module:
            return dict(built.module.epoch_metrics)
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        return {**(before or {}), **logged}


HYPERPARAMETERS = ("hyper_parameters", "hparams_name", "hparams_type", "datamodule_hyper_parameters")


def plain_checkpoints(torch_io: Any) -> Any:
    """``torch_io`` (the package's ``TorchCheckpointIO``) writing checkpoints without the saved
    hyperparameters, so that a user module's checkpoints load with ``weights_only=True`` like sweeplab's:
    ``save_hyperparameters`` keeps the optimizer and scheduler partials there, which only pickle reads back.
    The trial's module is built from its config, so nothing reads them. (A callback cannot do this: Lightning
    skips callbacks' ``on_save_checkpoint`` for weights-only checkpoints.)"""

    def save_checkpoint(
        self: Any, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:  # Lightning passes storage_options by name
        plain = {k: v for k, v in checkpoint.items() if k not in HYPERPARAMETERS}
        torch_io.save_checkpoint(self, plain, path, storage_options=storage_options)

    return type("PlainCheckpointIO", (torch_io,), {"save_checkpoint": save_checkpoint})
