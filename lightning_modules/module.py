"""The one LightningModule: a model, a loss, an optimizer factory and a schedule factory, nothing else.

Speed notes (see bench/overhead.py): on small models Lightning's per-step machinery costs as much as the
step itself, so this module
- uses manual optimization (one optimizer call path instead of the closure of automatic optimization),
- logs once per epoch from sums kept on the device, never per step (``self.log`` costs ~0.4 ms a call),
- computes validation metrics once per epoch on the concatenated outputs,
- sets ``_current_fx_name`` (assigned ~20 times a step by Lightning) without ``nn.Module.__setattr__``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics.functional as tmf
from torch import nn
from torch.optim import Optimizer

OptimizerFactory = Callable[..., Optimizer]
ScheduleFactory = Callable[..., dict[str, Any] | None]


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite loss ({value}) at step {step}")
        self.step = step
        self.value = value


class LitModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: ScheduleFactory | None = None,
        task: str = "classification",
        n_classes: int = 0,
        l1: float = 0.0,
        grad_clip: float = 0.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.task = task
        self.n_classes = n_classes
        self.l1 = l1
        self.grad_clip = grad_clip
        self._schedule: dict[str, Any] | None = None
        self._check_each_step = True
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._reset_epoch()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- optimisation ---
    def parameter_groups(self) -> Any:
        """What the optimizer factory receives; subclasses return param groups (e.g. per-layer lr)."""
        return self.model.parameters()

    def configure_optimizers(self) -> Optimizer:
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is not None:
            batches = self.trainer.num_training_batches  # inf outside fitting (e.g. test)
            steps = max(1, int(batches)) if math.isfinite(batches) else 1
            self._schedule = self.scheduler_factory(
                optimizer, max_epochs=max(1, int(self.trainer.max_epochs or 1)), steps_per_epoch=steps
            )
        return optimizer

    def _penalty(self) -> torch.Tensor | float:
        if not self.l1:
            return 0.0
        return self.l1 * sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        loss = self.loss_fn(self.model(x), y) + self._penalty()
        if self._check_each_step and not torch.isfinite(loss):
            raise NonFiniteLoss(self.global_step, float(loss))
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        if self._schedule is not None and self._schedule["interval"] == "step":
            self._schedule["scheduler"].step()
        self._loss_sum += loss.detach()
        self._batches += 1
        self._samples += x.shape[0]

    # -- per-epoch bookkeeping ---
    def _reset_epoch(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._batches = 0
        self._samples = 0
        self._epoch_start = time.perf_counter()

    def on_train_start(self) -> None:
        self._check_each_step = self.device.type == "cpu"

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()

    def on_train_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._epoch_start
        mean_loss = self._loss_sum / max(1, self._batches)
        value = float(mean_loss)
        if not torch.isfinite(torch.tensor(value)):
            raise NonFiniteLoss(self.global_step, value)
        opt = self.optimizers()
        self.log_dict(
            {
                "train_loss": value,
                "lr": float(opt.param_groups[0]["lr"]),
                "epoch_time": seconds,
                "samples_per_sec": self._samples / max(seconds, 1e-9),
            },
            on_epoch=True,
            sync_dist=False,
        )
        if self._schedule is not None and self._schedule["interval"] == "epoch":
            self._schedule["scheduler"].step()

    # -- evaluation ---
    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        out = self.model(x)
        loss = self.loss_fn(out, y)
        self._val_outputs.append((out.detach().float(), y, loss.detach() * x.shape[0]))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self._eval_metrics("val"), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._eval_metrics("test"), sync_dist=True)

    def _eval_metrics(self, prefix: str) -> dict[str, float | torch.Tensor]:
        outs = self._val_outputs
        self._val_outputs = []
        if not outs:
            return {}
        out = torch.cat([o for o, _, _ in outs])
        y = torch.cat([t for _, t, _ in outs])
        loss = torch.stack([s for _, _, s in outs]).sum() / len(y)
        return {f"{prefix}_{k}": v for k, v in task_metrics(out, y, self.task, loss).items()}


def predictions(out: torch.Tensor) -> torch.Tensor:
    """Class predictions: argmax of several logits, or the sign of a single logit."""
    if out.shape[-1] == 1:
        return (out.squeeze(-1) > 0).long()
    return out.argmax(dim=-1)


def task_metrics(
    out: torch.Tensor, y: torch.Tensor, task: str, loss: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Loss plus accuracy and macro F1 (classification, lm) or RMSE, MAE and R^2 (regression)."""
    metrics = {"loss": loss}
    if task == "regression":
        pred = out.reshape(y.shape)
        metrics["rmse"] = tmf.mean_squared_error(pred, y).sqrt()
        metrics["mae"] = tmf.mean_absolute_error(pred, y)
        metrics["r2"] = tmf.r2_score(pred, y)
        return metrics
    pred = predictions(out).reshape(-1)
    y = y.reshape(-1)
    n = max(2, out.shape[-1], int(y.max()) + 1)
    metrics["acc"] = tmf.accuracy(pred, y, task="multiclass", num_classes=n)
    metrics["f1"] = tmf.f1_score(pred, y, task="multiclass", num_classes=n, average="macro")
    return metrics
