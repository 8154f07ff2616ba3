"""Stratified K-fold cross-validation of a data module that keeps its splits as tensors (``ArrayDataModule``):
fold k of K validates on the k-th part of the training and validation data and trains on the rest; the test
split stays out of it. Features stay standardised by the original training split (no label enters that)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from sweeps.support.errors import ConfigError


def use_fold(dm: Any, fold: int, folds: int, seed: int) -> None:
    """Replace ``dm``'s train and validation splits by those of ``fold`` (1-based) of ``folds``."""
    splits = getattr(dm, "splits", None)
    if not isinstance(splits, dict) or not {"train", "val"} <= set(splits):
        raise ConfigError(f"cv={folds}: the data module must keep its splits as tensors (ArrayDataModule)")
    x = torch.cat([splits["train"][0], splits["val"][0]])
    y = torch.cat([splits["train"][1], splits["val"][1]])
    classification = getattr(dm, "task", "") == "classification"
    splitter = (StratifiedKFold if classification else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    labels = y.numpy() if classification else np.zeros(len(y))
    try:
        train, val = list(splitter.split(np.zeros(len(y)), labels))[fold - 1]
    except ValueError as err:  # fewer samples of a class than folds
        raise ConfigError(f"cv={folds}: {err}") from None
    splits["train"] = (x[torch.as_tensor(train)], y[torch.as_tensor(train)])
    splits["val"] = (x[torch.as_tensor(val)], y[torch.as_tensor(val)])
    if classification and getattr(dm, "n_classes", 0):
        dm.class_counts = torch.bincount(splits["train"][1], minlength=dm.n_classes).tolist()
