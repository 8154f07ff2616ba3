"""Components that tests point configs at with ``_target_``."""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_modules.models import MLP


class SelfKillingMLP(MLP):
    """An MLP whose process kills itself (SIGKILL): when built with ``die=True`` outside a dry run, or, under
    DDP, in the process of rank ``die_rank`` at its first training forward (with ``die_once=PATH``, only
    while PATH does not exist: the first trial of a search dies, the next ones train)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        die: bool = False,
        die_rank: int | None = None,
        die_once: str | None = None,
    ) -> None:
        if die and torch.empty(0).device.type != "meta":  # the sweeper's config check builds on meta
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(input_shape, out_features, hidden, activation, dropout, batch_norm)
        self.die_rank = die_rank
        self.die_once = die_once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and os.environ.get("LOCAL_RANK", "0") == str(self.die_rank):
            if self.die_once is not None:
                if os.path.exists(self.die_once):
                    return super().forward(x)
                open(self.die_once, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


class ThreadsMLP(MLP):
    """An MLP that writes its process's torch thread counts (intra-op, inter-op), the state of its garbage
    collector (on, and how many objects start-up froze) and how the process started (``spawned``: a fresh
    ``python -m sweeps.launch.workers``; else the command's own process or a fork of it; ``parent``: its
    parent's pid) to ``record/<pid>.json`` at its first training forward: what a trial trained with."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        record: str,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(input_shape, out_features, hidden, activation, dropout, batch_norm)
        self.record = record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = os.path.join(self.record, f"{os.getpid()}.json")
        if self.training and not os.path.exists(path):
            counts = {
                "intra": torch.get_num_threads(),
                "inter": torch.get_num_interop_threads(),
                "gc": gc.isenabled(),
                "frozen": gc.get_freeze_count(),
                "spawned": b"sweeps.launch.workers" in Path("/proc/self/cmdline").read_bytes(),
                "parent": os.getppid(),
            }
            with open(path, "w") as out:
                json.dump(counts, out)
        return super().forward(x)


class HoldingMLP(MLP):
    """An MLP whose N-th training (counted across processes, from 1) and every later one stop at their first
    training forward and wait to be killed, where ``SWEEPLAB_TEST_HOLD=DIR:N`` is set (DIR holds one file per
    training started): a test kills a command at a chosen point, however fast its trainings are."""

    HOLD = "SWEEPLAB_TEST_HOLD"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hold = os.environ.get(self.HOLD)
        if self.training and hold and not getattr(self, "_counted", False):
            self._counted = True
            folder, nth = hold.rsplit(":", 1)
            started = len(os.listdir(folder)) + 1
            open(os.path.join(folder, f"{started}-{os.getpid()}"), "w").close()
            while started >= int(nth):
                time.sleep(1)  # until killed
        return super().forward(x)
