"""``stage=lr_find``: the learning-rate range test (Smith 2017, "Cyclical Learning Rates"), the method
behind Lightning's ``Tuner.lr_find`` and fastai's ``lr_find``.

The lr grows exponentially from ``lr_find.min_lr`` to ``lr_find.max_lr`` over ``lr_find.steps`` optimizer
steps of the configured model, loss and optimizer; the smoothed training loss against the lr is the
curve, and the suggestion is the lr where that loss falls fastest (Lightning's rule). The test stops early
once the loss exceeds ``stop_factor`` times its lowest value.

Why not ``Tuner.lr_find`` itself: it ramps the lr through a scheduler it places in the trainer's scheduler
list, which Lightning steps only under automatic optimization; ``LitModule`` optimizes manually (for speed,
see its docstring), so the ramp would never move. The algorithm is short, so it is here, on the module's
own model, loss and optimizer factory.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State
from sweeps.training.build import Built

log = logging.getLogger("sweeplab")
SMOOTHING = 0.98  # exponential moving average of the loss, debiased (as Lightning and fastai do)
SKIP_BEGIN, SKIP_END = 10, 1  # the ends of the curve are too noisy to suggest from (Lightning's defaults)


@dataclass
class Curve:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float


def is_lr_find(cfg: DictConfig) -> bool:
    return str(cfg.get("stage", "train")) == "lr_find"


def _batches(loader: Any) -> Iterator[tuple[torch.Tensor, ...]]:
    """Mini-batches forever (a grouped in-memory loader yields lists of them)."""
    for item in itertools.cycle(loader):
        yield from item if isinstance(item, list) else [item]


def range_test(built: Built, min_lr: float, max_lr: float, steps: int, stop_factor: float = 4.0) -> Curve:
    """Train ``steps`` steps at exponentially growing lr; the smoothed loss curve and the suggested lr."""
    module = built.module
    built.datamodule.setup("fit")
    optimizer = module.optimizer_factory(module.parameter_groups())
    scales = [group["lr"] / optimizer.param_groups[0]["lr"] for group in optimizer.param_groups]
    module.train()
    lrs: list[float] = []
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    for step, (x, y) in zip(range(steps), _batches(built.datamodule.train_dataloader()), strict=False):
        lr = min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1))
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] = lr * scale
        loss = module.loss_fn(module.model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        lowest = min(lowest, smoothed)
        if smoothed > stop_factor * lowest:
            break
    return Curve(lrs, losses, suggest(lrs, losses))


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The lr of the steepest fall of the loss (NaN when the test stopped too early to tell)."""
    if len(losses) < SKIP_BEGIN + SKIP_END + 3:
        return math.nan
    middle = np.asarray(losses[SKIP_BEGIN:-SKIP_END])
    return float(lrs[SKIP_BEGIN + int(np.argmin(np.gradient(middle)))])


def draw(curve: Curve, optimizer: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve.lrs, curve.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if math.isfinite(curve.suggestion):
        ax.axvline(
            curve.suggestion, color="tab:red", linestyle="--", label=f"suggested {curve.suggestion:.3g}"
        )
        ax.legend()
    ax.set_title(f"learning-rate range test: {optimizer}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(cfg: DictConfig, built: Built, output_dir: Path | None, record: Any, prefix: str = "") -> Outcome:
    """The range test as a run: the curve as metrics (``lr_find_loss`` and ``lr_find_lr`` by step) and a
    PNG on the MLflow run, the suggestion as its ``suggested_lr`` metric and the outcome's value."""
    options = cfg.get("lr_find") or {}
    curve = range_test(
        built,
        float(options.get("min_lr", 1e-6)),
        float(options.get("max_lr", 10.0)),
        int(options.get("steps", 100)),
        float(options.get("stop_factor", 4.0)),
    )
    # a user module's own optimizer is under module.optimizer (``reconcile``)
    node = cfg.get("optimizer") or OmegaConf.select(cfg, "module.optimizer") or {}
    optimizer = str(node.get("name", node.get("_target_", "optimizer"))).rsplit(".", 1)[-1]
    if math.isfinite(curve.suggestion):
        log.info(
            "%slr_find: suggested lr %.3g for %s (%d steps)",
            prefix,
            curve.suggestion,
            optimizer,
            len(curve.lrs),
        )
    else:
        log.warning("%slr_find: the loss diverged within %d steps: no suggestion", prefix, len(curve.lrs))
    if record:
        for step, (lr, loss) in enumerate(zip(curve.lrs, curve.losses, strict=True)):
            record.session.log(record.handle, metrics={"lr_find_loss": loss, "lr_find_lr": lr}, step=step)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            picture = draw(curve, optimizer, output_dir / "lr_find.png")
            record.session.artifact(record.handle, str(picture))
    return Outcome(State.FINISHED, curve.suggestion, metric="suggested_lr", mode="min", best=curve.suggestion)
