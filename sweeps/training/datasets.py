"""What a run trained and was validated on, described for MLflow's dataset inputs (the UI's Dataset column
and filter): name, source, a digest of the arrays actually loaded, and their shapes and types; for a
Hugging Face ``datasets`` source (``data=hf``) also its path, configuration, data files and split.

Only this description crosses to the tracking process (``tracking.inputs`` builds the MLflow datasets from
it), never the arrays. The digest hashes every byte of the splits once per process and data config, so the
jobs of a sweep on the same data pay for it once, and two runs on different data get different digests.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

CONTEXTS = {"train": "training", "val": "validation"}
_described: dict[str, list[dict[str, Any]]] = {}


def describe(dm: Any, key: str) -> list[dict[str, Any]]:
    """The training and validation splits of a set-up datamodule (``key``: its resolved data config); none
    for a datamodule that keeps no ``splits`` of arrays."""
    if not isinstance(getattr(dm, "splits", None), dict):
        return []
    if key not in _described:
        name, source = dataset_name(dm), dataset_source(dm)
        _described[key] = [
            {
                "name": name,
                "source": source,
                "context": context,
                "digest": digest(dm.splits[split]),
                "arrays": [(tuple(t.shape), str(t.numpy().dtype)) for t in dm.splits[split]],
                **({"hf_source": dm.hf_sources[split]} if split in getattr(dm, "hf_sources", {}) else {}),
            }
            for split, context in CONTEXTS.items()
            if split in dm.splits
        ]
    return _described[key]


def digest(tensors: Any) -> str:
    """A short hash of the arrays' shapes, types and bytes."""
    h = hashlib.sha256()
    for tensor in tensors:
        array = tensor.contiguous().numpy()
        h.update(f"{array.shape}{array.dtype}".encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()[:12]


def dataset_name(dm: Any) -> str:
    """The module's ``dataset_name``, else a table's file name, else its class (``DigitsDataModule``:
    ``digits``)."""
    if getattr(dm, "dataset_name", None):
        return str(dm.dataset_name)
    if getattr(dm, "path", None):
        return str(dm.path.name if hasattr(dm.path, "name") else dm.path)
    stem = type(dm).__name__.removesuffix("DataModule") or type(dm).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()


def dataset_source(dm: Any) -> str:
    """The module's ``dataset_source``, else a table's file, else the class that loads it."""
    if getattr(dm, "dataset_source", None):
        return str(dm.dataset_source)
    if getattr(dm, "path", None):
        return str(dm.path.resolve()) if hasattr(dm.path, "resolve") else str(dm.path)
    return f"{type(dm).__module__}.{type(dm).__qualname__}"
