"""``python -m sweeps.nightly``: see ``sweeps.nightly.cli``."""

from sweeps.nightly.cli import main
from sweeps.support import interrupt
from sweeps.support.stdlib_compat import exit_now

interrupt.install()  # Ctrl-C, SIGTERM, SIGHUP before or after the sweep: one line, exit 128 + n
try:
    code = main()
except interrupt.Interrupted as err:
    code = interrupt.leave(err)
exit_now(code)
