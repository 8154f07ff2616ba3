"""A user's own LightningModule as the ``module`` group, in lightning-hydra-template's convention.

Its ``__init__`` receives ``optimizer`` (a partial of the ``optimizer`` group: ``optimizer(params=...)``
gives a ``torch.optim.Optimizer`` with the sweep's lr, betas and weight decay), ``scheduler`` (a partial:
``scheduler(optimizer=...)`` gives a torch LR scheduler; None with ``scheduler=constant``) and, where it
declares them, ``net`` or ``model`` (the ``model`` group), ``loss_fn`` (the ``loss`` group) and what the data
tells (``task``, ``n_classes``, ``input_shape``, ...). Everything else sweeplab does goes through Lightning's
Trainer and callbacks, of the Lightning package the module subclasses (``pytorch_lightning`` or
``lightning.pytorch``: a module of one is refused by the other's Trainer).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from lightning_modules import optim
from sweeps.support.errors import ConfigError
from sweeps.training.checks import BUILD_ERRORS

DEFAULT = "lightning_modules.module.LitModule"
PACKAGES = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}
MODEL_NAMES = ("net", "model")


def target(cfg: DictConfig) -> str:
    """The ``module`` group's class path (the default module where the config has no ``module`` group)."""
    node = cfg.get("module")
    return str(node.get("_target_", DEFAULT)) if node is not None else DEFAULT


def is_default(cfg: DictConfig) -> bool:
    return target(cfg) == DEFAULT


def module_class(cfg: DictConfig) -> type:
    """The user's module class; ConfigError naming the target when it does not import."""
    name = target(cfg)
    try:
        cls = get_class(name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's bad target
        cause = err.__cause__ or err
        raise ConfigError(f"module._target_={name} does not import: {str(cause).splitlines()[0]}") from err
    if lightning_package(cls) is None:
        raise ConfigError(
            f"module._target_={name} is not a LightningModule (of pytorch_lightning or lightning.pytorch)"
        )
    return cls


def lightning_package(cls: type) -> ModuleType | None:
    """``pytorch_lightning`` or ``lightning.pytorch``: whose LightningModule (or LightningDataModule)
    ``cls`` subclasses."""
    for base in cls.__mro__:
        root = base.__module__.split(".")[0]
        if base.__name__ in ("LightningModule", "LightningDataModule") and root in PACKAGES:
            return importlib.import_module(PACKAGES[root])
    return None


# Where an ``__init__``'s ``*args, **kwargs`` only pass through to a library base class (``nn.Module``,
# ``LightningModule``, ``object``): a class whose ``__init__`` comes from one of these declares nothing.
LIBRARIES = ("torch.", "pytorch_lightning.", "lightning.", "builtins")


def named(func: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """``func``'s parameters that a keyword can fill (not ``*args``, not ``**kwargs``)."""
    params = inspect.signature(func).parameters
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def takes_any(func: Callable[..., Any]) -> bool:
    """Whether ``func`` takes any keyword (``**kwargs``) of its own. A class without an ``__init__`` of its
    own (``class MeanLoss(nn.Module): def forward(...)``) has ``nn.Module``'s ``*args, **kwargs``: that
    accepts nothing, and would fail on the first keyword given."""
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return False
    if not isinstance(func, type):
        return True
    owner = next((c for c in func.__mro__ if "__init__" in vars(c)), object)
    return not owner.__module__.startswith(LIBRARIES)


def declared(cls: type) -> tuple[set[str], bool]:
    """The names ``cls.__init__`` takes, and whether it also takes ``**kwargs`` (``takes_any``)."""
    return set(named(cls.__init__)) - {"self"}, takes_any(cls)  # type: ignore[misc]


def wants_model(cls: type) -> bool:
    return bool(declared(cls)[0] & set(MODEL_NAMES))


def wants(cls: type, name: str) -> bool:
    return name in declared(cls)[0]


def scheduler_partial(
    schedule: Callable[..., dict[str, Any] | None] | None, max_epochs: int, steps: Callable[[], int]
) -> Callable[..., Any] | None:
    """``scheduler(optimizer=...)`` for the module, or None when there is no schedule or it is constant."""
    if schedule is None:
        return None
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    made = schedule(probe, max_epochs=max_epochs, steps_per_epoch=1)
    if made is None:
        return None
    per_epoch = steps() if made["interval"] == "step" else 1
    return functools.partial(
        optim.torch_scheduler, schedule=schedule, max_epochs=max_epochs, steps_per_epoch=per_epoch
    )


def create(cfg: DictConfig, cls: type, offered: dict[str, Any]) -> Any:
    """The user's module from ``cfg.module`` plus what it declares of ``offered`` (keys set in the config
    win). ``optimizer`` is required: the sweep's optimizer, lr and weight decay reach a module no other way.
    """
    names, var = declared(cls)
    if "optimizer" not in names and not var:
        raise ConfigError(
            f"module: {cls.__name__}.__init__ takes no `optimizer`; sweeplab passes the optimizer group as "
            "optimizer=<partial>: add an `optimizer` argument and build it in configure_optimizers with "
            "self.hparams.optimizer(params=self.parameters())"
        )
    given = set(cfg.module.keys())
    kwargs = {k: v for k, v in offered.items() if (k in names or (var and k in ("optimizer", "scheduler")))}
    kwargs = {k: v for k, v in kwargs.items() if k not in given}
    try:
        factory = instantiate(cfg.module, _partial_=True)
        return factory(**kwargs)
    except BUILD_ERRORS as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"module: {cls.__name__}: {text}") from err
