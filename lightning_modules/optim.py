"""Optimizer and learning-rate schedule factories.

They exist so that configs can expose each hyperparameter as its own sweepable key (``beta1`` and ``beta2``
rather than a ``betas`` tuple) and so that every optimizer shares the one top-level ``lr``.
``fused`` (on by default) picks torch's fused kernel where it has one for the parameters' device: one kernel
launch for all parameters instead of several per tensor, no host read of the step count, and the fp16
gradient scaler hands its inf check to the kernel as a tensor instead of reading it on the host (a device
sync every step). torch 2.13 ships fused Adam, AdamW and SGD for CUDA and the CPU, fused Adagrad for the
CPU; elsewhere torch's default stays (foreach on CUDA, a loop on the CPU).
Schedule factories return Lightning's scheduler dict: ``{"scheduler": ..., "interval": "epoch" | "step"}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
Schedule = dict[str, Any]
FUSED_DEVICES = {"sgd": ("cuda", "cpu"), "adam": ("cuda", "cpu"), "adagrad": ("cpu",)}


def kernel(params: Params, fused: bool, optimizer: str) -> tuple[list[Any], dict[str, bool]]:
    """The parameters as a list (a generator is read once) and ``{"fused": True}`` where ``optimizer`` has
    a fused kernel for their device and dtype, else ``{}`` (torch's default)."""
    listed = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in params]
    tensors = [t for g in listed for t in (g["params"] if isinstance(g, dict) else [g])]
    devices = {t.device.type for t in tensors}
    ok = devices and devices <= set(FUSED_DEVICES[optimizer]) and all(t.is_floating_point() for t in tensors)
    return listed, {"fused": True} if fused and ok else {}


def sgd(
    params: Params,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    nesterov: bool = False,
    fused: bool = True,
) -> Optimizer:
    """SGD; with ``momentum`` > 0 it is the momentum method, optionally Nesterov's."""
    listed, kernels = kernel(params, fused, "sgd")
    return torch.optim.SGD(
        listed, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **kernels
    )


def adam(
    params: Params,
    lr: float,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = False,
    fused: bool = True,
) -> Optimizer:
    """Adam; with ``decoupled_weight_decay`` it is AdamW (otherwise L2 weight decay joins the gradient)."""
    listed, kernels = kernel(params, fused, "adam")
    return torch.optim.Adam(
        listed,
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        amsgrad=amsgrad,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        **kernels,
    )


def rmsprop(
    params: Params,
    lr: float,
    weight_decay: float = 0.0,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
) -> Optimizer:
    return torch.optim.RMSprop(
        params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay
    )


def adagrad(
    params: Params, lr: float, weight_decay: float = 0.0, eps: float = 1e-10, fused: bool = True
) -> Optimizer:
    listed, kernels = kernel(params, fused, "adagrad")
    return torch.optim.Adagrad(listed, lr=lr, eps=eps, weight_decay=weight_decay, **kernels)


def constant(optimizer: Optimizer, max_epochs: int, steps_per_epoch: int) -> Schedule | None:
    """No schedule."""
    return None


def step(
    optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, step_size: int = 10, gamma: float = 0.1
) -> Schedule:
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"scheduler.step_size={step_size} must be a whole number of epochs >= 1")
    return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma), "interval": "epoch"}


def cosine(optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, min_lr: float = 0.0) -> Schedule:
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs), eta_min=min_lr)
    return {"scheduler": sched, "interval": "epoch"}


def _warmup_then(
    optimizer: Optimizer,
    max_epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    min_lr: float,
    decay: Callable[[float], float],
) -> Schedule:
    """Linear warm-up from 0, then ``decay(progress)`` (1 at 0, 0 at 1) down to ``min_lr``; per step."""
    total = max(1, max_epochs * steps_per_epoch)
    warmup = min(total - 1, int(warmup_epochs * steps_per_epoch))
    base = optimizer.param_groups[0]["lr"]
    floor = min_lr / base if base > 0 else 0.0

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * decay(progress)

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def warmup_cosine(
    optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, warmup_epochs: float = 2, min_lr: float = 0.0
) -> Schedule:
    """Linear warm-up from 0, then cosine decay to ``min_lr``; stepped per batch."""
    cosine = lambda p: 0.5 * (1 + math.cos(math.pi * p))  # noqa: E731 - the decay's one line
    return _warmup_then(optimizer, max_epochs, steps_per_epoch, warmup_epochs, min_lr, cosine)


def warmup_linear(
    optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, warmup_epochs: float = 1, min_lr: float = 0.0
) -> Schedule:
    """Linear warm-up from 0, then linear decay to ``min_lr`` at the last step (BERT's schedule, as
    transformers' ``get_linear_schedule_with_warmup``); stepped per optimizer step."""
    if warmup_epochs < 0 or min_lr < 0:
        raise ValueError(f"scheduler: warmup_epochs={warmup_epochs} and min_lr={min_lr} must be >= 0")
    return _warmup_then(optimizer, max_epochs, steps_per_epoch, warmup_epochs, min_lr, lambda p: 1 - p)


def onecycle(
    optimizer: Optimizer,
    max_epochs: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One-cycle policy peaking at each parameter group's configured lr; stepped per batch."""
    peaks = [g["lr"] for g in optimizer.param_groups]
    sched: LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=max(2, max_epochs * steps_per_epoch),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=False,
    )
    return {"scheduler": sched, "interval": "step"}


def torch_scheduler(
    optimizer: Optimizer, schedule: Any, max_epochs: int, steps_per_epoch: int
) -> LRScheduler:
    """The torch scheduler alone of a schedule factory's dict: what a module in lightning-hydra-template's
    convention expects from ``scheduler(optimizer=...)`` (it builds Lightning's dict itself)."""
    made = schedule(optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)
    scheduler: LRScheduler = made["scheduler"]
    return scheduler
