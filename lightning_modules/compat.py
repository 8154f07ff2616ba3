"""Every private API of a library that this project relies on, in one place, each with a test
(``tests/test_compat.py``) that fails when the library changes what it relies on.

- Lightning's optimizer step hooks: a manual-optimization step that calls the plain torch optimizer must
  still let Lightning count ``global_step`` (checkpoints, ``max_steps``), which it does in these two hooks.
- ``_current_fx_name`` (``FX_NAME``): Lightning assigns it about 20 times a step; on an ``nn.Module`` every
  assignment goes through ``nn.Module.__setattr__`` (about 1 us each), so ``LitModule`` sets it directly.
- The fast exit: with torch and Lightning loaded, tearing every module down takes 1.5 s here and does
  nothing useful at the end of a command; ``atexit``'s handlers still run (log files flush, children are
  reaped). The standard library has no public call that runs them.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any, NoReturn

FX_NAME = "_current_fx_name"


def step_with_hooks(lightning_optimizer: Any, step: Any) -> None:
    """Run ``step()`` (the plain optimizer's step) between Lightning's before- and after-step hooks."""
    lightning_optimizer._on_before_step()
    step()
    lightning_optimizer._on_after_step()


def exit_now(code: int | str | None) -> NoReturn:
    """Leave at once after the exit handlers (a string is printed to stderr and exits 1, as SystemExit)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
