"""``python -m sweeps.compare [SWEEP_ID] [options]``: a sweep's leaderboard from the MLflow store (see
``sweeps.tracking.compare``)."""

import sys

from sweeps.tracking.compare import main

if __name__ == "__main__":
    sys.exit(main())
