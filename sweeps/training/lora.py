"""``finetune.lora``: wrap the built model with LoRA adapters, save the adapter and log it to the run.

The torch side is ``lightning_modules.lora``; here the config is read and every way it can be wrong becomes
one ConfigError line before anything trains. LoRA freezes the base model itself, so the blocks-based
options of full fine-tuning (``freeze``, ``unfreeze_every``, ``lr_scale``) are refused beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lightning_modules import finetune as ft
from lightning_modules import lora
from sweeps.support.errors import ConfigError
from sweeps.training import hf

log = logging.getLogger("sweeplab")
ADAPTER_DIR = "adapter"  # in the run's output folder and among its MLflow artifacts
MERGED_FILE = "merged_model.safetensors"


@dataclass
class Adapted:
    model: Any  # the peft model
    lineage: dict[str, dict[str, str]]


def settings(cfg: DictConfig) -> Any:
    return (cfg.get("finetune") or {}).get("lora") or {}


def enabled(cfg: DictConfig) -> bool:
    return bool(settings(cfg).get("r"))


def _check(cfg: DictConfig, spec: Any) -> None:
    r, alpha, dropout = spec.get("r"), spec.get("alpha"), spec.get("dropout", 0.0)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"finetune.lora.r={r}: the adapter's rank, a whole number >= 1 (0 or null: off)")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ConfigError(f"finetune.lora.alpha={alpha}: a number > 0 (null: 2 x r)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"finetune.lora.dropout={dropout}: a number in [0, 1)")
    full = cfg.finetune
    for key, off in (("freeze", None), ("unfreeze_every", 0), ("lr_scale", 1.0)):
        if full.get(key, off) not in (off, None):
            raise ConfigError(
                f"finetune.{key}={full.get(key)} is for full fine-tuning; with finetune.lora the base model "
                "is frozen and the adapters and head train at lr"
            )


def _patterns(spec: Any) -> list[str] | None:
    value = spec.get("target_modules")
    if value is None:
        return None
    value = _spec(value)
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def prepare(cfg: DictConfig, model: nn.Module | None) -> Adapted:
    """``model`` with LoRA adapters (and a trainable head) as ``finetune.lora`` says; ConfigError with one
    line for a bad setting or a ``target_modules`` pattern that matches no layer. None: a user's module."""
    if model is None:
        raise ConfigError("finetune.lora works with module=default only (your module can apply peft itself)")
    spec = settings(cfg)
    _check(cfg, spec)
    head_spec = cfg.finetune.get("head")
    try:
        own_head = ft.select(model, _spec(head_spec), "finetune.head") if head_spec else ft.blocks(model)[-1:]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    head = lora.head_modules(model, own_head)
    head += lora.not_pretrained(model, _pretrained_names(cfg), head)
    patterns = _patterns(spec)
    try:
        targets = (
            lora.resolve_targets(model, patterns, head)
            if patterns
            else lora.resolve_targets(model, lora.default_targets(model, head), head)
        )
    except ValueError as err:
        raise ConfigError(f"finetune.lora.target_modules: {err}") from None
    r = int(spec.r)
    alpha = float(spec.get("alpha") or 2 * r)
    adapted = lora.apply(model, r, alpha, float(spec.get("dropout") or 0.0), targets, head)
    if next(model.parameters()).device.type != "meta":
        log.info(
            "lora: r=%d alpha=%g on %d layers (%s); training in full: %s",
            r,
            alpha,
            len(targets),
            ", ".join(targets[:6]) + (", ..." if len(targets) > 6 else ""),
            ", ".join(head) or "nothing",
        )
    params = {"lora.targets": ",".join(targets)[:500], "lora.head": ",".join(head)}
    return Adapted(adapted, {"params": params, "tags": {"sweeplab.adapter": "lora"}})


def _pretrained_names(cfg: DictConfig) -> set[str]:
    """model=hf from a local folder: the tensor names its weight files hold."""
    if not hf.is_hf(cfg):
        return set()
    revision = cfg.model.get("revision")
    folder = hf.resolve(str(cfg.model.pretrained), None if revision is None else str(revision)).folder
    return lora.saved_names(folder) if folder is not None else set()


def _spec(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def save(cfg: DictConfig, model: Any, output_dir: Path) -> list[Path]:
    """The adapter files in ``output_dir/adapter``, and with ``finetune.lora.merge`` the merged model's
    weights beside them (safetensors)."""
    import copy

    from safetensors.torch import save_model

    folder = output_dir / ADAPTER_DIR
    files = lora.save_adapter(model, folder)
    if settings(cfg).get("merge", False):
        plain = lora.merged(copy.deepcopy(model).cpu())
        save_model(plain, str(folder / MERGED_FILE))
        files.append(folder / MERGED_FILE)
    return files


def log_adapter(cfg: DictConfig, built: Any, output_dir: Path | None, record: Any) -> None:
    """Save the trained adapter and log its files as artifacts of the run (under ``adapter/``)."""
    model = getattr(built.module, "model", None)  # a user's own module may call its network otherwise
    if not enabled(cfg) or model is None or not lora.is_adapted(model):
        return
    if output_dir is None:
        import tempfile

        output_dir = Path(tempfile.mkdtemp(prefix="sweeplab-adapter-"))
    for path in save(cfg, model, output_dir):
        record.session.artifact(record.handle, str(path.resolve()), folder=ADAPTER_DIR)
