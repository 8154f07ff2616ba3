"""LoRA adapters through ``peft``, on Hugging Face models and on plain torch modules alike.

Only the low-rank adapters and the head (peft's ``modules_to_save``, a trained copy) take gradients; every
base weight keeps ``requires_grad=False`` and so stays bit-identical however long it trains. The adapter is
saved as safetensors with peft's ``save_pretrained`` (``adapter_config.json`` + ``adapter_model.safetensors``)
and loads back onto a freshly built base with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from torch import nn

# Layers LoRA can adapt (peft's LoRA layer types); MultiheadAttention's out_proj is excluded from the
# defaults: torch's attention reads its weight directly, so an adapter there would never be used.
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
HF_HEADS = ("classifier", "score")  # the heads of transformers' ...ForSequenceClassification models


def pretrained_type(model: nn.Module) -> str | None:
    """The ``model_type`` of the Hugging Face model inside ``model`` (a wrapper's submodule), if any."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "model_type", None):
            return str(config.model_type)
    return None


def adaptable(model: nn.Module) -> list[str]:
    """Names of the modules LoRA can adapt, in definition order."""
    names = []
    for name, module in model.named_modules():
        is_conv1d = type(module).__name__ == "Conv1D"  # transformers' GPT-2 style linear layer
        if name and (isinstance(module, ADAPTABLE) or is_conv1d):
            names.append(name)
    return names


def _inside(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def default_targets(model: nn.Module, head: Sequence[str]) -> list[str]:
    """peft's own choice for a known Hugging Face architecture (``query``/``value`` for BERT); otherwise
    every linear layer outside the head and outside torch's attention blocks."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    kind = pretrained_type(model)
    if kind in KNOWN:
        return list(KNOWN[kind])
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return [
        n
        for n in adaptable(model)
        if isinstance(model.get_submodule(n), nn.Linear) and not _inside(n, [*head, *attention])
    ]


def matches(name: str, pattern: str) -> bool:
    """peft's rule (the name, or its ending after a dot) or a shell pattern (``*.linear1``)."""
    return name == pattern or name.endswith("." + pattern) or fnmatchcase(name, pattern)


def resolve_targets(model: nn.Module, patterns: Sequence[str], head: Sequence[str]) -> list[str]:
    """The adaptable module names that ``patterns`` pick. Raises ValueError naming the first pattern that
    matches none, with some of the names that would."""
    names = [n for n in adaptable(model) if not _inside(n, head)]
    chosen: dict[str, None] = {}
    for pattern in patterns:
        hits = [n for n in names if matches(n, str(pattern))]
        if not hits:
            short = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
            some = ", ".join(short[:12] + [n for n in names if n not in short][:4])
            raise ValueError(f"{pattern!r} matches no layer LoRA can adapt; some are: {some}")
        chosen.update(dict.fromkeys(hits))
    return list(chosen)


def head_modules(model: nn.Module, head: Sequence[str]) -> list[str]:
    """What trains in full beside the adapters: a Hugging Face classifier head, else ``head``."""
    names = dict(model.named_modules())
    found = [n for n in names if n.rsplit(".", 1)[-1] in HF_HEADS] if pretrained_type(model) else []
    return found or [h for h in head if h in names]


def saved_names(folder: Path) -> set[str]:
    """The tensor names in a pretrained folder's safetensors files (empty without any)."""
    from safetensors import safe_open

    names: set[str] = set()
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            names.update(f.keys())
    return names


def not_pretrained(model: nn.Module, saved: set[str], head: Sequence[str]) -> list[str]:
    """Modules outside ``head`` whose parameters are not among ``saved`` (a checkpoint's names, which may
    lack the wrapper's prefix): initialised at random on every load (BERT's pooler under a masked-LM
    checkpoint), so they train and are saved with the adapter, like the head, or the adapter would not
    reproduce the model."""
    if not saved:
        return []
    found: dict[str, None] = {}
    for name, _ in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if not _inside(name, head) and not any(name == k or name.endswith("." + k) for k in saved):
            found.setdefault(owner, None)
    return list(found)


def apply(
    model: nn.Module,
    r: int,
    alpha: float,
    dropout: float,
    targets: Sequence[str],
    head: Sequence[str] = (),
) -> Any:
    """``model`` with LoRA adapters on ``targets`` (exact module names) and a trainable copy of ``head``:
    a ``peft.PeftModel``, called like the model."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(r),
        lora_alpha=alpha,  # type: ignore[arg-type]  # annotated int; peft divides it by r
        lora_dropout=float(dropout),
        target_modules=list(targets),
        modules_to_save=list(head) or None,
    )
    return slow_path(get_peft_model(model, config))


HOOKED = "sweeplab_slow_path"  # set on a transformer layer that ``slow_path`` gave its hook


def _keep_output(module: nn.Module, args: Any, output: Any) -> None:
    """A forward hook that changes nothing (see ``slow_path``)."""


def slow_path(model: Any) -> Any:
    """Turn off torch's fused inference path of its transformer layers in ``model``: in eval mode without
    gradients it reads ``linear1.weight`` and the others directly, so it would skip the adapters. torch
    takes the plain path when a layer has a forward hook, so each gets one that does nothing, once (torch
    lists a module's hooks only in private attributes: a mark in the layer's ``__dict__``, which copies of
    the layer keep as they keep its hooks, says it has one)."""
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            if not vars(module).get(HOOKED):
                module.register_forward_hook(_keep_output)
                vars(module)[HOOKED] = True
    return model


def save_adapter(peft_model: Any, folder: Path) -> list[Path]:
    """The adapter (and trained head) as ``adapter_model.safetensors`` + ``adapter_config.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    return sorted(p for p in folder.iterdir() if p.is_file())


def load_adapter(base: nn.Module, folder: Path) -> Any:
    """A freshly built ``base`` with the adapter saved in ``folder``, ready to predict."""
    from peft import PeftModel

    return slow_path(PeftModel.from_pretrained(base, str(folder)))


def merged(peft_model: Any) -> nn.Module:
    """The adapters folded into the base weights: a plain module of the base's own class."""
    merged_model: nn.Module = peft_model.merge_and_unload()
    return merged_model


def is_adapted(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")
