"""MLflow dataset inputs of a run, from the description the training process sends
(``training.datasets``): ``mlflow.data.from_numpy`` with its name, digest and source, logged with the split
as context ("training", "validation"), so that the UI's Dataset column and filter show them. A Hugging Face
``datasets`` source (``data=hf``) is recorded as MLflow's ``HuggingFaceDatasetSource`` (path, configuration,
data files, split), as ``mlflow.data.from_huggingface`` records it.

The arrays stay in the training process: ``from_numpy`` gets zero-stride stand-ins of the same shape and
type (what its schema and profile read), and the digest computed there from the real bytes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

_built: dict[tuple[str, str, str], Any] = {}


def _hf_source(source: dict[str, Any]) -> Any:
    """A Hugging Face ``datasets`` source (``data=hf``): what ``load_dataset`` was given, and the split."""
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    return HuggingFaceDatasetSource(
        path=source["path"],
        config_name=source.get("config_name"),
        data_files=source.get("data_files"),
        split=source.get("split"),
        revision=source.get("revision"),
    )


def dataset_inputs(described: list[dict[str, Any]]) -> list[Any]:
    """``DatasetInput``s for ``MlflowClient.log_inputs`` (each dataset built once per process)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return [
        DatasetInput(_dataset(d), tags=[InputTag(MLFLOW_DATASET_CONTEXT, d["context"])]) for d in described
    ]


def _dataset(d: dict[str, Any]) -> Any:
    key = (d["name"], d["digest"], d["source"] + repr(d.get("hf_source")))
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
                features,
                targets=labels,
                source=_hf_source(d["hf_source"]) if "hf_source" in d else _source(d["source"]),
                name=d["name"],
                digest=d["digest"],
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
