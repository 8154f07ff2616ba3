"""Each private API in ``lightning_modules.compat``, against the installed libraries: these fail when a
library changes what the project relies on."""

from __future__ import annotations

import subprocess
import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer

from lightning_modules import compat


def test_lightning_counts_global_step_in_the_optimizer_step_hooks():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    wrapped = LightningOptimizer(optimizer)
    calls: list[str] = []
    wrapped._on_before_step = lambda: calls.append("before")  # type: ignore[method-assign]
    wrapped._on_after_step = lambda: calls.append("after")  # type: ignore[method-assign]
    compat.step_with_hooks(wrapped, lambda: calls.append("step"))
    assert calls == ["before", "step", "after"]
    assert callable(LightningOptimizer(optimizer)._on_before_step)  # Lightning's own, still there
    assert callable(LightningOptimizer(optimizer)._on_after_step)


def test_lightning_names_the_running_hook_in_current_fx_name(tmp_path):
    seen: list[str | None] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            seen.append(self.__dict__.get(compat.FX_NAME))
            return self.layer(batch).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.ones(2, 1))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(Module(), data)
    assert seen == ["training_step", "training_step"]  # the attribute Lightning names the running hook in


def test_the_fast_exit_runs_exit_handlers_and_keeps_the_code():
    code = (
        "import atexit; from lightning_modules.compat import exit_now\n"
        "atexit.register(lambda: print('handlers ran', flush=True))\n"
        "exit_now(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout == "handlers ran\n"
    words = subprocess.run(
        [sys.executable, "-c", "from lightning_modules.compat import exit_now; exit_now('error: no')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert words.returncode == 1 and words.stderr == "error: no\n"
