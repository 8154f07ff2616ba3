"""Where the tiny model's step time goes: the README's per-step breakdown, each cost measured as an A/B.

- Lightning's fixed cost per batch: sweeplab's training (bench/overhead.py's tiny case) with
  ``trainer.steps_per_batch=1`` against the default 32 mini-batches per Lightning batch; the difference per
  step, times 32/31, is what one Lightning batch costs.
- Lightning's optimizer and backward wrappers: the same training with the module's plain ``backward()`` /
  ``step()`` switched off (``_direct = False``, as under 16-mixed or DDP), per step.
- ``self.log``: the same training with 10 extra ``log(..., on_epoch=True)`` calls per Lightning batch;
  the cost per call.
- A ``DataLoader`` collating sample by sample: one epoch of digits' training split in batches of 32 through
  ``DataLoader(TensorDataset)`` against slices of the in-memory tensors, per batch.

Rounds alternate between each pair's arms after a warm-up; medians are compared.

    .venv/bin/python bench/steps.py [--rounds 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import config, ours  # noqa: E402

from sweeps.training.build import build  # noqa: E402
from sweeps.training.fit import quiet_lightning  # noqa: E402

TINY = ["trainer.max_epochs=20"]
LOGS = 10  # extra self.log calls per Lightning batch


class Wrapped(pl.Callback):
    """Lightning's manual_backward and LightningOptimizer.step instead of the plain torch calls."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module._direct = False


class Logs(pl.Callback):
    """``LOGS`` extra ``self.log`` calls per Lightning batch; counts the batches."""

    batches = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        Logs.batches += 1
        value = torch.tensor(1.0)
        for i in range(LOGS):
            pl_module.log(f"bench_{i}", value, on_epoch=True, batch_size=32)


def per_step_us(overrides: list[str], *extra: pl.Callback) -> float:
    _, epochs, steps = ours([*TINY, *overrides], tuple(extra))
    return 1e6 * epochs / steps


def loader_us(collate: bool) -> float:
    """One epoch of digits' training split in batches of 32: per batch, in µs."""
    x, y = build(config(TINY)).datamodule.train_dataloader().tensors[:2]
    start = time.perf_counter()
    if collate:
        batches = sum(1 for _ in DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    else:
        order, batches = torch.randperm(len(x)), 0
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            x[idx], y[idx]
            batches += 1
    return 1e6 * (time.perf_counter() - start) / batches


def pairs() -> dict[str, tuple[Any, Any, Any]]:
    """Each cost: (arm A, arm B, how the difference of their medians becomes the figure)."""
    logs_per_step = {"steps": 0.0}

    def logged() -> float:
        Logs.batches = 0
        _, epochs, steps = ours(TINY, (Logs(),))
        logs_per_step["steps"] = steps / (Logs.batches * LOGS)
        return 1e6 * epochs / steps

    return {
        "Lightning's cost per batch": (
            lambda: per_step_us(["trainer.steps_per_batch=1"]),
            lambda: per_step_us([]),
            lambda d: d * 32 / 31,
        ),
        "Lightning's backward/step wrappers, per step": (
            lambda: per_step_us([], Wrapped()),
            lambda: per_step_us([]),
            lambda d: d,
        ),
        "self.log, per call": (logged, lambda: per_step_us([]), lambda d: d * logs_per_step["steps"]),
        "DataLoader collate against slicing, per batch": (
            lambda: loader_us(True),
            lambda: loader_us(False),
            lambda d: d,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    for name, (a, b, figure) in pairs().items():
        a(), b()  # warm-up
        arm_a, arm_b = [], []
        for _ in range(args.rounds):
            arm_a.append(a())
            arm_b.append(b())
        ma, mb = statistics.median(arm_a), statistics.median(arm_b)
        print(f"{name:48s} {figure(ma - mb):8.1f} µs   (medians {ma:.1f} against {mb:.1f} µs)")
        rounds = " ".join(f"{figure(x - y):.0f}" for x, y in zip(arm_a, arm_b, strict=True))
        print(f"{'':48s} (each round: {rounds} µs)", flush=True)


if __name__ == "__main__":
    main()
