"""``python -m sweeps.nightly``: see ``sweeps.nightly.cli``."""

from lightning_modules.compat import exit_now
from sweeps.nightly.cli import main

exit_now(main())
