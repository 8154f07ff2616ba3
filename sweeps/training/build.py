"""Turn a composed config into ready-to-train Lightning objects, or a ConfigError naming the bad key.

Components are Hydra ``_target_`` nodes, so a user can point ``model``, ``data`` or ``loss`` at their own
class. They receive what the data tells us (``task``, ``n_classes``, ``input_shape``, ...) only if their
signature asks for it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_modules.data import ArrayDataModule
from lightning_modules.module import LitModule
from sweeps.support.errors import ConfigError
from sweeps.training import datainfo, finetune, hf, lora, usermodule
from sweeps.training.checks import BUILD_ERRORS, check_config, distributed
from sweeps.training.datainfo import DataInfo
from sweeps.training.reconcile import reconcile

METRICS = {
    "classification": ("val_acc", "val_f1", "val_mcc", "val_f1_binary", "val_loss"),
    "lm": ("val_acc", "val_f1", "val_loss"),
    "regression": ("val_rmse", "val_mae", "val_r2", "val_loss"),
}
LOWER_IS_BETTER = ("loss", "rmse", "mae", "error")


@dataclass
class Built:
    datamodule: Any  # a LightningDataModule; the bundled ones (ArrayDataModule) train from memory
    module: Any  # sweeplab's LitModule, or the user's own LightningModule (``sweeplab_module`` False)
    task: str | None
    metric: str
    mode: str
    lineage: dict[str, dict[str, str]] | None = None  # where the weights came from (finetune, model=hf)
    sweeplab_module: bool = True  # ``module`` is sweeplab's LitModule (``module=default``)


def _accepted(func: Callable[..., Any], context: dict[str, Any]) -> dict[str, Any]:
    """The part of ``context`` that ``func`` declares (all of it if it takes ``**kwargs``)."""
    if usermodule.takes_any(func):
        return context
    params = usermodule.named(func)
    return {k: v for k, v in context.items() if k in params}


def _tried(
    group: str, make: Callable[[], Any], errors: tuple[type[BaseException], ...] = BUILD_ERRORS
) -> Any:
    """``make()``; an error while building it is bad input: one line naming ``group``."""
    try:
        return make()
    except errors as err:
        raise ConfigError(_message(group, err)) from err


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
    return _tried(group, lambda: factory(**_accepted(factory.func, context)))


def objective(
    cfg: DictConfig, task: str | None, sweeplab_module: bool = True, n_classes: int | None = None
) -> tuple[str, str]:
    """The metric a run is scored by and its direction; ``auto`` picks by task. A user's module may log
    any name (``val/acc``): whether it does is checked after its first validation. ``val_f1_binary`` (the F1
    of class 1) is logged for two classes only."""
    metric = str(cfg.objective.metric)
    if metric == "auto" and not sweeplab_module:
        raise ConfigError(
            "objective.metric=auto: name a metric your module logs with self.log, "
            "e.g. objective.metric=val/acc objective.mode=max"
        )
    if sweeplab_module:
        assert task is not None
        if metric == "auto":
            metric = "val_rmse" if task == "regression" else "val_acc"
        allowed = METRICS[task]
        if metric not in allowed:
            raise ConfigError(
                f"objective.metric={metric} is not produced by a {task} task; allowed: {', '.join(allowed)}"
            )
        if metric == "val_f1_binary" and n_classes != 2:
            raise ConfigError(
                f"objective.metric=val_f1_binary needs two classes, the data has {n_classes}: "
                "use val_f1 (macro) or val_mcc"
            )
    mode = str(cfg.objective.mode)
    if mode == "auto":
        mode = "min" if any(word in metric for word in LOWER_IS_BETTER) else "max"
    return metric, mode


class Data(NamedTuple):
    """A set-up data module and what it tells about itself (``datainfo``)."""

    module: Any
    info: DataInfo


def build_datamodule(cfg: DictConfig) -> Data:
    node, given = datainfo.split_node(cfg.data)
    dm = make("data", node)
    _tried("data", lambda: dm.setup("fit"))
    datainfo.check_loaders(dm)
    return Data(dm, datainfo.describe(dm, given))


def _context(func: Callable[..., Any], info: DataInfo, group: str) -> dict[str, Any]:
    """What the data tells, for ``func``: the known values it declares; an unknown one it requires (no
    default) is an error saying how to give it."""
    params = usermodule.named(func)
    var = usermodule.takes_any(func)
    classes = info.get("task") in ("classification", "lm")
    context = {}
    for key in datainfo.KEYS:
        param = params.get(key)
        if info.get(key) is not None and (param is not None or var):
            context[key] = info.get(key)
            continue
        required = param is not None and param.default is inspect.Parameter.empty
        if info.get(key) is None and (required or (param is not None and key == "n_classes" and classes)):
            info.need(key, f"{group} ({getattr(func, '__qualname__', func)})")
    for key, aliases in datainfo.ALIASES.items():  # ``num_classes`` where it declares that name
        context.update({a: info.get(key) for a in aliases if a in params and info.get(key) is not None})
    return context


def _target_func(group: str, node: Any) -> Callable[..., Any]:
    """The class or function a component's ``_target_`` names; ConfigError naming it if it does not import."""
    try:
        return cast(Callable[..., Any], instantiate(node, _partial_=True).func)
    except InstantiationException as err:
        raise ConfigError(f"{group}._target_: {str(err).splitlines()[0]}") from err


def build(cfg: DictConfig, data: Data | None = None, tracker: Any = None) -> Built:
    """Data, loss, model, optimizer and schedule for one run, checked against each other; then the module
    (``module`` group: sweeplab's LitModule, or the user's own, given them as partials and objects)."""
    dm, info = data or build_datamodule(cfg)
    sweeplab_module = usermodule.is_default(cfg)
    user_cls = None if sweeplab_module else usermodule.module_class(cfg)
    task = info.need("task", "module=default") if sweeplab_module else info.get("task")
    if sweeplab_module and task == "classification":
        info.need("n_classes", "module=default")
    metric, mode = objective(cfg, task, sweeplab_module, info.get("n_classes"))
    loss = model = None  # a user's module gets them where it declares them and its config has none
    # (``reconcile`` removed the groups it does not use)
    if "loss" in cfg and (
        sweeplab_module or (user_cls is not None and usermodule.wants(user_cls, "loss_fn"))
    ):
        loss = make("loss", cfg.loss, **_context(_target_func("loss", cfg.loss), info, "loss"))
    if "model" in cfg and (sweeplab_module or (user_cls is not None and usermodule.wants_model(user_cls))):
        model_func = _target_func("model", cfg.model)
        context = _context(model_func, info, "model")
        if "out_features" in usermodule.named(model_func):
            default_out = 1 if task == "regression" else info.need("n_classes", "the model's out_features")
            context["out_features"] = getattr(loss, "out_features", default_out)
        model = make("model", cfg.model, **context)
    if finetune.enabled(cfg) and not sweeplab_module:
        raise ConfigError("stage=finetune: fine-tuning works with module=default only")
    plan = finetune.prepare(cfg, model, tracker) if finetune.enabled(cfg) and model is not None else None
    adapter = lora.prepare(cfg, model if sweeplab_module else None) if lora.enabled(cfg) else None

    optimizer = _optimizer(cfg, dm)
    sched_factory = make("scheduler", cfg.scheduler) if "scheduler" in cfg else None
    if optimizer is not None:
        _dry_run(optimizer, sched_factory, int(cfg.trainer.max_epochs))
    if user_cls is not None:
        _dry_run_own(cfg)

    if user_cls is not None:
        module = _user_module(cfg, user_cls, dm, info, (model, loss, optimizer, sched_factory))
        return Built(dm, module, task, metric, mode, None, sweeplab_module=False)
    # DDP syncs gradients in the backward of each forward through its wrapper: one step per Lightning batch.
    fast = isinstance(dm, ArrayDataModule) and not distributed(cfg.trainer)
    steps_per_batch = int(cfg.trainer.get("steps_per_batch", 1)) if fast else 1
    if isinstance(dm, ArrayDataModule):
        dm.steps_per_batch = steps_per_batch
    parts = dict(
        model=adapter.model if adapter else model,  # finetune.lora: the model with its adapters
        loss_fn=loss,
        optimizer=optimizer,
        scheduler=sched_factory,
        task=task,
        n_classes=info.get("n_classes") or 0,
        l1=float(cfg.l1),
        grad_clip=float(cfg.grad_clip),
        steps_per_batch=steps_per_batch,
        log_keys=(metric,),
        accumulate=int(cfg.trainer.get("accumulate_grad_batches", 1) or 1),
        compile_model=_compiled(cfg, dm),
    )
    module = finetune.module(plan, adapted=adapter is not None, **parts) if plan else LitModule(**parts)
    lineage = _with(plan.lineage if plan else None, hf.lineage(cfg) if hf.is_hf(cfg) else None)
    return Built(dm, module, task, metric, mode, _with(lineage, adapter.lineage if adapter else None))


def _optimizer(cfg: DictConfig, dm: Any) -> Any:
    """The ``optimizer`` group's factory; None where a user's module brings its own (``reconcile``)."""
    if "optimizer" not in cfg:
        return None
    opt_node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert isinstance(opt_node, dict)
    if opt_node.pop("full_batch", False):
        if not isinstance(dm, ArrayDataModule):
            raise ConfigError("optimizer: full-batch training needs a bundled data set (data=digits, ...)")
        dm.batch_size = None
    return make("optimizer", opt_node)


def _dry_run_own(cfg: DictConfig) -> None:
    """A user module's own optimizer and scheduler partials (its YAML's), built once on a dummy parameter
    so that their bad values fail before anything trains."""
    optimizer, scheduler = cfg.module.get("optimizer"), cfg.module.get("scheduler")
    if not _is_target(optimizer):
        return  # none, or something the module reads itself (a name)
    errors = (InstantiationException, *BUILD_ERRORS)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = _tried("module.optimizer", lambda: instantiate(optimizer)(params=[param]), errors)
    if _is_target(scheduler):
        _tried("module.scheduler", lambda: instantiate(scheduler)(optimizer=opt), errors)


def _is_target(node: Any) -> bool:
    return isinstance(node, DictConfig) and "_target_" in node


def _compiled(cfg: DictConfig, dm: Any) -> bool:
    """``trainer.compile``; compiled, the bundled data drop a smaller last batch and token data are not cut
    to each batch's longest text (either would compile another graph)."""
    compile_model = bool(cfg.trainer.get("compile", False))
    if compile_model and isinstance(dm, ArrayDataModule):
        dm.drop_last = True
        dm.padding = "max_length"  # token data: every batch as wide as the data, not its own longest text
    return compile_model


def _with(lineage: dict[str, dict[str, str]] | None, more: dict[str, dict[str, str]] | None) -> Any:
    """Two lineages (params and tags: the fine-tuning source's, the base model's for model=hf, the
    adapter's) as one; either may be None."""
    if lineage is None or more is None:
        return lineage or more
    return {kind: {**lineage.get(kind, {}), **more.get(kind, {})} for kind in ("params", "tags")}


def _user_module(cfg: DictConfig, cls: type, dm: Any, info: DataInfo, parts: tuple[Any, ...]) -> Any:
    """The user's module, offered the optimizer and schedule partials, the model and loss (``parts``), and
    the data's description; sweeplab's l1 penalty only where the module takes ``l1``."""
    model, loss, optimizer, schedule = parts
    if float(cfg.l1) and not usermodule.wants(cls, "l1"):
        raise ConfigError(f"l1={cfg.l1}: {cls.__name__} takes no `l1`; the L1 penalty needs module=default")

    def steps() -> int:
        loader = dm.train_dataloader()
        return len(loader) if hasattr(loader, "__len__") else 1

    sched = usermodule.scheduler_partial(schedule, int(cfg.trainer.max_epochs), steps)
    offered = {
        **{k: v for k, v in info.values.items() if v is not None},
        "optimizer": optimizer,
        "scheduler": sched,
        "net": model,
        "model": model,
        "loss_fn": loss,
        "l1": float(cfg.l1),
    }
    return usermodule.create(cfg, cls, offered)


def _dry_run(optimizer: Callable[..., Any], scheduler: Callable[..., Any] | None, max_epochs: int) -> None:
    """Build the optimizer and schedule once on a dummy parameter, so their bad values fail now."""
    opt = _tried("optimizer", lambda: optimizer([torch.nn.Parameter(torch.zeros(1))]))
    if scheduler is not None:  # (none: a user's module with its own, ``_dry_run_own``)
        _tried("scheduler", lambda: scheduler(opt, max_epochs=max_epochs, steps_per_epoch=1))


def validate(
    cfg: DictConfig,
    data_cache: dict[str, Data] | None = None,
    tracker: Any = None,
    overrides: Sequence[str] = (),
) -> tuple[str, str]:
    """Everything ``build`` checks, with the model built on the meta device (no memory, no time).

    ``data_cache`` shares loaded data between the jobs of a sweep that use the same data config;
    ``overrides`` are the job's command line (``reconcile``). Returns the objective (metric, mode).
    """
    check_config(cfg)
    cfg = reconcile(cfg, overrides)[0]
    key = OmegaConf.to_yaml(cfg.data)
    cache = data_cache if data_cache is not None else {}
    if key not in cache:
        cache[key] = build_datamodule(cfg)
    with torch.device("meta"):
        built = build(cfg, Data(copy.copy(cache[key].module), cache[key].info), tracker)
    return built.metric, built.mode
