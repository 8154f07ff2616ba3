"""MLflow dataset inputs of a run, from the description the training process sends
(``training.datasets``): ``mlflow.data.from_numpy`` with its name, digest and source, logged with the split
as context ("training", "validation"), so that the UI's Dataset column and filter show them.

The arrays stay in the training process: ``from_numpy`` gets zero-stride stand-ins of the same shape and
type (what its schema and profile read), and the digest computed there from the real bytes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

_built: dict[tuple[str, str, str], Any] = {}


def dataset_inputs(described: list[dict[str, Any]]) -> list[Any]:
    """``DatasetInput``s for ``MlflowClient.log_inputs`` (each dataset built once per process)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return [
        DatasetInput(_dataset(d), tags=[InputTag(MLFLOW_DATASET_CONTEXT, d["context"])]) for d in described
    ]


def _dataset(d: dict[str, Any]) -> Any:
    key = (d["name"], d["digest"], d["source"])
    if key not in _built:
        import numpy as np
        from mlflow.data.numpy_dataset import from_numpy
        from mlflow.entities import Dataset

        (x_shape, x_type), (y_shape, y_type) = d["arrays"]  # features and targets
        features = np.broadcast_to(np.zeros((), dtype=x_type), x_shape)
        labels = np.broadcast_to(np.zeros((), dtype=y_type), y_shape)
        with warnings.catch_warnings():  # a path "can be interpreted in multiple ways": all of them local
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_numpy(
                features, targets=labels, source=_source(d["source"]), name=d["name"], digest=d["digest"]
            )
        _built[key] = Dataset(**dataset.to_dict())
    return _built[key]


def _source(source: str) -> Any:
    """A file the data came from (MLflow reads the path as a local source); otherwise the code that made
    it."""
    if Path(source).is_absolute() and Path(source).exists():
        return source
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource({"mlflow.source.name": source})
