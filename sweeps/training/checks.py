"""Static checks of a composed config: values that would train badly or not at all, caught before training."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeps.support.errors import ConfigError
from sweeps.training import hf, seeds

PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "bf16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
)
MODES = ("auto", "min", "max")
REDUCE = ("best", "last")
# What a component's constructor raises for a bad value (torch: RuntimeError for a negative size,
# ZeroDivisionError for a zero divisor): the config's fault, reported as one line naming the group.
BUILD_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, ArithmeticError, RuntimeError)
PROGRESS = ("epoch", "bar", "none")


def _number(cfg: DictConfig, key: str) -> float | None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r} must be a number")
    return float(value)


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value, naming the key and the allowed range."""
    rules: list[tuple[str, Any, str]] = [
        ("lr", lambda v: v > 0, "must be > 0"),
        ("weight_decay", lambda v: v >= 0, "must be >= 0"),
        ("l1", lambda v: v >= 0, "must be >= 0"),
        ("grad_clip", lambda v: v >= 0, "must be >= 0 (0 = off)"),
        (
            "early_stopping_patience",
            lambda v: v >= 0 and v == int(v),
            "must be a whole number >= 0 (0 = off)",
        ),
        ("optimizer.beta1", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("optimizer.beta2", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("optimizer.eps", lambda v: v > 0, "must be > 0"),
        ("optimizer.momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("optimizer.alpha", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("trainer.max_epochs", lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
        ("trainer.steps_per_batch", lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
        ("trainer.accumulate_grad_batches", lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
        ("trainer.num_threads", lambda v: v >= 1 and v == int(v), "must be a whole number >= 1 (or null)"),
        ("seed", lambda v: 0 <= v < 2**32 and v == int(v), "must be a whole number in [0, 2**32)"),
        ("data.label_fraction", lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("finetune.lr_scale", lambda v: v > 0, "must be > 0 (use finetune.freeze to stop blocks training)"),
        ("finetune.warmup_epochs", lambda v: v >= 0, "must be >= 0 (0 = off)"),
        ("finetune.unfreeze_every", lambda v: v >= 0 and v == int(v), "must be a whole number >= 0"),
    ]
    for key, ok, allowed in rules:
        value = _number(cfg, key)
        if value is not None and (not math.isfinite(value) or not ok(value)):
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} {allowed}")
    trainer = cfg.get("trainer", {})
    if "precision" in cfg and str(cfg.precision) not in PRECISIONS[:4]:
        raise ConfigError(f"precision={cfg.precision}: allowed are 32-true, bf16-mixed, 16-mixed")
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: allowed are {', '.join(PRECISIONS[:4])}")
    processes = world_size(trainer)
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if processes > 1 and isinstance(batch, int) and batch % processes:
        raise ConfigError(
            f"data.batch_size={batch} must be a multiple of the {processes} DDP processes "
            "(it is the global batch, split evenly between them)"
        )
    progress = str(trainer.get("progress", "epoch"))
    if progress not in PROGRESS:
        raise ConfigError(f"trainer.progress={progress}: allowed are {', '.join(PROGRESS)}")
    check_stage(cfg)
    if seeds.check(cfg) and distributed(trainer):
        raise ConfigError("repeats, seeds and cv train in one process: not with a DDP trainer")
    mode = str(cfg.objective.get("mode", "auto"))
    if mode not in MODES:
        raise ConfigError(f"objective.mode={mode}: allowed are {', '.join(MODES)}")
    reduce = str(cfg.objective.get("reduce", "best"))
    if reduce not in REDUCE:
        raise ConfigError(f"objective.reduce={reduce}: allowed are {', '.join(REDUCE)}")
    hf.check(cfg)  # model=hf: where its weights are, before torch loads and before any run opens
    _booleans(cfg, ("trainer.compile", "optimizer.fused"))


def _booleans(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """Switches take true or false only (a typo such as ``yes`` or ``1`` would not mean what it says)."""
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value}: allowed are true, false")


def world_size(trainer: Any) -> int:
    """How many processes a trainer config trains with (DDP: devices x nodes; 1 otherwise)."""
    if not distributed(trainer):
        return 1
    devices = trainer.get("devices", 1)
    count = len(devices) if isinstance(devices, list | tuple) or OmegaConf.is_list(devices) else devices
    count = int(count) if isinstance(count, int) and count > 0 else 1  # "auto"/-1: known only at run time
    return count * int(trainer.get("num_nodes", 1) or 1)


def distributed(trainer: Any) -> bool:
    """Several training processes (DDP): one optimizer step per Lightning batch, and in a sweep a process
    of its own per trial (Lightning's ``ddp`` re-executes the command line: see ``launch.ddp``)."""
    strategy = str(trainer.get("strategy", "auto") or "auto")
    devices = trainer.get("devices", 1)
    several = (isinstance(devices, int) and devices > 1) or (OmegaConf.is_list(devices) and len(devices) > 1)
    return strategy.startswith("ddp") or (strategy == "auto" and several)


STAGES = ("train", "finetune", "lr_find")


def check_stage(cfg: DictConfig) -> None:
    """``stage`` is one of ``STAGES``, fine-tuning says where its weights come from, and the range test's
    lr range and length make sense."""
    stage = str(cfg.get("stage", "train"))
    if stage not in STAGES:
        raise ConfigError(f"stage={stage}: allowed are {', '.join(STAGES)}")
    if stage == "finetune" and OmegaConf.select(cfg, "finetune.init_from", default=None) in (None, ""):
        raise ConfigError(
            "finetune.init_from is required with stage=finetune: a checkpoint file or an MLflow run id"
        )
    if stage == "lr_find":
        check_lr_find(cfg)


def check_lr_find(cfg: DictConfig) -> None:
    low, high = _number(cfg, "lr_find.min_lr") or 1e-6, _number(cfg, "lr_find.max_lr") or 10.0
    if not (0 < low < high < math.inf):
        raise ConfigError(f"lr_find.min_lr={low:g}, lr_find.max_lr={high:g}: need 0 < min_lr < max_lr")
    steps = OmegaConf.select(cfg, "lr_find.steps", default=100)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 20:
        raise ConfigError(f"lr_find.steps={steps} must be a whole number >= 20")
