"""One training run in MLflow, written through its command's tracking session (``session.Session``): created
before training (``RunRecord(session, ...)``), closed with its final state whatever happens."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State, is_test_metric
from sweeps.support import invocation
from sweeps.support.processes import pid_tags
from sweeps.support.secrets import redact, redact_override
from sweeps.tracking.session import Session


class RunRecord:
    """One training run in MLflow: created before training, closed with its final state whatever happens."""

    def __init__(
        self,
        session: Session,
        cfg: DictConfig,
        name: str,
        job: int | None,
        overrides: Sequence[str],
        choices: dict[str, str],
        parent: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None:
        """``choices`` are the config group options (``loss: cross_entropy``), logged as params too.
        ``parent``: the run it nests under (a configuration's, for its seed runs), else the sweep's."""
        self.session = session
        tags = {
            "sweeplab.kind": "run",
            "sweeplab.command": invocation.command(overrides),
            **pid_tags(),
            "sweeplab.state": "RUNNING",
        }
        if session.parent:
            tags["sweeplab.sweep_id"] = session.sweep_id
        if job is not None:
            tags["sweeplab.job"] = str(job)
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs the sweep gave this trial (``launch.gpus``)
            tags["sweeplab.cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
        tags.update(extra_tags or {})
        self.handle = session.new_run(name, tags, parent=parent or session.parent or session.outer)
        resolved = redact(OmegaConf.to_container(cfg, resolve=True))
        params = {**flatten(resolved), **{k: v for k, v in choices.items() if not k.startswith("hydra")}}
        session.log(self.handle, params={k: _text(v) for k, v in params.items()})
        session.yaml(self.handle, resolved, "config.yaml")
        session.text(self.handle, "\n".join(redact_override(o) for o in overrides) + "\n", "overrides.txt")

    def model(self, exported: dict[str, Any]) -> None:
        """Its network as an MLflow model (``training.export`` saved it, with an input example)."""
        self.session.model(self.handle, **exported)

    def datasets(self, described: list[dict[str, Any]]) -> None:
        """The data it trains and validates on (``training.datasets``), as MLflow dataset inputs."""
        self.session.datasets(self.handle, described)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's metrics, sent in one batch (for ``lightning_modules.callbacks.EpochEnd``)."""
        self.session.log(self.handle, metrics=metrics, step=epoch)

    def finish(self, outcome: Outcome) -> None:
        """Close a FINISHED run: its final metrics (``best_<objective>`` of its best epoch,
        ``final_<objective>`` of its last), its checkpoint (if asked for), the objective's name."""
        metric = outcome.metric
        final = {
            f"best_{metric}": outcome.best,
            "epochs": float(outcome.epochs),
            "train_seconds": outcome.seconds,
        }
        if metric in outcome.metrics:
            final[f"final_{metric}"] = outcome.metrics[metric]
        final.update({k: v for k, v in outcome.metrics.items() if is_test_metric(k)})
        tags = {"sweeplab.state": State.FINISHED.value, "sweeplab.objective": metric}
        self.session.log(self.handle, metrics=final, step=outcome.epochs, tags=tags)
        if self.session.log_checkpoint and outcome.checkpoint:
            self.session.artifact(self.handle, outcome.checkpoint, folder="checkpoints")
        self.session.end_run(self.handle, outcome.mlflow_status)

    def end(self, outcome: Outcome) -> None:
        """Close a run that did not finish, with our state and the reason as tags (``outcome`` says which
        MLflow status that is)."""
        tags = {"sweeplab.state": outcome.state.value, "sweeplab.reason": outcome.reason}
        trained = {"epochs": float(outcome.epochs)} if outcome.epochs else None  # a pruned run's, say
        self.session.log(self.handle, metrics=trained, tags=tags, step=outcome.epochs)
        self.session.end_run(self.handle, outcome.mlflow_status)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``optimizer.beta1``); lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _text(value: Any) -> str:
    return "null" if value is None else str(value)
