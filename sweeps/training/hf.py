"""``model=hf``: where a pretrained Hugging Face model comes from, checked before torch loads and before any
MLflow run opens, and the lineage its run records (base model, revision or weights hash, head).

Offline first: a local folder, else the local Hugging Face cache; the hub only when ``HF_HUB_OFFLINE`` is not
set (then transformers downloads it). A name found nowhere fails in one line naming it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweeps.support.errors import ConfigError
from sweeps.support.secrets import redact_text

log = logging.getLogger("sweeplab")
TARGET = "lightning_modules.hf.HFModel"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Base:
    """A resolved base model: a local folder, or a hub name found in the cache (its commit) or not yet."""

    name: str
    folder: Path | None = None
    commit: str | None = None


def is_hf(cfg: DictConfig) -> bool:
    return str(OmegaConf.select(cfg, "model._target_", default="")) == TARGET


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=8)
def resolve(name: str, revision: str | None) -> Base:
    """Where ``model.pretrained`` is: raises ConfigError when it is neither a local folder nor cached and the
    hub may not be asked (``HF_HUB_OFFLINE``)."""
    shown = redact_text(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.pretrained={shown}: the folder has no config.json (save it with save_pretrained)"
            )
        return Base(name, folder=path.resolve())
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"model.pretrained={shown}: no such folder")
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError as err:  # not a valid repository id
        raise ConfigError(f"model.pretrained={shown}: {str(err).splitlines()[0]}") from None
    if isinstance(found, str):
        return Base(name, commit=Path(found).parent.name)
    if offline():
        raise ConfigError(
            f"model.pretrained={shown} is neither a local folder nor in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set: give a folder saved with save_pretrained, or download it first"
        )
    return _download_config(name, revision, shown)


def _download_config(name: str, revision: str | None, shown: str) -> Base:
    """Ask the hub once, for the config alone: a wrong name or no network fails here in one line, before
    torch loads; transformers downloads the rest."""
    from huggingface_hub import hf_hub_download

    try:
        found = hf_hub_download(name, "config.json", revision=revision)
    except Exception as err:  # noqa: BLE001 - any failure of the hub: the name cannot serve
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.pretrained={shown} is neither a local folder nor in the Hugging Face cache, and the "
            f"hub did not give it ({redact_text(text)})"
        ) from None
    return Base(name, commit=Path(found).parent.name)


def check(cfg: DictConfig) -> None:
    """The model=hf keys that can be checked without torch: the head and where the weights are."""
    if not is_hf(cfg):
        return
    name = OmegaConf.select(cfg, "model.pretrained", default=None)
    if name in (None, "", "???") or OmegaConf.is_missing(cfg.model, "pretrained"):
        raise ConfigError("model.pretrained is required with model=hf: a hub name or a local folder")
    head = str(cfg.model.get("head", "sequence_classification"))
    if head not in ("sequence_classification", "causal_lm"):
        raise ConfigError(f"model.head={head}: allowed are sequence_classification, causal_lm")
    revision = cfg.model.get("revision")
    base = resolve(str(name), None if revision is None else str(revision))
    clamp_max_length(cfg, base)


# The keys of a model's config.json that bound its input length (BERT and most encoders, GPT-2, others).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def _read_json(base: Base, filename: str) -> dict:
    """``filename`` of the model's folder or its cached hub snapshot ({} where it is not there)."""
    if base.folder is not None:
        path: Path | None = base.folder / filename
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(base.name, filename, revision=base.commit)
        path = Path(found) if isinstance(found, str) else None
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}


@functools.lru_cache(maxsize=8)
def limits(base: Base) -> dict[str, int]:
    """What bounds the length of the model's input: its position embeddings, its tokenizer's
    ``model_max_length`` (from their JSON files: no torch needed; read once per model, though each job's
    config is checked more than once)."""
    config, found = _read_json(base, "config.json"), {}
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            found[key] = config[key]
            break
    tokenizer = _read_json(base, "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer, int) and 0 < tokenizer < 10**9:  # "no limit" is written as 1e30
        found["model_max_length"] = tokenizer
    return found


def clamp_max_length(cfg: DictConfig, base: Base) -> None:
    """``data.max_length`` longer than the model accepts would crash inside its embeddings: it is clamped
    to the model's limit, with one line saying so; null (data=hf's default) is that limit."""
    length = OmegaConf.select(cfg, "data.max_length", default=None)
    bounds = limits(base)
    if not bounds:
        return
    key, limit = min(bounds.items(), key=lambda kv: kv[1])
    if length is None and "max_length" in cfg.data:  # data=hf's default: what the model accepts
        cfg.data.max_length = limit
        return
    if not isinstance(length, int) or length <= limit:
        return
    cfg.data.max_length = limit
    _say(f"data.max_length={length} is longer than the model accepts ({key}={limit}): clamped to {limit}")


@functools.lru_cache(maxsize=8)
def _say(line: str) -> None:
    """Once per process (every job of a sweep is checked twice: before the sweep and when it runs)."""
    log.warning(line)


@functools.lru_cache(maxsize=8)
def weights_sha256(folder: Path) -> str:
    """One sha256 over the folder's weight files (names and contents, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def lineage(cfg: DictConfig) -> dict[str, dict[str, str]]:
    """Params and tags naming the base model: its name or folder, and its revision (hub) or a sha256 of its
    weight files (folder). Never a token: HF_TOKEN is read by huggingface_hub from the environment only."""
    revision = cfg.model.get("revision")
    base = resolve(str(cfg.model.pretrained), None if revision is None else str(revision))
    params = {
        "base_model": redact_text(str(base.folder or base.name)),
        "base_model_head": str(cfg.model.head),
    }
    if base.folder is not None:
        params["base_model_sha256"] = weights_sha256(base.folder)
    else:
        params["base_model_revision"] = base.commit or str(revision or "main")
    if bool(cfg.model.get("from_scratch", False)):
        params["base_model_from_scratch"] = "true"
    tags = {"sweeplab.base_model": params["base_model"]}
    return {"params": params, "tags": tags}
