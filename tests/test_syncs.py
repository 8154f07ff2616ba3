"""No host read of a tensor inside a training step of sweeplab's module and callbacks: on a GPU each read
(``.item()``, ``float()``, ``bool()`` of a tensor) waits for the queue of kernels to drain. Counted on the
CPU with a ``TorchDispatchMode`` (``compat.HostReads``): reads are allowed only at logging points (every
``log_every_n_steps`` batches) and at the end of an epoch."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
from pytorch_lightning.plugins import MixedPrecision

from lightning_modules.compat import HostReads
from lightning_modules.module import NonFiniteLoss
from sweeps.training.build import build
from sweeps.training.callbacks import ObjectiveHistory, OptunaPruning, StopAtDeadline
from sweeps.training.fit import make_trainer
from tests.conftest import compose_cfg

EVERY = 4  # log_every_n_steps
BATCHES = 10  # per epoch: 9 and 10 are logging points or the epoch's end, the rest must read nothing
BASE = [
    "trainer.max_epochs=2",
    f"trainer.limit_train_batches={BATCHES}",
    "trainer.steps_per_batch=1",
    f"trainer.log_every_n_steps={EVERY}",
    "trainer.progress=epoch",
    "checkpoint=false",
    "model.hidden=[32]",
]


class ReadsPerBatch(pl.Callback):
    """The reads from each training batch's start to the next one's (hooks between batches included)."""

    def __init__(self, reads: HostReads) -> None:
        self.reads = reads
        self.marks: list[tuple[int, int]] = []  # (batch index, reads so far) at each batch's start

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self.marks.append((idx, len(self.reads.devices)))

    def inside_steps(self) -> dict[int, int]:
        """Reads per batch that is neither a logging point nor an epoch's last batch (number: position)."""
        counts = {}
        for n, ((idx, before), (_, after)) in enumerate(zip(self.marks, self.marks[1:], strict=False)):
            if (idx + 1) % EVERY and idx + 1 < BATCHES:
                counts[n] = after - before
        return counts


def fit_counting(overrides: list[str], precision_plugin: Any = None) -> ReadsPerBatch:
    cfg = compose_cfg([*BASE, *overrides])
    built = build(cfg)
    reads = HostReads()
    per_batch = ReadsPerBatch(reads)
    ours = [ObjectiveHistory(built.metric), OptunaPruning(None, built.metric), StopAtDeadline(4e9)]
    trainer = make_trainer(cfg, built, None, extra=[*ours, per_batch])
    if precision_plugin is not None:  # 16-mixed on the CPU: Lightning's own choice would be bf16-mixed
        trainer = pl.Trainer(
            accelerator="cpu",
            plugins=[precision_plugin],
            max_epochs=2,
            limit_train_batches=BATCHES,
            log_every_n_steps=EVERY,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=list(trainer.callbacks),  # ours and per_batch
        )
    with reads:
        trainer.fit(built.module, datamodule=built.datamodule)
    assert len(per_batch.marks) == 2 * BATCHES
    assert len(reads.devices) > 0  # the logging points and epoch ends do read: the counter counts
    return per_batch


OPTIMIZERS = ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_no_host_read_inside_a_step_with_each_optimizer(optimizer: str):
    counts = fit_counting([f"optimizer={optimizer}"]).inside_steps()
    assert len(counts) == 14 and set(counts.values()) == {0}, counts


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_no_host_read_inside_a_step_with_accumulation_clipping_and_precision(precision: str):
    options = ["trainer.accumulate_grad_batches=3", "grad_clip=0.5", "l1=1e-4", f"precision={precision}"]
    counts = fit_counting(options).inside_steps()
    assert set(counts.values()) == {0}, counts


@pytest.mark.parametrize(("optimizer", "fused"), [("adamw", True), ("sgd", True), ("sgd", False)])
def test_no_host_read_inside_a_step_with_the_fp16_gradient_scaler(optimizer: str, fused: bool):
    """16-mixed's GradScaler reads its inf check on the host unless the optimizer is fused (it then takes
    the check as a tensor): with ``optimizer.fused=false`` each step reads once, which the count sees.
    Lightning runs 16-mixed on the CPU as bf16-mixed, so the plugin is given."""
    plugin = MixedPrecision("16-mixed", "cpu")
    options = [f"optimizer={optimizer}", f"optimizer.fused={fused}", "trainer.accumulate_grad_batches=2"]
    per_batch = fit_counting([*options, "grad_clip=0.5"], plugin)
    assert plugin.scaler is not None and plugin.scaler.get_scale() > 0
    reads = set(per_batch.inside_steps().values())
    assert reads == ({0} if fused else {0, 1}), per_batch.inside_steps()  # 1 in each step that steps


def test_a_non_finite_loss_still_fails_the_run_within_the_window():
    cfg = compose_cfg([*BASE, "lr=1e12", "optimizer=sgd", "trainer.max_epochs=3"])
    built = build(cfg)
    trainer = make_trainer(cfg, built, None)
    with pytest.raises(NonFiniteLoss) as caught:
        trainer.fit(built.module, datamodule=built.datamodule)
    assert caught.value.step < built.module.steps_done <= caught.value.step + EVERY
    assert "non-finite loss" in str(caught.value)


def test_a_non_finite_epoch_fails_before_its_validation_reports_a_score():
    """With fewer batches than ``log_every_n_steps`` the check is the epoch's; Lightning validates before
    its epoch-end hooks, so the check runs when validation starts (a pruner would otherwise see the score)."""
    cfg = compose_cfg([*BASE, "lr=1e12", "optimizer=sgd", "trainer.log_every_n_steps=50"])
    built = build(cfg)
    with pytest.raises(NonFiniteLoss):
        make_trainer(cfg, built, None).fit(built.module, datamodule=built.datamodule)
    assert "val_acc" not in built.module.epoch_metrics
