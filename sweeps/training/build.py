"""Turn a composed config into ready-to-train Lightning objects, or a ConfigError naming the bad key.

Components are Hydra ``_target_`` nodes, so a user can point ``model``, ``data`` or ``loss`` at their own
class. They receive what the data tells us (``task``, ``n_classes``, ``input_shape``, ...) only if their
signature asks for it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_modules.data import ArrayDataModule
from lightning_modules.module import LitModule
from sweeps.support.errors import ConfigError
from sweeps.training import finetune
from sweeps.training.checks import check_config, distributed

METRICS = {
    "classification": ("val_acc", "val_f1", "val_loss"),
    "lm": ("val_acc", "val_f1", "val_loss"),
    "regression": ("val_rmse", "val_mae", "val_r2", "val_loss"),
}
LOWER_IS_BETTER = ("loss", "rmse", "mae", "error")


@dataclass
class Built:
    datamodule: ArrayDataModule
    module: LitModule
    task: str
    metric: str
    mode: str
    lineage: dict[str, dict[str, str]] | None = None  # stage=finetune: where the weights came from


def _accepted(func: Callable[..., Any], context: dict[str, Any]) -> dict[str, Any]:
    """The part of ``context`` that ``func`` declares (all of it if it takes ``**kwargs``)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return context
    return {k: v for k, v in context.items() if k in params}


def _message(group: str, err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if text.startswith(group) else f"{group}: {text}"


def make(group: str, node: Any, **context: Any) -> Any:
    """Instantiate one config group, passing the context its target accepts; errors become ConfigError.

    A node marked ``_partial_`` (optimizers, schedules) comes back as the factory itself.
    """
    try:
        factory = instantiate(node, _partial_=True)
    except InstantiationException as err:
        raise ConfigError(f"{group}._target_: {str(err).splitlines()[0]}") from err
    if node.get("_partial_", False):
        return factory
    try:
        return factory(**_accepted(factory.func, context))
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        raise ConfigError(_message(group, err)) from err


def objective(cfg: DictConfig, task: str) -> tuple[str, str]:
    """The metric a run is scored by and its direction; ``auto`` picks by task."""
    metric = str(cfg.objective.metric)
    if metric == "auto":
        metric = "val_rmse" if task == "regression" else "val_acc"
    allowed = METRICS[task]
    if metric not in allowed:
        raise ConfigError(
            f"objective.metric={metric} is not produced by a {task} task; allowed: {', '.join(allowed)}"
        )
    mode = str(cfg.objective.mode)
    if mode == "auto":
        mode = "min" if any(word in metric for word in LOWER_IS_BETTER) else "max"
    return metric, mode


def build_datamodule(cfg: DictConfig) -> ArrayDataModule:
    dm = make("data", cfg.data)
    try:
        dm.setup("fit")
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(_message("data", err)) from err
    return dm


def build(cfg: DictConfig, dm: ArrayDataModule | None = None) -> Built:
    """Data, loss, model, optimizer and schedule for one run, checked against each other."""
    dm = dm or build_datamodule(cfg)
    task = dm.task
    metric, mode = objective(cfg, task)
    context = {
        "task": task,
        "n_classes": dm.n_classes,
        "class_counts": dm.class_counts,
        "input_shape": dm.input_shape,
        "vocab_size": dm.vocab_size,
    }
    loss = make("loss", cfg.loss, **context)
    out_features = getattr(loss, "out_features", dm.n_classes if task != "regression" else 1)
    model = make("model", cfg.model, out_features=out_features, **context)
    plan = finetune.prepare(cfg, model) if finetune.enabled(cfg) else None

    opt_node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert isinstance(opt_node, dict)
    if opt_node.pop("full_batch", False):
        dm.batch_size = None
    optimizer = make("optimizer", opt_node)
    sched_factory = make("scheduler", cfg.scheduler)
    _dry_run(optimizer, sched_factory, int(cfg.trainer.max_epochs))

    # DDP synchronises gradients in the backward pass that follows each forward through its wrapper, once
    # per Lightning batch: several optimizer steps per batch would skip the synchronisation.
    steps_per_batch = 1 if distributed(cfg.trainer) else int(cfg.trainer.get("steps_per_batch", 1))
    dm.steps_per_batch = steps_per_batch
    parts = dict(
        model=model,
        loss_fn=loss,
        optimizer=optimizer,
        scheduler=sched_factory,
        task=task,
        n_classes=dm.n_classes,
        l1=float(cfg.l1),
        grad_clip=float(cfg.grad_clip),
        steps_per_batch=steps_per_batch,
        log_keys=(metric,),
    )
    module = finetune.module(plan, **parts) if plan else LitModule(**parts)
    return Built(dm, module, task, metric, mode, plan.lineage if plan else None)


def _dry_run(optimizer: Callable[..., Any], scheduler: Callable[..., Any], max_epochs: int) -> None:
    """Build the optimizer and schedule once on a dummy parameter, so their bad values fail now."""
    try:
        opt = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ConfigError(_message("optimizer", err)) from err
    try:
        scheduler(opt, max_epochs=max_epochs, steps_per_epoch=1)
    except (ValueError, TypeError) as err:
        raise ConfigError(_message("scheduler", err)) from err


def validate(cfg: DictConfig, data_cache: dict[str, ArrayDataModule] | None = None) -> tuple[str, str]:
    """Everything ``build`` checks, with the model built on the meta device (no memory, no time).

    ``data_cache`` shares loaded data between the jobs of a sweep that use the same data config.
    Returns the objective (metric, mode).
    """
    check_config(cfg)
    key = OmegaConf.to_yaml(cfg.data)
    cache = data_cache if data_cache is not None else {}
    if key not in cache:
        cache[key] = build_datamodule(cfg)
    with torch.device("meta"):
        built = build(cfg, copy.copy(cache[key]))
    return built.metric, built.mode
