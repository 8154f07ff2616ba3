"""What sweeplab needs to know about a data module (task, classes, input shape), from any LightningDataModule.

The bundled data modules declare it all after ``setup()``. A user's plain ``LightningDataModule`` may
declare some of it as attributes; what it does not declare comes from the config (``data.task``,
``data.n_classes``, ...), else is inferred from its training data where that is unambiguous (a batch of
``(x, y)`` tensors: integer targets are classes, floating ones regression). What stays unknown is an error,
but only where something needs it (the default module, the model builders, ``objective.metric=auto``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from sweeps.support.errors import ConfigError

KEYS = ("task", "n_classes", "input_shape", "vocab_size", "class_counts")
# Other names a data module may give a key by (lightning-hydra-template's data modules say ``num_classes``)
ALIASES = {"n_classes": ("num_classes",)}
TASKS = ("classification", "regression", "lm")
EXAMPLE = {"task": "classification", "n_classes": "10", "input_shape": "[1,8,8]", "vocab_size": "1000"}


@dataclass
class DataInfo:
    """The description of a data module; ``None`` where it is unknown. ``source`` names the class."""

    source: str
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def need(self, key: str, why: str) -> Any:
        """The value of ``key``, or a ConfigError that says what is missing and both ways to give it."""
        value = self.values.get(key)
        if value is None:
            example = EXAMPLE.get(key, "...")
            raise ConfigError(
                f"data.{key}: {self.source} does not declare `{key}` and it cannot be inferred from its "
                f"training batches; {why} needs it: give {self.source} a `{key}` attribute"
                + "".join(f" (or `{alias}`)" for alias in ALIASES.get(key, ()))
                + ", or put "
                f"`{key}: {example}` in its data config (+data.{key}={example} on the command line)"
            )
        return value


def split_node(node: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """The data config without the description keys its target does not take, and those keys' values."""
    target = node.get("_target_")
    given = {k: node[k] for k in KEYS if k in node and node[k] is not None}
    if not given or target is None:
        return node, given
    try:
        params = inspect.signature(get_class(str(target))).parameters
    except Exception:  # noqa: BLE001 - an unimportable target is reported by the instantiation itself
        return node, given
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return node, given
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    kept = OmegaConf.create({k: v for k, v in plain.items() if k not in given or k in params})
    return kept, given


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def describe(dm: Any, given: dict[str, Any]) -> DataInfo:
    """Declared attributes first, then the config's keys, then what the training data shows."""
    info = DataInfo(type(dm).__name__)
    for key in KEYS:
        value = getattr(dm, key, None)
        for alias in ALIASES.get(key, ()):
            value = getattr(dm, alias, None) if value in (None, 0, ()) else value
        if value in (None, 0, ()) and key in given:
            value = _plain(given[key])
        info.values[key] = value if value not in (0, ()) else None
    task = info.values["task"]
    if task is not None and task not in TASKS:
        raise ConfigError(f"data.task={task!r}: allowed are {', '.join(TASKS)}")
    if (
        task is None
        or info.values["input_shape"] is None
        or (task == "classification" and info.values["n_classes"] is None)
    ):
        _infer(dm, info)
    return info


def _infer(dm: Any, info: DataInfo) -> None:
    """Fill what the first training batch shows: the task from the targets' dtype, the input shape, and the
    number of classes where the whole label tensor is at hand (a ``TensorDataset``)."""
    try:
        loader = dm.train_dataloader()
        batch = next(iter(loader))
    except Exception:  # noqa: BLE001 - no batch to infer from: what is needed is asked for later
        return
    if not (isinstance(batch, list | tuple) and len(batch) == 2):
        return
    if not all(isinstance(t, torch.Tensor) for t in batch):
        return
    x, y = batch
    if info.values["input_shape"] is None:
        info.values["input_shape"] = tuple(x.shape[1:])
    if info.values["task"] is None:
        info.values["task"] = "regression" if y.is_floating_point() else "classification"
    if info.values["task"] == "classification" and info.values["n_classes"] is None:
        tensors = getattr(getattr(loader, "dataset", None), "tensors", None)
        labels = tensors[-1] if tensors else None
        if isinstance(labels, torch.Tensor) and not labels.is_floating_point():
            info.values["n_classes"] = int(labels.max()) + 1


def has_hook(obj: Any, name: str) -> bool:
    """Whether ``obj``'s class defines ``name`` itself rather than inheriting Lightning's default."""
    for cls in type(obj).__mro__:
        if name in vars(cls):
            return not cls.__module__.startswith(("pytorch_lightning.", "lightning.", "lightning_fabric."))
    return False


def check_loaders(dm: Any) -> None:
    """A data module must give training and validation data: the objective is measured on validation."""
    for hook in ("train_dataloader", "val_dataloader"):
        if not has_hook(dm, hook):
            raise ConfigError(
                f"data: {type(dm).__name__} has no {hook}(); sweeplab trains on train_dataloader() and "
                "scores each epoch on val_dataloader(): define both"
            )
