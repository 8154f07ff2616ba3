"""LoRA (``finetune.lora``): a small share of the parameters trains, the base weights stay bit-identical, the
saved adapter reloads onto a fresh base with the same predictions, ``search=lora`` is recorded in MLflow, and
a bad ``target_modules`` fails with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from lightning_modules import lora
from lightning_modules.models import Transformer
from sweeps.training import lora as lora_cfg
from sweeps.training.fit import fit, prepare
from tests.conftest import compose_cfg, run_cli

DATA = ["data=sequence", "data.n_samples=800", "model=transformer"]
QUICK = ["trainer.max_epochs=2", "trainer.progress=none", "early_stopping_patience=0"]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain state dict of sweeplab's transformer for data=sequence: the weights LoRA adapts."""
    torch.manual_seed(0)
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save(net.state_dict(), path)
    return path


def lora_overrides(ckpt: Path, *more: str) -> list[str]:
    return [*DATA, *QUICK, "stage=finetune", f"finetune.init_from={ckpt}", "finetune.lora.r=4", *more]


def fresh_base(ckpt: Path) -> Transformer:
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    return net.eval()


def base_name(key: str) -> str:
    """A peft model's name for a base tensor, as the plain model names it."""
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")


@pytest.mark.slow
def test_lora_trains_few_parameters_keeps_the_base_and_reloads(base_checkpoint: Path, tmp_path: Path):
    cfg = compose_cfg([*lora_overrides(base_checkpoint), "tracking=off", "checkpoint=false"])
    built = prepare(cfg)
    model = built.module.model
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    share = trainable / sum(p.numel() for p in params)
    assert 0 < share < 0.05, share
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = fit(cfg, built, tmp_path)
    assert outcome.epochs == 2 and outcome.value > 0.25  # better than chance (4 classes)
    after = model.state_dict()
    trained = [k for k in after if "lora_" in k or "modules_to_save" in k]
    base = [k for k in after if k not in trained]
    assert all(torch.equal(before[k], after[k]) for k in base), "a base weight moved"
    assert any(not torch.equal(before[k], after[k]) for k in trained if "lora_B" in k)  # adapters learnt
    original = torch.load(base_checkpoint, weights_only=True)
    assert all(torch.equal(after[k], original[base_name(k)]) for k in base)  # as loaded, bit for bit

    files = lora_cfg.save(cfg, model, tmp_path)
    assert {p.name for p in files} >= {"adapter_model.safetensors", "adapter_config.json"}
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all("lora_" in k or "head" in k for k in saved)  # the adapter and head, not the base
    x = built.datamodule.splits["val"][0][:64]
    model.eval()
    reloaded = lora.load_adapter(fresh_base(base_checkpoint), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(reloaded(x), expected)
        merged = lora.merged(reloaded)
        assert not lora.is_adapted(merged)
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_target_modules_fail_with_one_line_and_no_run(base_checkpoint: Path, workdir: Path):
    proc = run_cli(lora_overrides(base_checkpoint, "finetune.lora.target_modules=[qkv]"), cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: finetune.lora.target_modules: 'qkv' matches no")
    assert "linear1" in lines[0] and "Traceback" not in proc.stderr
    proc = run_cli(lora_overrides(base_checkpoint, "finetune.lr_scale=0.5"), cwd=workdir)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: finetune.lr_scale=0.5 is for full")
    db = workdir / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_default_targets_per_model():
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16, depth=1)
    assert lora.default_targets(net, ["head"]) == ["encoder.layers.0.linear1", "encoder.layers.0.linear2"]
    assert lora.resolve_targets(net, ["*.linear2"], ["head"]) == ["encoder.layers.0.linear2"]
    with pytest.raises(ValueError, match="'query' matches no layer LoRA can adapt; some are: .*linear1"):
        lora.resolve_targets(net, ["query"], ["head"])


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_lora_search_is_recorded_in_mlflow(base_checkpoint: Path, workdir: Path):
    args = ["-m", *lora_overrides(base_checkpoint), "search=lora", "hydra.sweeper.n_trials=4"]
    proc = run_cli([*args, "finetune.lora.merge=true"], cwd=workdir, timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    assert len(runs) == 4
    for run in runs:
        params = run.data.params
        assert int(params["finetune.lora.r"]) in (4, 8, 16)
        assert float(params["finetune.lora.alpha"]) in (8, 16, 32)
        assert 1e-4 <= float(params["lr"]) <= 3e-2
        assert params["lora.targets"].count("linear") == 4  # two per layer, two layers
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert len(history) == int(run.data.metrics["epochs"]) >= 1  # per epoch
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished
    run = max(finished, key=lambda r: r.data.metrics["best_val_acc"])
    folder = Path(client.download_artifacts(run.info.run_id, "adapter", str(workdir / "got")))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == int(run.data.params["finetune.lora.r"])
    x = torch.randint(0, 16, (32, 16))
    merged = fresh_base(base_checkpoint)
    merged.load_state_dict(load_file(folder / lora_cfg.MERGED_FILE))
    reloaded = lora.load_adapter(fresh_base(base_checkpoint), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), merged(x), rtol=1e-5, atol=1e-5)
