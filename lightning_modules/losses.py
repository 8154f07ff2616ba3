"""Loss functions, each an ``nn.Module`` called as ``loss(outputs, targets)``.

Every loss is told the task (``classification``, ``regression`` or ``lm``) and the number of classes when it
is built, so that it can refuse a task it does not fit before any training starts, and say how many outputs
the model needs (``out_features``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CLASSIFICATION_TASKS = ("classification", "lm")


class IncompatibleTask(ValueError):
    """The loss (or model) does not fit the data's task; raised at build time, before training."""


def _flatten_tokens(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Language-model outputs (N, L, V) and targets (N, L) become (N*L, V) and (N*L,)."""
    if outputs.dim() == 3:
        return outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    return outputs, targets


class CrossEntropy(nn.Module):
    """Softmax cross-entropy, with optional label smoothing and class weights (``balanced`` or a list)."""

    weight: torch.Tensor | None

    def __init__(
        self,
        task: str = "classification",
        n_classes: int = 2,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if task not in CLASSIFICATION_TASKS:
            raise IncompatibleTask(f"loss=cross_entropy needs a classification task, the data is {task}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={label_smoothing} must be in [0, 1)")
        self.out_features = n_classes
        self.label_smoothing = label_smoothing
        weight = _class_weights(class_weights, n_classes, class_counts)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs, targets = _flatten_tokens(outputs, targets)
        return F.cross_entropy(outputs, targets, weight=self.weight, label_smoothing=self.label_smoothing)


def _class_weights(
    spec: str | Sequence[float] | None, n_classes: int, counts: Sequence[int] | None
) -> torch.Tensor | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"loss.class_weights={spec!r}: allowed are null, balanced or a list of numbers")
        if counts is None:
            raise ValueError("loss.class_weights=balanced needs the training class counts")
        c = torch.as_tensor(list(counts), dtype=torch.float32).clamp_min(1.0)
        return c.sum() / (len(c) * c)
    weights = torch.as_tensor(list(spec), dtype=torch.float32)
    if weights.numel() != n_classes or bool((weights < 0).any()):
        raise ValueError(f"loss.class_weights needs {n_classes} non-negative numbers, got {list(spec)}")
    return weights


class _Regression(nn.Module):
    """Base of losses that compare numbers: regression targets, or softmax outputs against one-hot targets."""

    name = "regression"

    def __init__(self, task: str = "regression", n_classes: int = 0) -> None:
        super().__init__()
        if task == "lm":
            raise IncompatibleTask(f"loss={self.name} does not fit a language-model task; use cross_entropy")
        self.classification = task == "classification"
        self.out_features = n_classes if self.classification else 1

    def _pair(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.classification:
            probs = outputs.softmax(dim=-1)
            return probs, F.one_hot(targets, probs.shape[-1]).to(probs.dtype)
        return outputs.reshape(targets.shape), targets.to(outputs.dtype)


class MSE(_Regression):
    """Mean squared error (on softmax probabilities vs one-hot targets for classification)."""

    name = "mse"

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(*self._pair(outputs, targets))


class Huber(_Regression):
    """Huber loss (on softmax probabilities vs one-hot targets for classification)."""

    name = "huber"

    def __init__(self, task: str = "regression", n_classes: int = 0, delta: float = 1.0) -> None:
        super().__init__(task, n_classes)
        if delta <= 0:
            raise ValueError(f"loss.delta={delta} must be > 0")
        self.delta = delta

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(*self._pair(outputs, targets), delta=self.delta)


class LogLoss(nn.Module):
    """Binary cross-entropy on a single logit (binary classification only)."""

    pos_weight: torch.Tensor | None

    def __init__(
        self, task: str = "classification", n_classes: int = 2, pos_weight: float | None = None
    ) -> None:
        super().__init__()
        if task != "classification" or n_classes != 2:
            what = f"{n_classes} classes" if task == "classification" else f"a {task} task"
            raise IncompatibleTask(
                f"loss=log_loss needs binary classification (2 classes), the data has {what}"
            )
        self.out_features = 1
        pw = None if pos_weight is None else torch.tensor([float(pos_weight)])
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            outputs.reshape(targets.shape), targets.to(outputs.dtype), pos_weight=self.pos_weight
        )


class SoftF1(nn.Module):
    """1 - soft F1: F1 computed from softmax probabilities instead of hard predictions, so it has a gradient.

    ``average="macro"`` averages the soft F1 of every class; ``average="binary"`` scores the positive class of
    a two-class problem.
    """

    def __init__(self, task: str = "classification", n_classes: int = 2, average: str = "macro") -> None:
        super().__init__()
        if task != "classification":
            raise IncompatibleTask(f"loss=soft_f1 needs a classification task, the data is {task}")
        if average not in ("macro", "binary"):
            raise ValueError(f"loss.average={average!r}: allowed are macro, binary")
        if average == "binary" and n_classes != 2:
            raise IncompatibleTask(f"loss.average=binary needs 2 classes, the data has {n_classes}")
        self.out_features = n_classes
        self.average = average

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = outputs.float().softmax(dim=-1)
        onehot = F.one_hot(targets, probs.shape[-1]).to(probs.dtype)
        tp = (probs * onehot).sum(0)
        fp = (probs * (1 - onehot)).sum(0)
        fn = ((1 - probs) * onehot).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-8)
        return 1 - (f1[1] if self.average == "binary" else f1.mean())
