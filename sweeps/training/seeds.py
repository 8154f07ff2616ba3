"""What ``repeats``, ``seeds``, ``repeats_vary_split`` and ``cv`` ask of one configuration: the runs it is
scored by (its seeds, or its folds), and each one's config. Light (no torch): the checks run before anything
trains.

- ``repeats=N``: seeds ``seed``, ``seed+1``, ... ``seed+N-1`` (the same for every configuration, so that
  configurations can be compared seed by seed); ``seeds=[...]`` names them instead.
- The seed drives the initialisation and the order of the training batches; the train/validation split stays
  that of ``data.seed`` unless ``repeats_vary_split=true``.
- ``cv=K``: stratified K-fold cross-validation of the training and validation data (the test split stays
  out), one run per fold, all with ``seed``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sweeps.support.errors import ConfigError


@dataclass(frozen=True)
class Member:
    """One run of a configuration: a seed, or a fold of cross-validation."""

    key: str  # how the verdicts pair it with the other configurations' runs: "42", or "fold1"
    label: str  # how it is named: "seed=42", "fold=1/5"
    seed: int
    fold: int | None = None
    folds: int = 0


def repeated(cfg: DictConfig) -> bool:
    """Whether ``cfg`` asks for several runs of one configuration (checked by ``check``)."""
    return bool(cfg.get("cv") or cfg.get("seeds") is not None or (cfg.get("repeats") or 1) != 1)


def _int(cfg: DictConfig, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be a whole number")
    return int(value)


def check(cfg: DictConfig) -> list[Member]:
    """The runs of this configuration ([] for a plain single run); ConfigError for bad values."""
    repeats, cv = _int(cfg, "repeats", 1), _int(cfg, "cv", 0)
    seeds: Any = cfg.get("seeds", None)
    if repeats < 1:
        raise ConfigError(f"repeats={repeats} must be >= 1")
    if cv < 0 or cv == 1:
        raise ConfigError(f"cv={cv}: allowed are 0 (off) or a number of folds >= 2")
    if seeds is not None:
        if not OmegaConf.is_list(seeds) or not seeds:
            raise ConfigError(f"seeds={seeds}: give a list of whole numbers, e.g. seeds=[1,2,3]")
        listed = list(seeds)
        whole = all(isinstance(s, int) and not isinstance(s, bool) for s in listed)
        if not whole or len(set(listed)) < len(listed):
            raise ConfigError(f"seeds={listed}: give distinct whole numbers")
        if repeats not in (1, len(listed)):
            raise ConfigError(f"repeats={repeats} and seeds={listed}: give one of them")
    if cv and (repeats > 1 or seeds is not None):
        raise ConfigError(f"cv={cv} with repeats or seeds: the folds are the repeats, give one of them")
    if not (cv or repeats > 1 or seeds is not None):
        return []
    base = int(cfg.get("seed", 0))
    if cv:
        return [Member(f"fold{k}", f"fold={k}/{cv}", base, k, cv) for k in range(1, cv + 1)]
    chosen = list(seeds) if seeds is not None else [base + i for i in range(repeats)]
    return [Member(str(s), f"seed={s}", int(s)) for s in chosen]


def config_of(cfg: DictConfig, member: Member) -> DictConfig:
    """The config one run of the configuration trains: its seed, and the split seed kept unless asked."""
    out = copy.deepcopy(cfg)
    split = OmegaConf.select(cfg, "data.seed", default=None)
    with open_dict(out):
        if split is not None and not (cfg.get("repeats_vary_split", False) and not member.fold):
            out.data.seed = split  # the value it has now: the split does not follow the seed
        out.seed = member.seed
        out.repeats, out.seeds, out.cv = 1, None, 0
    return out


def overrides_of(overrides: list[str], cfg: DictConfig, member: Member) -> list[str]:
    """The command-line overrides that re-run this one member alone (its seed, the kept split)."""
    dropped = ("repeats=", "seeds=", "cv=", "seed=", "data.seed=", "repeats_vary_split=")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(dropped)]
    split = OmegaConf.select(cfg, "data.seed", default=None)
    pinned = [f"data.seed={split}"] if split is not None and not cfg.get("repeats_vary_split", False) else []
    order = [f"+data.shuffle_seed={member.seed}"] if pinned and not member.fold else []
    return [*kept, f"seed={member.seed}", *pinned, *order]
