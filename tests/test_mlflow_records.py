"""What MLflow's own tools read from a sweep: dataset inputs, logged and registered models, system metrics.
Real CLI subprocesses on one real SQLite store in a temporary folder (made once for the module: two sweeps
and a run on other data)."""

from __future__ import annotations

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from lightning_modules.data import DigitsDataModule
from tests.conftest import ONE_BATCH, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test runs the module's commands

FAST = ["trainer.max_epochs=2", "trainer.progress=none"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """A 2x2 grid that logs and registers models, a second sweep (one job) that registers again and samples
    system metrics every second, and one run on other data."""
    folder = tmp_path_factory.mktemp("records")
    commands = [
        ["-m", "optimizer=adam,sgd", "lr=1e-3,1e-2", "tracking.register_best=digits_mlp", *FAST],
        ["-m", "lr=3e-3", "tracking.register_best=digits_mlp", "tracking.system_metrics=true", *FAST],
        ["data=breast_cancer", *ONE_BATCH],
    ]
    for args in commands:
        done = run_cli(args, cwd=folder, timeout=600, env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
        assert done.returncode == 0, done.stderr
    return MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")


def runs(client: MlflowClient, kind: str = "run") -> list:
    exp = client.get_experiment_by_name("sweeplab")
    found = client.search_runs([exp.experiment_id], max_results=100, order_by=["attributes.start_time"])
    return [r for r in found if r.data.tags.get("sweeplab.kind") == kind]


def datasets(run) -> dict[str, tuple[str, str, str]]:
    """context -> (name, digest, source) of a run's dataset inputs."""
    out = {}
    for d in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in d.tags}["mlflow.data.context"]
        out[context] = (d.dataset.name, d.dataset.digest, d.dataset.source)
    return out


def test_every_run_logs_its_training_and_validation_data_and_other_data_has_another_digest(store):
    digits = [r for r in runs(store) if r.data.params["data._target_"].endswith("DigitsDataModule")]
    grid = [r for r in digits if r.data.params["lr"] != "0.003"]
    (cancer,) = [r for r in runs(store) if r.data.params["data._target_"].endswith("BreastCancerDataModule")]
    assert len(grid) == 4
    seen = [datasets(r) for r in grid]
    assert all(set(s) == {"training", "validation"} for s in seen), seen
    assert len({s["training"] for s in seen}) == 1 and len({s["validation"] for s in seen}) == 1, seen
    name, train_digest, source = seen[0]["training"]
    assert name == "digits" and "DigitsDataModule" in source and train_digest != seen[0]["validation"][1]
    assert datasets(cancer)["training"][0] == "breast_cancer"
    assert datasets(cancer)["training"][1] != train_digest
    assert datasets(cancer)["validation"][1] != seen[0]["validation"][1]


def test_register_best_makes_a_new_version_per_sweep_that_loads_and_scores_the_recorded_test_accuracy(store):
    first, second = runs(store, "sweep")
    versions = sorted(store.search_model_versions("name='digits_mlp'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == ["1", "2"]
    for version, sweep in zip(versions, (first, second), strict=True):
        assert version.run_id == sweep.data.tags["sweeplab.best_run_id"]
        assert version.tags["sweeplab.sweep_id"] == sweep.info.run_id
        assert version.tags["sweeplab.objective"] == "val_acc"
        assert version.tags["sweeplab.config"] == sweep.data.tags["sweeplab.best_config"]
    # Every run of a sweep that registers logged its model (with a signature from the validation data).
    logged = store.search_logged_models(experiment_ids=[first.info.experiment_id])
    assert len({m.source_run_id for m in logged}) == 5

    mlflow.set_tracking_uri(store.tracking_uri)
    model = mlflow.pytorch.load_model("models:/digits_mlp/latest")
    data = DigitsDataModule(seed=42)  # the split every run trained on (seed=42 by default)
    data.setup()
    x, y = data.splits["test"]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    recorded = store.get_run(versions[-1].run_id).data.metrics["test_acc"]
    assert accuracy == pytest.approx(recorded, abs=1e-6)
    info = mlflow.models.get_model_info("models:/digits_mlp/latest")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 8, 8)
    assert info.saved_input_example_info["type"] == "ndarray"


def test_system_metrics_on_request_only(store):
    sampled = [r for r in runs(store) if r.data.params["lr"] == "0.003"]
    assert len(sampled) == 1
    system = [k for k in sampled[0].data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system, sampled[0].data.metrics
    others = [r for r in runs(store) if r.data.params["lr"] != "0.003"]
    assert not [k for r in others for k in r.data.metrics if k.startswith("system/")]
