"""Every private API of Lightning and torch that this project relies on, in one place, each with a test
(``tests/test_compat.py``) that fails when the library changes what it relies on. Those of the libraries
``lightning_modules`` does not use are in ``sweeps/support/*_compat.py``.

- Lightning's optimizer step hooks: a manual-optimization step that calls the plain torch optimizer must
  still let Lightning count ``global_step`` (checkpoints, ``max_steps``), which it does in these two hooks.
- ``torch.utils._python_dispatch.TorchDispatchMode`` (``HostReads``): torch's documented way to see every
  aten call (a module named private, its class public in torch's docs); it counts host reads of tensors
  and lists the aten calls of a forward pass.
- ``torch._dynamo.utils.counters`` (``compiled_frames``): how many frames Dynamo has compiled in this process;
  torch has no public count, and a recompile is a frame compiled again.
- ``Trainer._signal_connector.received_sigterm`` (``hold_sigterm``): the flag by which Lightning stops
  itself after a SIGTERM at its next loop boundary, mid-validation included; a run checkpointed there
  resumes without that epoch's validation, so a single-process run holds the flag until the epoch ends.
- ``_current_fx_name`` (``FX_NAME``): Lightning assigns it about 20 times a step; on an ``nn.Module`` every
  assignment goes through ``nn.Module.__setattr__`` (about 1 us each), so ``LitModule`` sets it directly.

Checked against Lightning 2.6.6 (``pytorch_lightning``) and torch 2.13. The fast exit at the end of a
command (``atexit``'s private API) is the standard library's: ``sweeps.support.stdlib_compat``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

FX_NAME = "_current_fx_name"


def step_with_hooks(lightning_optimizer: Any, step: Any) -> None:
    """Run ``step()`` (the plain optimizer's step) between Lightning's before- and after-step hooks."""
    lightning_optimizer._on_before_step()
    step()
    lightning_optimizer._on_after_step()


def hold_sigterm(trainer: Any) -> bool:
    """Clear Lightning's "SIGTERM received" flag; True if it was set (Lightning would have stopped the run
    at its next loop boundary)."""
    connector = trainer._signal_connector
    held = bool(connector.received_sigterm)
    connector.received_sigterm = False
    return held


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values while active: ``.item()``, ``float()``, ``bool()`` and ``int()``
    of a tensor all call ``aten._local_scalar_dense``, which on an accelerator waits for its queue to drain
    (a device sync). ``devices`` lists the device of each read, in order; ``ops`` (with ``record_ops``)
    the name of every aten call."""

    def __init__(self, record_ops: bool = False) -> None:
        super().__init__()
        self.devices: list[str] = []
        self.ops: list[str] = []
        self.record_ops = record_ops

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.devices.append(str(args[0].device))
        if self.record_ops:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def compiled_frames() -> int:
    """Frames ``torch.compile`` compiled so far in this process (recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])
