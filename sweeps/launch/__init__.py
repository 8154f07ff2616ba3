"""Where trials run: this process, worker processes, DDP process groups, submitit jobs; GPUs for each;
and the local services (PostgreSQL, an MLflow server) that several workers share."""
