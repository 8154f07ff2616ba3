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
from pytorch_lightning.callbacks import Callback

from lightning_modules.callbacks import EpochEnd, progress_line
from sweeps.outcome import Outcome, State
from sweeps.support import interrupt, startup_gc, threads
from sweeps.support.errors import ConfigError
from sweeps.training import preemption
from sweeps.training.build import Built, build
from sweeps.training.callbacks import ObjectiveHistory
from sweeps.training.checks import check_config
from sweeps.training.compiled import CompileWatch
from sweeps.training.keys import OUR_TRAINER_KEYS
from sweeps.training.lightning_kind import Lightning

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
        # On a Slurm login node (``srun`` on the PATH) Lightning suggests prepending ``srun`` for every
        # Trainer made outside an srun step: sweeplab runs Slurm jobs through submitit (hydra/launcher=slurm),
        # so the hint is wrong here, and it came twice per job.
        ".*The `srun` command is available on your system but is not used.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def make_trainer(
    cfg: DictConfig, built: Built, output_dir: Path | None, prefix: str = "", extra: Sequence[Callback] = ()
) -> Any:
    """A Trainer from ``cfg.trainer`` (any Trainer argument passes through), our callbacks, then ``extra``;
    of the Lightning package the module subclasses (``Lightning``)."""
    lit = Lightning.of(built)
    quiet_lightning()  # again: importing the ``lightning`` package (a user's module) resets its loggers
    options = {k: v for k, v in cfg.trainer.items() if k not in OUR_TRAINER_KEYS}
    if built.sweeplab_module:  # it accumulates gradients itself (Lightning's option needs automatic steps)
        options.pop("accumulate_grad_batches", None)
    progress = str(cfg.trainer.get("progress", "epoch"))
    callbacks: list[Any] = lit.guards(built)
    if progress == "epoch":
        callbacks.append(EpochEnd(progress_line(prefix, cfg.trainer.max_epochs)))
    elif progress == "bar":
        callbacks.append(lit.callbacks.TQDMProgressBar())
    if cfg.trainer.get("compile", False):
        callbacks.append(CompileWatch(prefix))
    if int(cfg.early_stopping_patience) > 0:
        callbacks.append(
            lit.callbacks.EarlyStopping(
                monitor=built.metric, mode=built.mode, patience=int(cfg.early_stopping_patience)
            )
        )
    if cfg.checkpoint and output_dir is not None:
        callbacks.append(
            lit.callbacks.ModelCheckpoint(
                dirpath=output_dir / "checkpoints",
                filename="best",
                monitor=built.metric,
                mode=built.mode,
                save_top_k=1,
                save_weights_only=True,
                enable_version_counter=False,
            )
        )
    if not built.sweeplab_module and float(cfg.grad_clip):  # sweeplab's module clips in its training step
        options["gradient_clip_val"] = float(cfg.grad_clip)
    return lit.package.Trainer(
        logger=False,
        plugins=lit.plugins(built),
        enable_progress_bar=progress == "bar",
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, lit.callbacks.ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir) if output_dir else None,
        callbacks=[*callbacks, *extra],
        **options,
    )


def prepare(cfg: DictConfig, tracker: Any = None) -> Built:
    """Check and build one configuration (seeded); bad input raises ConfigError before anything trains.
    ``tracker`` resolves an MLflow run id given as ``finetune.init_from``."""
    startup_gc.resume()  # imports done: what builds and trains a job runs with the collector back on
    quiet_lightning()
    check_config(cfg)
    chosen = cfg.trainer.get("num_threads")
    wanted = int(chosen) if chosen else threads.beside_tracking(tracker is not None)
    if wanted and wanted != torch.get_num_threads():
        if not chosen:  # said once: the count stays for the next job
            logging.getLogger("sweeplab").info("training: %s", threads.describe_beside_tracking(wanted))
        torch.set_num_threads(wanted)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    built = build(cfg, tracker=tracker)
    try:  # Lightning's own checks of the trainer config (trainer=gpu without a GPU, ...), before any run
        make_trainer(cfg, built, None)
    except Exception as err:  # noqa: BLE001 - whatever the Trainer refuses is the config's fault
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"trainer: {text}") from err
    return built


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
    stop = preemption.Preemption(output_dir) if output_dir is not None else None
    extra = [history, *callbacks, *([stop] if stop is not None else [])]
    trainer = make_trainer(cfg, built, output_dir, prefix, extra)
    lit = Lightning.of(built)
    resume = preemption.resume_path(output_dir)  # a stopped (preempted) run of this trial left it
    if resume:
        logging.getLogger("sweeplab").info("%sresuming from %s", prefix, resume)
    start = time.perf_counter()
    with interrupt.deferred(), preemption.taken_over(stop):  # Ctrl-C stops it at the next batch too
        trainer.fit(
            built.module,
            **lit.data(built),
            ckpt_path=resume,
            weights_only=True if resume else None,
        )
    seconds = time.perf_counter() - start

    ckpt = trainer.checkpoint_callback
    metrics = lit.metrics(built, trainer)
    best = history.best(built.mode)
    value = best if str(cfg.objective.get("reduce", "best")) == "best" else history.last()
    saved = isinstance(ckpt, lit.callbacks.ModelCheckpoint) and ckpt.best_model_path
    best_path = ckpt.best_model_path if saved else None
    if best_path and lit.can_test(built):  # test metrics of the best weights land in the metrics as test_*
        trainer.test(
            built.module,
            **lit.data(built, "test"),
            ckpt_path=best_path,
            weights_only=True,  # a user module's too: ``lightning_kind.plain_checkpoints``
            verbose=False,
        )
        metrics = lit.metrics(built, trainer, metrics)
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
