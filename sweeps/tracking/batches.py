"""What a run has waiting to be written, and how it goes out: its metrics, params and tags in as few MLflow
``log_batch`` calls as MLflow's limits allow (one for a trial of a few seconds; a longer one's every
``store.FLUSH_SECONDS`` and at its end).

Why: each ``log_batch`` is a transaction that loads the run back first (its params, tags, latest metrics).
A trial used to send five of them (its config's params, its parameter counts, what trained, its final tags,
its epochs' metrics), and the tracking process's share of the CPU is what two trial workers on two cores
compete with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_PARAMS_OR_TAGS = 100  # MLflow's limits on one log_batch: params, tags, and all three together
MAX_ENTITIES = 1000
MAX_PARAM_VALUE = 6000


@dataclass
class Held:
    """One run's writes not sent yet. A param given again with another value is not merged (MLflow refuses
    changed params): ``conflicts`` says so, and the caller writes what is held first."""

    metrics: list[Any] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def conflicts(self, params: dict[str, Any]) -> bool:
        return any(self.params.get(k, value) != value for k, value in _values(params).items())

    def add(self, metrics: list[Any], params: dict[str, Any], tags: dict[str, Any]) -> None:
        self.metrics.extend(metrics)
        self.params.update(_values(params))
        self.tags.update({k: str(v) for k, v in tags.items()})  # a tag set again: the last value, as set_tag

    def batches(self) -> Iterator[dict[str, list[Any]]]:
        """``log_batch`` keyword arguments, each within MLflow's limits."""
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in self.params.items()]
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        metrics = list(self.metrics)
        while params or tags or metrics:
            batch_params, params = params[:MAX_PARAMS_OR_TAGS], params[MAX_PARAMS_OR_TAGS:]
            batch_tags, tags = tags[:MAX_PARAMS_OR_TAGS], tags[MAX_PARAMS_OR_TAGS:]
            room = MAX_ENTITIES - len(batch_params) - len(batch_tags)
            batch_metrics, metrics = metrics[:room], metrics[room:]
            yield {"metrics": batch_metrics, "params": batch_params, "tags": batch_tags}


def write(client: Any, run_id: str, held: Held) -> None:
    """Send what ``held`` has. A batch MLflow refuses (a changed param, a value it rejects) is sent again in
    its parts, so that the rest of it is not lost with the bad part; the first refusal is then raised."""
    errors: list[Exception] = []
    for batch in held.batches():
        try:
            client.log_batch(run_id, **batch)
        except Exception as err:  # noqa: BLE001 - MLflow's or the server's; raised below after the parts
            parts = [{kind: items} for kind, items in batch.items() if items]
            if len(parts) == 1:
                errors.append(err)
                continue
            for part in parts:
                try:
                    client.log_batch(run_id, **part)
                except Exception as part_err:  # noqa: BLE001 - as above
                    errors.append(part_err)
    if errors:
        raise errors[0]


def _values(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_VALUE] for k, v in params.items()}
