"""MLflow models of runs (``tracking.log_model=true``), the sweep's best one registered
(``tracking.register_best=NAME``), and MLflow's system metrics sampler, in the tracking process.

``mlflow.pytorch.log_model`` logs into the active run of MLflow's fluent API, so the run is resumed for it
(``start_run(run_id=...)``); the run's final status is set afterwards as for any run. The requirements are
named (torch's version) rather than inferred: inference imports the model in a subprocess, seconds per run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def log_model(client: Any, run_id: str, path: str, example: Any, output: Any) -> str:
    """Log the network saved at ``path`` (``training.export``) as the run's model ``model``; its URI."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    net = torch.load(path, weights_only=False)  # sweeplab's file, written by the training process
    mlflow.set_tracking_uri(client.tracking_uri)
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id):
        warnings.simplefilter("ignore")  # e.g. pip's version check, pydantic's notes
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    Path(path).unlink(missing_ok=True)
    return info.model_uri


def register(client: Any, experiment_id: str, run_id: str, name: str, tags: dict[str, str]) -> str:
    """Register the model logged by run ``run_id`` as a new version of ``name`` (created if missing).
    The client's calls rather than ``mlflow.register_model``, which prints to the console."""
    from mlflow.exceptions import MlflowException

    found = client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1
    )
    if not found:
        raise ValueError(f"tracking.register_best={name}: run {run_id} logged no model")
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model = found[0]
    version = client.create_model_version(
        name, source=model.model_uri, run_id=run_id, tags=tags, model_id=model.model_id
    )
    return str(version.version)


def system_monitor(client: Any, run_id: str) -> Any:
    """``tracking.system_metrics=true``: MLflow's own sampler (what ``start_run(log_system_metrics=True)``
    starts) on run ``run_id``: CPU, memory, disk, network and NVIDIA GPUs as ``system/`` metrics, every 10 s
    unless ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` says otherwise. Machine-wide figures, so sampling
    from the tracking process measures the training beside it."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=client.tracking_uri)
    monitor.start()
    return monitor
