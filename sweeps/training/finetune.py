"""``stage=finetune``: start from a checkpoint file or an MLflow run's best checkpoint; record the lineage.

The torch side (loading what fits, freezing, learning-rate groups) is ``lightning_modules.finetune``; here
the config is read, ``init_from`` is resolved, and every way it can fail becomes one ConfigError line before
anything trains. A run id is resolved through the tracking process (``Store.source_run``), which already
has the store open and MLflow imported: importing MLflow here would add 2-3 s to every fine-tuning run.
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lightning_modules import finetune as ft
from lightning_modules.module import LitModule
from sweeps.support.errors import ConfigError
from sweeps.support.secrets import redact_text

log = logging.getLogger("sweeplab")
RUN_ID = re.compile(r"^(?:runs:/)?([0-9a-f]{32})(?:/.*)?$")
CHECKPOINT = "checkpoints/best.ckpt"  # where RunRecord.finish logs a run's best checkpoint
MIN_LOADED = 0.5  # below this share of the model's weights from the checkpoint, the architectures differ


@dataclass
class Source:
    path: Path
    run_id: str | None = None
    params: dict[str, str] | None = None


@dataclass
class Plan:
    """What ``build`` needs to make the fine-tuning module, and what the MLflow run records about it."""

    head: list[str]
    frozen: list[str]
    lr_scale: float
    unfreeze_every: int
    warmup_epochs: float
    lineage: dict[str, dict[str, str]]


_sources: dict[str, Source] = {}
_states: dict[Path, ft.State] = {}


def enabled(cfg: DictConfig) -> bool:
    return str(cfg.get("stage", "train")) == "finetune"


def resolve(init_from: str, tracker: Any = None) -> Source:
    """A checkpoint path, or an MLflow run id (``runs:/ID`` too) resolved to its best checkpoint through
    ``tracker`` (the job's tracking session)."""
    if init_from in _sources:
        return _sources[init_from]
    key = f"finetune.init_from={redact_text(init_from)}"
    path = Path(init_from).expanduser()
    found = RUN_ID.match(init_from)
    if path.is_file():
        source = Source(path)
    elif found:
        source = _from_run(found.group(1), key, tracker)
    elif path.exists():
        raise ConfigError(f"{key}: not a file")
    else:
        raise ConfigError(f"{key}: no such file (give a checkpoint file or an MLflow run id)")
    _sources[init_from] = source
    return source


def _from_run(run_id: str, key: str, session: Any) -> Source:
    if session is None:
        raise ConfigError(f"{key} is an MLflow run id but tracking is off: give a checkpoint file instead")
    folder = tempfile.mkdtemp(prefix="sweeplab-init-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    found = session.source_run(run_id, folder)
    if found is None:
        raise ConfigError(f"{key}: no such MLflow run in {session.shown_uri}")
    if not found["checkpoint"]:
        raise ConfigError(
            f"{key}: run has no {CHECKPOINT} artifact (train it with checkpoint=true "
            "tracking.log_checkpoint=true)"
        )
    return Source(Path(found["checkpoint"]), run_id, found["params"])


def _state(source: Source, key: str) -> ft.State:
    if source.path not in _states:
        try:
            _states[source.path] = ft.read_weights(source.path)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    return _states[source.path]


def _spec(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def prepare(cfg: DictConfig, model: nn.Module, tracker: Any = None) -> Plan:
    """Resolve and check ``init_from`` against ``model`` and load what fits (not on the meta device, where
    only the checks run); work out the frozen and head blocks. Raises ConfigError with one line."""
    spec = cfg.finetune
    init_from = str(spec.init_from)
    key = f"finetune.init_from={redact_text(init_from)}"
    source = resolve(init_from, tracker)
    state = _state(source, key)
    try:
        head = (
            ft.select(model, _spec(spec.head), "finetune.head") if spec.get("head") else ft.blocks(model)[-1:]
        )
        frozen = ft.select(model, _spec(spec.freeze), "finetune.freeze") if spec.get("freeze") else []
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if set(frozen) & set(head):
        raise ConfigError(
            f"finetune.freeze would freeze the head ({', '.join(sorted(set(frozen) & set(head)))})"
        )
    found = ft.match(model, state, reset=head if spec.get("new_head", False) else ())
    if found.fraction < MIN_LOADED:
        ours = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(model.state_dict().items())[:3])
        theirs = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:3])
        raise ConfigError(
            f"{key}: incompatible architecture, only {found.fraction:.0%} of the model's weights match the "
            f"checkpoint by name and shape (model: {ours}, ...; checkpoint: {theirs}, ...)"
        )
    if next(model.parameters()).device.type != "meta":
        ft.load_matching(model, state, found)
        log.info(
            "finetune: %d tensors loaded from %s%s",
            len(found.loaded),
            redact_text(init_from),
            "".join(f"; {line}" for line in found.describe()),
        )
    tags = {"sweeplab.init_from": redact_text(init_from), "sweeplab.stage": "finetune"}
    if source.run_id:
        tags["sweeplab.init_from_run"] = source.run_id
    params = {f"source.{k}": v for k, v in (source.params or {}).items()}
    return Plan(
        head=head,
        frozen=frozen,
        lr_scale=float(spec.get("lr_scale", 1.0)),
        unfreeze_every=int(spec.get("unfreeze_every", 0)),
        warmup_epochs=float(spec.get("warmup_epochs", 0)),
        lineage={"tags": tags, "params": params},
    )


def module(plan: Plan, adapted: bool = False, **kwargs: Any) -> LitModule:
    """The fine-tuning LightningModule for ``plan`` (``kwargs`` are LitModule's). ``adapted``: the model
    carries LoRA adapters, which set what trains themselves (no blocks to freeze or scale)."""
    if plan.warmup_epochs > 0 and kwargs.get("scheduler") is not None:
        kwargs["scheduler"] = ft.with_warmup(kwargs["scheduler"], plan.warmup_epochs)
    if adapted:
        return LitModule(**kwargs)
    return ft.FineTuneModule(
        head=plan.head,
        lr_scale=plan.lr_scale,
        frozen=plan.frozen,
        unfreeze_every=plan.unfreeze_every,
        **kwargs,
    )
