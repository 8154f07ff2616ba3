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
from torch import nn
from transformers import AutoTokenizer, BertForSequenceClassification

from lightning_modules import lora
from lightning_modules.hf import HFModel
from lightning_modules.models import Transformer
from sweeps.support.errors import ConfigError
from sweeps.training import lora as lora_cfg
from sweeps.training.fit import fit, prepare
from tests.conftest import compose_cfg, run_cli
from tests.hf_fixtures import TOPICS, pretrained_bert, write_topic_csv

DATA = ["data=sequence", "data.n_samples=800", "model=transformer"]
LABELS = int(TOPICS["n_topics"])  # the classes of write_topic_csv's texts
QUICK = ["trainer.max_epochs=2", "trainer.progress=none", "early_stopping_patience=0"]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain state dict of sweeplab's transformer for data=sequence: the weights LoRA adapts."""
    torch.manual_seed(0)
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT saved with save_pretrained (as initialised: LoRA's mechanics need no pretraining) and a
    labelled CSV for it."""
    folder = tmp_path_factory.mktemp("bert")
    masked = pretrained_bert(folder / "masked", steps=0)  # a masked-LM checkpoint: no pooler, no classifier
    model = BertForSequenceClassification.from_pretrained(masked, num_labels=LABELS)
    model.save_pretrained(folder / "model")  # all of it saved: every load is the same model
    AutoTokenizer.from_pretrained(masked).save_pretrained(folder / "model")
    return folder / "model", write_topic_csv(folder / "train.csv", 200, seed=1)


def hf_base(folder: Path) -> HFModel:
    """The pretrained model in ``folder`` as model=hf loads it, for token ids of its own tokenizer."""
    return HFModel(str(folder), num_labels=LABELS, vocab_size=len(AutoTokenizer.from_pretrained(folder)))


def hf_overrides(bert: tuple[Path, Path], *more: str) -> list[str]:
    model, csv = bert
    return ["model=hf", f"model.pretrained={model}", "data=text", f"data.path={csv}", *QUICK, *more]


def lora_overrides(ckpt: Path, *more: str) -> list[str]:
    return [*DATA, *QUICK, "stage=finetune", f"finetune.init_from={ckpt}", "finetune.lora.r=4", *more]


def fresh_base(ckpt: Path) -> Transformer:
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    return net.eval()


def base_name(key: str) -> str:
    """A peft model's name for a base tensor, as the plain model names it."""
    key = key.removeprefix("base_model.model.")
    return key.replace(".base_layer.", ".").replace(".original_module.", ".")


def check_lora_run(cfg, tmp_path: Path, base: nn.Module, original: dict[str, torch.Tensor]) -> None:
    """Train with LoRA: a small share trains, the base weights stay those of ``original`` bit for bit, and
    the saved adapter on ``base`` (a fresh copy of the pretrained model) predicts exactly the same."""
    built = prepare(cfg)
    model = built.module.model
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    share = trainable / sum(p.numel() for p in params)
    assert 0 < share < 0.05, share
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = fit(cfg, built, tmp_path)
    assert outcome.epochs == 2
    after = model.state_dict()
    trained = [k for k in after if "lora_" in k or "modules_to_save" in k]
    frozen = [k for k in after if k not in trained]
    assert all(torch.equal(before[k], after[k]) for k in frozen), "a base weight moved"
    assert any(not torch.equal(before[k], after[k]) for k in trained if "lora_B" in k)  # adapters learnt
    assert all(base_name(k) in original for k in frozen)
    assert all(torch.equal(after[k], original[base_name(k)]) for k in frozen)  # as loaded, bit for bit

    files = lora_cfg.save(cfg, model, tmp_path)
    assert {p.name for p in files} >= {"adapter_model.safetensors", "adapter_config.json"}
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len(saved) < len(frozen) and all("lora_" in k or "head" in k or "classifier" in k for k in saved)
    x = built.datamodule.splits["val"][0][:64]
    model.eval()
    reloaded = lora.load_adapter(base.eval(), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(reloaded(x), expected)
        merged = lora.merged(reloaded)
        assert not lora.is_adapted(merged)
        torch.testing.assert_close(merged(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_lora_on_a_pretrained_hf_model(tiny_bert: tuple[Path, Path], tmp_path: Path):
    cfg = compose_cfg([*hf_overrides(tiny_bert), "finetune.lora.r=4", "tracking=off", "checkpoint=false"])
    original = {f"hf.{k}": v for k, v in load_file(tiny_bert[0] / "model.safetensors").items()}
    check_lora_run(cfg, tmp_path, hf_base(tiny_bert[0]), original)


def test_layers_missing_from_the_checkpoint_go_with_the_adapter(tiny_bert: tuple[Path, Path]):
    """A masked-LM checkpoint has no pooler: it is initialised at random on each load, so it goes with the
    adapter (like the new classifier) for adapter + base to give the same model again."""
    masked = tiny_bert[0].parent / "masked"
    net = hf_base(masked)
    head = lora.head_modules(net, [])
    assert head == ["hf.classifier"]
    assert lora.not_pretrained(net, lora.saved_names(masked), head) == ["hf.bert.pooler.dense"]
    assert lora.not_pretrained(net, lora.saved_names(tiny_bert[0]), head) == []


@pytest.mark.slow
def test_lora_on_a_plain_torch_module(base_checkpoint: Path, tmp_path: Path):
    cfg = compose_cfg([*lora_overrides(base_checkpoint), "tracking=off", "checkpoint=false"])
    original = torch.load(base_checkpoint, weights_only=True)
    check_lora_run(cfg, tmp_path, fresh_base(base_checkpoint), original)


def test_bad_target_modules_fail_with_one_line_and_no_run(base_checkpoint: Path, workdir: Path):
    proc = run_cli(lora_overrides(base_checkpoint, "finetune.lora.target_modules=[qkv]"), cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: finetune.lora.target_modules: 'qkv' matches no")
    assert "linear1" in lines[0] and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match=r"^finetune.lr_scale=0.5 is for full fine-tuning; with"):
        prepare(compose_cfg([*lora_overrides(base_checkpoint), "finetune.lr_scale=0.5"]))
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


def test_the_adapters_count_in_eval_without_gradients_and_each_layer_is_hooked_once():
    """torch's fused path of its transformer layers (eval, no gradients) would skip the adapters."""
    torch.manual_seed(0)
    net = Transformer(input_shape=(16,), out_features=4, vocab_size=16, depth=2).eval()
    targets = lora.default_targets(net, ["head"])
    adapted = lora.apply(net, 4, 8.0, 0.0, targets, ["head"])
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param)  # peft starts B at zero: an adapter that changes nothing
    lora.slow_path(lora.slow_path(adapted))
    layers = [m for m in adapted.modules() if isinstance(m, nn.TransformerEncoderLayer)]
    assert len(layers) == 2 and all(len(m._forward_hooks) == 1 for m in layers)
    x = torch.randint(0, 16, (8, 16))
    with torch.no_grad():
        expected = adapted.train()(x)  # training: torch's plain path (no dropout in this model)
        adapted.eval()
        torch.testing.assert_close(adapted(x), expected)
        with adapted.disable_adapter():
            assert not torch.allclose(adapted(x), expected)  # what the fused path gives: the base alone


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 2 minutes on a quiet 2-core machine; 6 under heavy load
def test_lora_search_is_recorded_in_mlflow(tiny_bert: tuple[Path, Path], workdir: Path):
    args = ["-m", *hf_overrides(tiny_bert), "search=lora", "hydra.sweeper.n_trials=4"]
    proc = run_cli([*args, "finetune.lora.merge=true"], cwd=workdir, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    assert len(runs) == 4
    base_total = sum(p.numel() for p in hf_base(tiny_bert[0]).parameters())
    for run in runs:
        params = run.data.params
        assert int(params["finetune.lora.r"]) in (4, 8, 16)
        assert float(params["finetune.lora.alpha"]) in (8, 16, 32)
        assert 1e-4 <= float(params["lr"]) <= 3e-2
        assert params["lora.targets"].count(".query") == params["lora.targets"].count(".value") == 2
        r, trainable = int(params["finetune.lora.r"]), int(params["params_trainable"])
        assert trainable == 2 * 2 * r * (32 + 32) + (32 + 1) * LABELS  # 2 layers x (query, value); classifier
        assert int(params["params_total"]) == base_total + trainable  # + the adapters and the head copy
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert len(history) >= 1 and sorted(m.step for m in history) == list(range(1, len(history) + 1))
        if run.info.status == "FINISHED":
            assert len(history) == int(run.data.metrics["epochs"])  # one per epoch
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished
    run = max(finished, key=lambda r: r.data.metrics["best_val_acc"])
    folder = Path(client.download_artifacts(run.info.run_id, "adapter", str(workdir / "got")))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == int(run.data.params["finetune.lora.r"])
    x = torch.randint(5, 50, (16, 24))
    merged = hf_base(tiny_bert[0]).eval()
    merged.load_state_dict(load_file(folder / lora_cfg.MERGED_FILE))
    reloaded = lora.load_adapter(hf_base(tiny_bert[0]), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), merged(x), rtol=1e-4, atol=1e-5)
