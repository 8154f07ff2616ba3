"""Train one configuration: the Lightning Trainer with our callbacks, and the run's ``Outcome``."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.plugins.io import AsyncCheckpointIO

from lightning_modules.callbacks import EpochEnd, progress_line
from sweeps.outcome import Outcome, State
from sweeps.training import preemption
from sweeps.training.build import Built, build
from sweeps.training.callbacks import ObjectiveHistory
from sweeps.training.checks import check_config

OUR_TRAINER_KEYS = ("num_threads", "progress", "steps_per_batch")
NOISY_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


def quiet_lightning() -> None:
    """Drop Lightning's start-up banners and known-harmless warnings; real warnings still show."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*all_gather is deprecated.*",  # torch's note on a call inside Lightning
        ".*sync_dist=True.*",  # our epoch metrics are gathered from every process already
    ):
        warnings.filterwarnings("ignore", message=pattern)


def make_trainer(
    cfg: DictConfig, built: Built, output_dir: Path | None, prefix: str = "", extra: Sequence[Callback] = ()
) -> pl.Trainer:
    """A Trainer from ``cfg.trainer`` (any Trainer argument passes through), our callbacks, then ``extra``."""
    options = {k: v for k, v in cfg.trainer.items() if k not in OUR_TRAINER_KEYS}
    progress = str(cfg.trainer.get("progress", "epoch"))
    callbacks: list[Callback] = []
    if progress == "epoch":
        callbacks.append(EpochEnd(progress_line(prefix, cfg.trainer.max_epochs)))
    elif progress == "bar":
        callbacks.append(TQDMProgressBar())
    if int(cfg.early_stopping_patience) > 0:
        callbacks.append(
            EarlyStopping(monitor=built.metric, mode=built.mode, patience=int(cfg.early_stopping_patience))
        )
    if cfg.checkpoint and output_dir is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=output_dir / "checkpoints",
                filename="best",
                monitor=built.metric,
                mode=built.mode,
                save_top_k=1,
                save_weights_only=True,
                enable_version_counter=False,
            )
        )
    plugins: list[Any] = [AsyncCheckpointIO()]  # checkpoints are written in a thread, off the training path
    if SLURMEnvironment.detect():  # a Slurm job: stop signals and requeues are ours (``preemption``)
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        logger=False,
        plugins=plugins,
        enable_progress_bar=progress == "bar",
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir) if output_dir else None,
        callbacks=[*callbacks, *extra],
        **options,
    )


def prepare(cfg: DictConfig) -> Built:
    """Check and build one configuration (seeded); bad input raises ConfigError before anything trains."""
    quiet_lightning()
    check_config(cfg)
    if cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    return build(cfg)


def fit(
    cfg: DictConfig,
    built: Built,
    output_dir: Path | None = None,
    prefix: str = "",
    callbacks: Sequence[Callback] = (),
) -> Outcome:
    """Train a prepared run. Its outcome's ``value`` is the objective of its best epoch or of its last one
    (``objective.reduce``), read from the per-epoch history, with or without checkpoints."""
    history = ObjectiveHistory(built.metric)
    extra = [history, *callbacks, *([preemption.Preemption(output_dir)] if output_dir is not None else [])]
    trainer = make_trainer(cfg, built, output_dir, prefix, extra)
    resume = preemption.resume_path(output_dir)  # a stopped (preempted) run of this trial left it
    if resume:
        logging.getLogger("sweeplab").info("%sresuming from %s", prefix, resume)
    start = time.perf_counter()
    trainer.fit(
        built.module,
        datamodule=built.datamodule,
        ckpt_path=resume,
        weights_only=True if resume else None,
    )
    seconds = time.perf_counter() - start

    ckpt = trainer.checkpoint_callback
    metrics = built.module.epoch_metrics
    best = history.best(built.mode)
    value = best if str(cfg.objective.get("reduce", "best")) == "best" else history.last()
    best_path = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path else None
    if best_path:  # test metrics of the best weights land in epoch_metrics as test_*
        trainer.test(
            built.module, datamodule=built.datamodule, ckpt_path=best_path, weights_only=True, verbose=False
        )
    return Outcome(
        State.FINISHED,
        value,
        best=best,
        metric=built.metric,
        mode=built.mode,
        epochs=int(trainer.current_epoch),
        seconds=seconds,
        metrics=dict(metrics),
        checkpoint=best_path,
    )


def train(cfg: DictConfig, output_dir: Path | None = None, prefix: str = "") -> Outcome:
    """Check, build and fit one configuration (no tracking): the plain function for tests and scripts."""
    return fit(cfg, prepare(cfg), output_dir, prefix)
