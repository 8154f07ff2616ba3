"""What a user's own module trains with, when its YAML and sweeplab's groups both name a part of it.

A module in lightning-hydra-template's convention carries ``optimizer``, ``scheduler`` and ``net`` in its
own config; sweeplab has the ``optimizer``, ``lr``, ``weight_decay``, ``scheduler``, ``model`` and ``loss``
groups for the same things. The rule: what the command line sets or sweeps wins over the module's YAML;
the module's YAML wins over sweeplab's defaults; a part the module neither declares nor carries is not
built. Both sides on the command line for the same thing (``lr=`` and ``module.optimizer.lr=``) is one
line and exit 2, before anything trains.

The result is a config in which only what trains is present, so that the MLflow params (the resolved
config and the group choices) say what trained: ``lr`` is the learning rate the optimizer gets, a group
the module does not use is gone, and a part taken from the module's YAML is recorded as ``module``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, open_dict

from sweeps.support.errors import ConfigError
from sweeps.training import usermodule

FROM_MODULE = "module"  # the group choice recorded for a part taken from the module's own YAML
OPTIMIZER_AXES = ("lr", "weight_decay")  # sweeplab's top-level keys that reach any optimizer


def keys_of(overrides: Iterable[str]) -> set[str]:
    """The config keys the command line sets (``+key=``/``++key=`` included; ``~key`` deletions are not)."""
    keys = set()
    for override in overrides:
        if "=" not in override or override.startswith("~"):
            continue
        key = override.split("=", 1)[0].lstrip("+")
        keys.add(key.split("@", 1)[0])
    return keys


def _under(keys: set[str], prefix: str) -> list[str]:
    return sorted(k for k in keys if k == prefix or k.startswith(f"{prefix}."))


def _conflict(ours: list[str], theirs: list[str], what: str) -> None:
    if ours and theirs:
        raise ConfigError(
            f"{theirs[0]} and {ours[0]} on the command line both set the {what}: {theirs[0]} is the module's "
            f"own config, {ours[0]} sweeplab's; give only one of them"
        )


def reconcile(
    cfg: DictConfig, overrides: Sequence[str], choices: dict[str, Any] | None = None
) -> tuple[DictConfig, dict[str, Any]]:
    """``cfg`` (a copy) and ``choices`` as they will train (``overrides``: the job's command line)."""
    choices = dict(choices or {})
    keys = keys_of(overrides)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        _objective(cfg)
        moved = _module_in_model_group(cfg)
        if moved:
            cfg.module = cfg.model
            del cfg["model"]
            choices["module"] = choices.pop("model", FROM_MODULE)
            keys = {"module" + k[5:] if k == "model" or k.startswith("model.") else k for k in keys}
        if usermodule.is_default(cfg) or "module" not in cfg:
            return cfg, choices
        try:
            _parts(cfg, keys, choices)
        except ConfigError as err:  # name the keys as the command line wrote them
            raise (ConfigError(str(err).replace("module.", "model.")) if moved else err) from None
    return cfg, choices


def _parts(cfg: DictConfig, keys: set[str], choices: dict[str, Any]) -> None:
    cls = usermodule.module_class(cfg)
    _optimizer(cfg, keys, choices)
    _scheduler(cfg, keys, choices)
    _part(cfg, cls, keys, choices, "model", usermodule.MODEL_NAMES, "network")
    _part(cfg, cls, keys, choices, "loss", ("loss_fn",), "loss")


def _objective(cfg: DictConfig) -> None:
    """``optimized_metric`` (a search file written for Hydra's Optuna sweeper names the metric so) is the
    objective, unless ``objective.metric`` names one itself."""
    metric = cfg.get("optimized_metric")
    if metric and "objective" in cfg and str(cfg.objective.get("metric", "auto")) == "auto":
        cfg.objective.metric = str(metric)


def _module_in_model_group(cfg: DictConfig) -> bool:
    """Whether the ``model`` group holds a LightningModule's config (lightning-hydra-template keeps its
    module there: ``model=mnist``): it is then the module, with the default ``module`` group unused."""
    node = cfg.get("model")
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None or not usermodule.is_default(cfg):
        return False
    try:
        found = get_object(str(target))
    except Exception:  # noqa: BLE001 - an unimportable model is reported where it is built
        return False
    return isinstance(found, type) and usermodule.lightning_package(found) is not None


def _optimizer(cfg: DictConfig, keys: set[str], choices: dict[str, Any]) -> None:
    """The command line's ``optimizer`` group replaces the module's optimizer; its ``lr`` and
    ``weight_decay`` set the module's optimizer's; otherwise the module's YAML trains as written."""
    own = cfg.module.get("optimizer")
    if own is None:
        return
    group = _under(keys, "optimizer")
    _conflict(group, _under(keys, "module.optimizer"), "optimizer")
    for axis in OPTIMIZER_AXES:
        _conflict([axis] if axis in keys else [], _under(keys, f"module.optimizer.{axis}"), axis)
    node = own if isinstance(own, DictConfig) else {}  # or a name the module reads itself
    written = {axis: node.get(axis) for axis in OPTIMIZER_AXES}
    if group:  # sweeplab's group, with the module's values where the command line gives none
        for axis, value in written.items():
            if axis not in keys and value is not None and axis in cfg:
                cfg[axis] = value
        del cfg.module["optimizer"]
        return
    for axis, value in written.items():
        if axis in keys and axis in cfg and isinstance(own, DictConfig):
            cfg.module.optimizer[axis] = cfg[axis]
        elif value is not None:
            cfg[axis] = value  # the record's lr is the one the optimizer gets
        else:
            cfg.pop(axis, None)  # the optimizer's own default: ``trained.*`` records it
    cfg.pop("optimizer", None)
    choices["optimizer"] = FROM_MODULE


def _scheduler(cfg: DictConfig, keys: set[str], choices: dict[str, Any]) -> None:
    """The command line's ``scheduler`` group replaces the module's own; otherwise the module's trains."""
    if "scheduler" not in cfg.module:
        return
    group = _under(keys, "scheduler")
    _conflict(group, _under(keys, "module.scheduler"), "learning-rate schedule")
    if group:
        del cfg.module["scheduler"]
        return
    cfg.pop("scheduler", None)
    choices["scheduler"] = FROM_MODULE


def _part(
    cfg: DictConfig,
    cls: type,
    keys: set[str],
    choices: dict[str, Any],
    group: str,
    names: Sequence[str],
    what: str,
) -> None:
    """The ``model`` or ``loss`` group: given to the module where it declares one of ``names`` and its
    YAML carries none (or the command line picks the group); otherwise not built, nor recorded."""
    declared = [n for n in names if usermodule.wants(cls, n)]
    carried = [n for n in names if n in cfg.module and cfg.module[n] is not None]
    picked = _under(keys, group)
    _conflict(picked, [k for n in carried for k in _under(keys, f"module.{n}")], what)
    if picked and not declared:
        raise ConfigError(
            f"{picked[0]}: {cls.__name__}.__init__ takes no {' or '.join(names)}, so the {group} group "
            f"cannot reach it; drop {picked[0]} or add a `{names[0]}` argument to the module"
        )
    if picked:
        for name in carried:
            del cfg.module[name]
        return
    if carried or not declared:
        cfg.pop(group, None)
        choices.pop(group, None)
