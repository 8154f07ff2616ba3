"""``python -m sweeps.services start|stop|status|url``: PostgreSQL and an MLflow server on 127.0.0.1 for
several workers on one study (see ``sweeps.launch.servers``)."""

import sys

from sweeps.launch.servers import main

if __name__ == "__main__":
    sys.exit(main())
