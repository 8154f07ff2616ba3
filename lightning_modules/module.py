"""The one LightningModule: a model, a loss, an optimizer factory and a schedule factory, nothing else.

Speed notes (see bench/overhead.py): on small models Lightning's per-step machinery costs as much as the
step itself, so this module
- uses manual optimization, with plain torch backward/step calls where Lightning's wrappers add nothing
  (single device, with the precision plugin's gradient scaler for 16-mixed),
- runs ``steps_per_batch`` optimizer steps per Lightning batch (Lightning's per-batch cost is ~0.2 ms),
- keeps per-epoch metrics in ``epoch_metrics`` from sums kept on the device, and passes only the
  monitored ones to ``self.log`` (~0.5 ms a call), never per step,
- reads no tensor on the host inside a step (each read waits for the GPU's queue to drain): the losses
  and the finite-loss check stay on the device and are read every ``log_every_n_steps`` and at epoch end,
- computes validation metrics once per epoch on the concatenated outputs,
- sets ``_current_fx_name`` (assigned ~20 times a step by Lightning) without ``nn.Module.__setattr__``
  (``compat``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import pytorch_lightning as pl
import torch
import torchmetrics.functional as tmf
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.optim import Optimizer

from lightning_modules.compat import FX_NAME, step_with_hooks

Batch = tuple[torch.Tensor, torch.Tensor]
OptimizerFactory = Callable[..., Optimizer]
ScheduleFactory = Callable[..., dict[str, Any] | None]


class NonFiniteLoss(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite loss ({value}) at step {step}")
        self.step = step
        self.value = value


def check_finite(window: list[torch.Tensor], first_step: int) -> None:
    """Raise ``NonFiniteLoss`` for the first non-finite loss among ``window`` (the losses of the steps from
    ``first_step`` on, still on the device): one host read for all of them."""
    if not window:
        return
    losses = torch.cat(window)
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        raise NonFiniteLoss(first_step + bad, float(losses[bad]))


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
        steps_per_batch: int = 1,
        log_keys: tuple[str, ...] | None = None,
        accumulate: int = 1,
        compile_model: bool = False,
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
        self.steps_per_batch = steps_per_batch
        self.log_keys = log_keys
        self.accumulate = max(1, int(accumulate))  # mini-batches whose gradients add up to one step
        self._pending = 0  # mini-batches backpropagated since the last optimizer step
        self.compile_model = compile_model  # torch.compile the training forward (evaluation stays eager)
        self._compiled: Any = None  # the compiled model, set at train start
        self.epoch_metrics: dict[str, float] = {}
        self._schedule: dict[str, Any] | None = None
        self._direct = False
        self._scaler: Any = None  # the precision plugin's gradient scaler (16-mixed), read at train start
        self.steps_done = 0
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._window: list[torch.Tensor] = []  # each batch's losses since the last finite-loss check
        self._window_start = 0  # the step of the window's first loss
        self._check_every = (
            0  # the trainer's ``log_every_n_steps`` (0: at the epoch's end only), at train start
        )
        self._reset_epoch()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == FX_NAME:  # Lightning's hook name, ~20 times a step: skip nn.Module's bookkeeping
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- optimisation ---
    def parameter_groups(self) -> Any:
        """What the optimizer factory receives: the parameters that train (LoRA: the adapters and the
        head, not the frozen base); subclasses return param groups (e.g. per-layer lr)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Optimizer:
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is not None and self.trainer.state.fn == TrainerFn.FITTING:
            epochs = max(1, int(self.trainer.max_epochs or 1))
            batches = math.ceil(self.trainer.estimated_stepping_batches / epochs)  # loads the train data
            loader: Any = self.trainer.train_dataloader
            if hasattr(loader, "steps") and len(loader) == batches:
                steps = loader.steps  # a whole epoch: the exact count, the last group may be short
            else:
                steps = batches * self.steps_per_batch  # limit_train_batches took whole groups
            steps = math.ceil(steps / self.accumulate)  # optimizer steps, not mini-batches
            self._schedule = self.scheduler_factory(optimizer, max_epochs=epochs, steps_per_epoch=steps)
        return optimizer

    def _penalty(self) -> torch.Tensor:
        """The L1 penalty on weight matrices (biases and norms excluded)."""
        weights = (p.abs().sum() for p in self.model.parameters() if p.dim() > 1)
        return cast(torch.Tensor, self.l1 * sum(weights))

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> None:
        """One optimizer step per mini-batch, or per ``accumulate`` mini-batches (their gradients add up);
        a list of mini-batches (see InMemoryBatches) is several. Nothing here reads a tensor on the host:
        the losses stay on the device until ``_check_window`` reads them, every ``log_every_n_steps``."""
        steps = batch if isinstance(batch, list) and not isinstance(batch[0], torch.Tensor) else [batch]
        lightning_opt = cast(LightningOptimizer, self.optimizers())
        opt: Any = lightning_opt.optimizer if self._direct else lightning_opt
        losses = []
        forward = self.model if self._compiled is None else self._compiled
        for x, y in steps:
            loss = self.loss_fn(forward(x), y)
            if self.l1:
                loss = loss + self._penalty()
            if self._pending == 0:
                opt.zero_grad(set_to_none=True)
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            if not self._direct:
                self.manual_backward(scaled)
            elif self._scaler is not None:
                self._scaler.scale(scaled).backward()
            else:
                scaled.backward()
            self._pending += 1
            if self._pending == self.accumulate:
                self._step(lightning_opt, opt)
            losses.append(loss.detach())
            self._samples += x.shape[0]
        chunk = torch.stack(losses)
        self._window.append(chunk)
        self._loss_sum += chunk.sum()
        self._batches += len(losses)
        self.steps_done += len(losses)
        if self._check_every > 0 and (batch_idx + 1) % self._check_every == 0:
            self._check_window()

    def _check_window(self) -> None:
        """Fail on a non-finite loss among the steps since the last check: one host read for all of them
        (a read waits for the device's queue to drain, so it is paid every ``log_every_n_steps``)."""
        window, self._window = self._window, []
        start, self._window_start = self._window_start, self.steps_done
        check_finite(window, start)

    def _step(self, lightning_opt: LightningOptimizer, opt: Any) -> None:
        """Clip, step the optimizer (``opt``: the torch one on the direct path, else Lightning's wrapper)
        and a per-step schedule, on the gradients gathered so far. No host read: the norm stays on the
        device, and a fused optimizer takes the gradient scaler's inf check as a tensor."""
        self._pending = 0
        if self._direct:
            scaler = self._scaler
            if self.grad_clip:
                if scaler is not None:
                    scaler.unscale_(opt)  # clip the true gradients; the scaler's step knows they are unscaled
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if scaler is not None:
                step_with_hooks(lightning_opt, lambda: (scaler.step(opt), scaler.update()))
            else:
                step_with_hooks(lightning_opt, opt.step)  # Lightning still counts global_step
        else:
            if self.grad_clip and self._scaler is None:
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            opt.step()  # with a gradient scaler, ``on_before_optimizer_step`` clips
        if self._schedule and self._schedule["interval"] == "step":
            self._schedule["scheduler"].step()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Lightning's path with a gradient scaler (DDP): clip here, after Lightning unscaled the gradients
        (a fused optimizer unscales inside its step, so it is unscaled here first)."""
        if self._direct or self._scaler is None or not self.grad_clip:
            return
        if optimizer.param_groups[0].get("fused"):
            self._scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)

    # -- per-epoch bookkeeping ---
    def _reset_epoch(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._window = []
        self._window_start = self.steps_done
        self._batches = 0
        self._samples = 0
        self._epoch_start = time.perf_counter()

    def on_train_start(self) -> None:
        # Lightning's optimizer and backward wrappers cost ~60 us a step; on one device the plain torch calls
        # (and the precision plugin's own gradient scaler for 16-mixed) do the same work.
        self._scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self._direct = isinstance(self.trainer.strategy, SingleDeviceStrategy)
        self._check_every = int(
            getattr(self.trainer, "log_every_n_steps", 50) or 0
        )  # Trainer(log_every_n_steps)
        if self.compile_model:  # not registered as a submodule: the checkpoint keeps the model's own names
            object.__setattr__(self, "_compiled", torch.compile(self.model, dynamic=False))

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()

    def on_validation_start(self) -> None:
        # Lightning validates before the epoch-end hooks: a diverged epoch fails here, before its validation
        # reports a score (to the pruner, say)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self._check_window()

    def on_train_epoch_end(self) -> None:
        if self._pending:  # the epoch's last, incomplete accumulation still makes a step
            lightning_opt = cast(LightningOptimizer, self.optimizers())
            self._step(lightning_opt, lightning_opt.optimizer if self._direct else lightning_opt)
        self._check_window()
        seconds = time.perf_counter() - self._epoch_start
        mean_loss = self._loss_sum / max(1, self._batches)
        if self.trainer.world_size > 1:  # every process's mean over its shard: the mean of all of them
            mean_loss = self.trainer.strategy.reduce(
                torch.as_tensor(mean_loss, device=self.device), reduce_op="mean"
            )
        mean_loss = float(mean_loss)
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(self.steps_done, mean_loss)
        self._publish(
            {
                "train_loss": mean_loss,
                "lr": float(cast(LightningOptimizer, self.optimizers()).param_groups[0]["lr"]),
                "epoch_time": seconds,
                "samples_per_sec": self._samples * self.trainer.world_size / max(seconds, 1e-9),
            }
        )
        if self._schedule is not None and self._schedule["interval"] == "epoch":
            self._schedule["scheduler"].step()

    def _publish(self, metrics: dict[str, float]) -> None:
        """Record an epoch's metrics in ``epoch_metrics``; pass ``log_keys`` on to ``self.log``.

        ``self.log`` costs about half a millisecond a call, so only what Lightning's own callbacks monitor
        (early stopping, checkpoints) goes through it; everything else reads ``epoch_metrics``.
        """
        self.epoch_metrics.update(metrics)
        for key in metrics.keys() if self.log_keys is None else self.log_keys:
            if key in metrics:
                self.log(key, metrics[key], on_epoch=True)

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
        self._publish(self._eval_metrics("val"))

    def on_test_epoch_end(self) -> None:
        self._publish(self._eval_metrics("test"))

    def _eval_metrics(self, prefix: str) -> dict[str, float]:
        """Metrics over the whole split (all ranks' shards under DDP), computed once per epoch."""
        outs = self._val_outputs
        self._val_outputs = []
        if not outs:
            return {}
        out = torch.cat([o for o, _, _ in outs])
        y = torch.cat([t for _, t, _ in outs])
        loss_sum = torch.stack([s for _, _, s in outs]).sum()
        if self.trainer.world_size > 1:
            out, y = self._gather(out), self._gather(y)
            loss_sum = cast(torch.Tensor, self.all_gather(loss_sum)).sum()
        metrics = task_metrics(out, y, self.task, loss_sum / len(y))
        return {f"{prefix}_{k}": float(v) for k, v in metrics.items()}

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's rows, in rank order: shards may differ by a row, and all_gather needs equal
        shapes, so each pads to the longest and the padding is dropped after the gather."""
        sizes = cast(torch.Tensor, self.all_gather(torch.tensor(len(t), device=t.device))).tolist()
        longest = max(sizes)
        padded = torch.cat([t, t.new_zeros((longest - len(t), *t.shape[1:]))]) if len(t) < longest else t
        gathered = cast(torch.Tensor, self.all_gather(padded))
        return torch.cat([gathered[r, :n] for r, n in enumerate(sizes)])


def predictions(out: torch.Tensor) -> torch.Tensor:
    """Class predictions: argmax of several logits, or the sign of a single logit."""
    if out.shape[-1] == 1:
        return (out.squeeze(-1) > 0).long()
    return out.argmax(dim=-1)


def task_metrics(
    out: torch.Tensor, y: torch.Tensor, task: str, loss: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Loss plus accuracy and macro F1 (classification, lm), Matthews correlation (classification) and the
    positive class's F1 (two classes), or RMSE, MAE and R^2 (regression)."""
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
    # -100 marks positions without a target (padding in language modelling), as in torch's cross-entropy
    metrics["acc"] = tmf.accuracy(pred, y, task="multiclass", num_classes=n, ignore_index=-100)
    metrics["f1"] = tmf.f1_score(
        pred, y, task="multiclass", num_classes=n, average="macro", ignore_index=-100
    )
    if task == "classification":  # (not over a language model's vocabulary: an n x n confusion matrix)
        metrics["mcc"] = tmf.matthews_corrcoef(pred, y, task="multiclass", num_classes=n)
        if n == 2:  # GLUE's F1 for MRPC and QQP: of the positive class (1)
            metrics["f1_binary"] = tmf.f1_score(pred, y, task="binary")
    return metrics
