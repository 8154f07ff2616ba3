"""MLflow: the tracking process and the typed interface to it, leaderboards, comparisons and pictures."""
