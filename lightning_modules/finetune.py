"""Fine-tuning a trained network, in plain torch and Lightning: read weights safely, load what fits, freeze
blocks, give the backbone a scaled learning rate, unfreeze gradually and warm up.

A model's *blocks* are its parameter-holding units in definition order, named by the parameter names up to
the first index (``net.0``, ``encoder.layers.1``) or, without an index, the first name (``embed``, ``pos``,
``head``). "Freeze the first N blocks" and the default head (the last block) are read from that list, so it
works for any ``nn.Module`` without the model declaring anything.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from lightning_modules.module import LitModule

State = dict[str, torch.Tensor]
LIGHTNING_PREFIX = "model."  # LitModule keeps the network as ``self.model``


def read_weights(path: str | Path) -> State:
    """The tensors of a checkpoint file: a Lightning checkpoint (its ``state_dict``) or a plain state dict.

    Loaded with ``weights_only=True``: a file holding any other pickled object is refused, never run.
    Raises ValueError with one line saying why the file cannot serve.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"refused: {path} is not a plain weights file (it holds pickled objects, which could run code)"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"cannot read {path} as a torch checkpoint ({str(err).splitlines()[0]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    if all(str(k).startswith(LIGHTNING_PREFIX) for k in obj):
        obj = {str(k)[len(LIGHTNING_PREFIX) :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


@dataclass
class Match:
    """How a checkpoint's tensors line up with a model's state, by name and shape."""

    loaded: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)  # matched, but re-initialised on request (a new head)
    fraction: float = 0.0  # share of the model's parameter values the checkpoint has (same name and shape)

    def describe(self) -> list[str]:
        """Lines for the log: what was re-initialised and why."""
        lines = []
        if self.mismatched:
            shapes = ", ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in _rows(self.mismatched))
            lines.append(f"re-initialised (shape differs from the checkpoint): {shapes}")
        if self.reset:
            lines.append(f"re-initialised (new head): {', '.join(self.reset)}")
        if self.missing:
            lines.append(f"not in the checkpoint, left as initialised: {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"in the checkpoint but not in the model, ignored: {', '.join(self.unexpected)}")
        return lines


def _rows(mismatched: dict[str, tuple[Any, Any]]) -> Iterable[tuple[str, Any, Any]]:
    return ((k, a, b) for k, (a, b) in mismatched.items())


def match(model: nn.Module, state: State, reset: Sequence[str] = ()) -> Match:
    """Compare ``state`` with the model's own state dict; ``reset`` names blocks to re-initialise anyway."""
    own = model.state_dict()
    params = dict(model.named_parameters())
    result = Match()
    for name, tensor in own.items():
        if name not in state:
            result.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            result.mismatched[name] = (tuple(state[name].shape), tuple(tensor.shape))
        elif block_of(name) in reset:
            result.reset.append(name)
        else:
            result.loaded.append(name)
    result.unexpected = [k for k in state if k not in own]
    total = sum(p.numel() for p in params.values())
    taken = sum(params[k].numel() for k in result.loaded + result.reset if k in params)
    result.fraction = taken / total if total else 0.0
    return result


def load_matching(model: nn.Module, state: State, found: Match) -> None:
    """Copy the matching tensors into the model; the rest keep the model's fresh initialisation."""
    model.load_state_dict({k: state[k] for k in found.loaded}, strict=False)


def block_of(name: str) -> str:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0] if len(parts) > 1 else name


def blocks(model: nn.Module) -> list[str]:
    """The model's blocks in definition order (see the module docstring)."""
    seen: dict[str, None] = {}
    for name, _ in model.named_parameters():
        seen.setdefault(block_of(name), None)
    return list(seen)


def select(model: nn.Module, spec: int | str | Sequence[str], key: str) -> list[str]:
    """Blocks named by ``spec``: the first N blocks (an int), or name patterns (fnmatch on block or
    parameter names). Raises ValueError naming ``key`` for a pattern that matches nothing."""
    names = blocks(model)
    if isinstance(spec, bool):
        raise ValueError(f"{key}={spec}: give a number of blocks or a list of name patterns")
    if isinstance(spec, int):
        if not 0 <= spec < len(names):
            raise ValueError(f"{key}={spec}: the model has {len(names)} blocks ({', '.join(names)})")
        return names[:spec]
    patterns = [spec] if isinstance(spec, str) else [str(p) for p in spec]
    chosen: dict[str, None] = {}
    params = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        hits = [b for b in names if fnmatchcase(b, pattern)]
        hits += [block_of(p) for p in params if fnmatchcase(p, pattern)]
        if not hits:
            raise ValueError(f"{key}: {pattern!r} matches no block; the blocks are {', '.join(names)}")
        chosen.update(dict.fromkeys(hits))
    return [b for b in names if b in chosen]


def scaled(factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """An optimizer factory whose parameter groups get ``lr * lr_scale`` (the groups carry ``lr_scale``)."""

    def make(params: Any) -> Optimizer:
        optimizer = factory(params)
        for group in optimizer.param_groups:
            group["lr"] = optimizer.defaults["lr"] * group.get("lr_scale", 1.0)
        return optimizer

    return make


class Warmup:
    """Linear warm-up over ``steps`` optimizer steps on top of any other schedule (stepped per step).

    Why not torch's ``SequentialLR``: it switches schedules instead of combining them, and most of torch's
    schedulers compute from the current lr, so a warm-up factor has to be taken out before they step and put
    back after, which is all this does.
    """

    def __init__(self, optimizer: Optimizer, inner: dict[str, Any] | None, steps: int, per_epoch: int):
        self.optimizer = optimizer
        self.inner = inner
        self.steps = max(0, steps)
        self.per_epoch = max(1, per_epoch)
        self.done = 0
        self._scale(self.factor(0))

    def factor(self, i: int) -> float:
        return min(1.0, (i + 1) / (self.steps + 1))

    def _scale(self, f: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= f

    def step(self) -> None:
        self._scale(1.0 / self.factor(self.done))
        self.done += 1
        if self.inner is not None and (self.inner["interval"] == "step" or self.done % self.per_epoch == 0):
            self.inner["scheduler"].step()
        self._scale(self.factor(self.done))


def with_warmup(
    factory: Callable[..., dict[str, Any] | None], epochs: float
) -> Callable[..., dict[str, Any]]:
    """A schedule factory: ``factory``'s schedule with a linear warm-up over its first ``epochs`` epochs."""

    def make(optimizer: Optimizer, max_epochs: int, steps_per_epoch: int) -> dict[str, Any]:
        inner = factory(optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)
        steps = math.ceil(epochs * steps_per_epoch)
        return {"scheduler": Warmup(optimizer, inner, steps, steps_per_epoch), "interval": "step"}

    return make


class FineTuneModule(LitModule):
    """LitModule with discriminative learning rates, frozen blocks and gradual unfreezing.

    ``head`` blocks train at the optimizer's lr, the others at ``lr * lr_scale``. ``frozen`` blocks do not
    train (no gradient, and their modules stay in eval mode so batch-norm statistics do not move either);
    with ``unfreeze_every=K`` the frozen block nearest the head is released every K epochs (ULMFiT's
    gradual unfreezing). Frozen parameters stay in the optimizer's backbone group: torch optimizers skip
    parameters without a gradient, and released ones then train at the backbone's rate.
    """

    def __init__(
        self,
        *args: Any,
        head: Sequence[str],
        lr_scale: float = 1.0,
        frozen: Sequence[str] = (),
        unfreeze_every: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.optimizer_factory = scaled(self.optimizer_factory)
        self.head = list(head)
        self.lr_scale = lr_scale
        self.frozen = list(frozen)
        self.unfreeze_every = unfreeze_every
        self._set_frozen(self.frozen)

    def parameter_groups(self) -> list[dict[str, Any]]:
        head: list[Any] = []
        backbone: list[Any] = []
        for name, p in self.model.named_parameters():
            (head if block_of(name) in self.head else backbone).append(p)
        groups = [{"params": head, "lr_scale": 1.0, "name": "head"}]
        if backbone:
            groups.append({"params": backbone, "lr_scale": self.lr_scale, "name": "backbone"})
        return groups

    def _set_frozen(self, frozen: Sequence[str]) -> None:
        for name, p in self.model.named_parameters():
            p.requires_grad_(block_of(name) not in frozen)
        self._frozen_modules = [m for name, m in self.model.named_modules() if name in frozen]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        epoch = self.current_epoch
        if self.unfreeze_every and self.frozen and epoch > 0 and epoch % self.unfreeze_every == 0:
            self.frozen.pop()  # the frozen block nearest the head
            self._set_frozen(self.frozen)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning puts the whole model in train mode after each validation; frozen blocks stay in eval.
        for module in self._frozen_modules:
            module.eval()
