"""``trainer.compile=true``: where Inductor keeps its caches, and how much a run compiled.

The compiled graph holds the model only (``LitModule`` compiles its training forward): the optimizer, its
lr and betas stay outside, so the trials of one sweep that differ only in them reuse the graph. In one
process Dynamo's own cache serves the next trial; across processes (workers, a resumed sweep) Inductor's
FX-graph and AOTAutograd caches on disk do, from one folder per sweep.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from lightning_modules.compat import compiled_frames

log = logging.getLogger("sweeplab")
CACHE = "compile_cache"


def cache_folder(cfg: DictConfig, output_dir: Path | None, in_sweep: bool) -> Path | None:
    """``trainer.compile_cache``, else the sweep's folder (a job's output folder is one of its
    sub-folders) or the run's own; None without an output folder (torch's default cache)."""
    given = cfg.trainer.get("compile_cache")
    if given:
        return Path(str(given))
    if output_dir is None:
        return None
    return (output_dir.parent if in_sweep else output_dir) / CACHE


def use_cache(cfg: DictConfig, output_dir: Path | None, in_sweep: bool) -> None:
    """Point Inductor's caches at ``cache_folder`` (read by torch at each compile, so per job)."""
    folder = cache_folder(cfg, output_dir, in_sweep) if cfg.trainer.get("compile", False) else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder.resolve())


class CompileWatch(pl.Callback):
    """The first step's time (compile included) and the graphs compiled, in the run's metrics; a graph
    compiled after the first step is a recompile (a changed shape or guard) and is logged."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.start = 0.0
        self.before = self.after_first = -1
        self.first_step = 0.0
        self.reported = 0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if self.before < 0:
            self.before, self.start = compiled_frames(), time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if self.after_first < 0:
            self.first_step = time.perf_counter() - self.start
            self.after_first = compiled_frames()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.after_first < 0:
            return
        recompiles = compiled_frames() - self.after_first
        if recompiles > self.reported:
            log.warning(
                "%storch.compile recompiled %d time(s) after the first step (a new shape or guard; "
                "TORCH_LOGS=recompiles says why)",
                self.prefix,
                recompiles,
            )
            self.reported = recompiles
        metrics = getattr(pl_module, "epoch_metrics", None)
        if isinstance(metrics, dict):
            metrics["compile_first_step_s"] = self.first_step
            metrics["compiled_graphs"] = float(self.after_first - self.before)
            metrics["recompiles"] = float(recompiles)
