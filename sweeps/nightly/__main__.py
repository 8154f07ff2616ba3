"""``python -m sweeps.nightly``: see ``sweeps.nightly.cli``."""

from sweeps.nightly.cli import main
from sweeps.support.stdlib_compat import exit_now

exit_now(main())
