"""model=hf and data=text: a tiny BERT pretrained here (no download) and fine-tuned through the CLI, offline
failures, refused pickles, lineage, and the training options fine-tuning needs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ONE_BATCH, compose_cfg, run_cli
from tests.hf_fixtures import pretrained_bert, tiny_bert_config, topic_tokenizer, write_topic_csv
from tests.test_search import studies

OFFLINE = {"HF_HUB_OFFLINE": "1"}
QUIET = ["trainer.progress=none", "trainer.num_threads=1", "early_stopping_patience=0"]


# The README's fine-tuning figure (its quick example runs exactly these): a tiny BERT pretrained for
# PRETRAIN_STEPS masked-LM steps, fine-tuned on 40 labelled texts, against the same model from scratch.
PRETRAIN_STEPS = 2000
FIGURE_ARGS = [
    "model.from_scratch=false,true",
    "data=hf",
    "data.path=topics.csv",
    "data.label_fraction=0.17",
    "data.batch_size=8",
    "optimizer=adamw",
    "lr=1e-3",
    "trainer.max_epochs=60",
    "early_stopping_patience=0",
    "seeds=[0,1,2,3,4]",
]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained tiny BERT (its own folder) and a small labelled topic set beside it."""
    root = tmp_path_factory.mktemp("hf")
    pretrained_bert(root / "bert", steps=PRETRAIN_STEPS)
    write_topic_csv(root / "topics.csv", 400)
    return root


def hf_args(root: Path, *extra: str) -> list[str]:
    return [
        "model=hf",
        f"model.pretrained={root / 'bert'}",
        "data=text",
        f"data.path={root / 'topics.csv'}",
        *extra,
    ]


def runs(workdir: Path, kind: str) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    found = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in found if r.data.tags.get("sweeplab.kind") == kind]


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_pretrained_encoder_beats_the_same_model_from_scratch_over_five_seeds(hf_dir: Path, workdir: Path):
    """The README's fine-tuning figure, from its quick example's command (``FIGURE_ARGS``). Labels are topics;
    each labelled text holds one topic word among fillers, and the 40 labelled training texts miss many topic
    words. Pretraining (masked LM) taught which words co-occur: the fine-tuned model classifies texts whose
    words it never saw labelled, the model from scratch cannot. Every fine-tuned seed beats every seed from
    scratch by a wide margin (on this machine 0.988-1.000 against 0.463-0.575), and the verdict says so."""
    (workdir / "topics.csv").write_bytes((hf_dir / "topics.csv").read_bytes())
    args = ["-m", "model=hf", f"model.pretrained={hf_dir / 'bert'}", *FIGURE_ARGS, "trainer.progress=none"]
    proc = run_cli(args, cwd=workdir, env=OFFLINE, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_start: dict[str, list[float]] = {}
    tests: dict[str, list[float]] = {}
    for run in runs(workdir, "seed"):
        key = run.data.params["model.from_scratch"]
        by_start.setdefault(key, []).append(run.data.metrics["best_val_acc"])
        tests.setdefault(key, []).append(run.data.metrics["test_acc"])
        params = run.data.params
        assert params["base_model"] == str((hf_dir / "bert").resolve())
        assert (
            len(params["base_model_sha256"]) == 64 and params["base_model_head"] == "sequence_classification"
        )
        assert int(params["params_trainable"]) == int(params["params_total"]) > 10_000
    for key, label in (("False", "fine-tuned"), ("True", "from scratch")):
        vals, test = by_start[key], tests[key]
        assert len(vals) == 5
        print(
            f"{label}: best val_acc {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}, "
            f"test_acc {statistics.mean(test):.4f} ± {statistics.stdev(test):.4f} "
            f"(best val_acc of seeds 0-4 in run order: {', '.join(f'{v:.3f}' for v in vals)})"
        )
    assert min(by_start["False"]) > max(by_start["True"]) + 0.2
    assert statistics.mean(tests["False"]) > statistics.mean(tests["True"]) + 0.3
    assert "model.from_scratch=False beats model.from_scratch=True by" in proc.stdout + proc.stderr


def test_a_missing_model_offline_fails_in_one_line_without_a_run(tmp_path: Path):
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf-home")}  # an empty cache
    data = write_topic_csv(tmp_path / "topics.csv", 20)
    args = ["model=hf", "model.pretrained=no-such/model", "data=text", f"data.path={data}"]
    # A real process: huggingface_hub reads HF_HUB_OFFLINE and HF_HOME once, when it is imported.
    proc = run_cli(args, cwd=tmp_path, env=env, timeout=120, subprocess=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.pretrained=no-such/model "), proc.stderr
    assert "HF_HUB_OFFLINE" in lines[0]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists() or not runs(tmp_path, "run")


@pytest.mark.slow
def test_optimizer_and_lr_search_with_lora_scored_by_mcc_and_the_median_pruner(hf_dir: Path, workdir: Path):
    """optimizer=adamw,sgd with a log-uniform lr, LoRA adapters, texts from a CSV file read through datasets
    (data=hf) and val_mcc as the objective: an Optuna search with the median pruner; every trial is recorded
    as Optuna ended it and the leaderboard printed. What it asserts does not depend on which trial wins or
    whether one is pruned (that varies with the CPU's arithmetic; tests/test_search.py shows the pruner
    stopping poor trials on data where it must). (A plain grid runs every job to its end: sweeplab prunes
    only searches.)"""
    args = ["-m", "model=hf", f"model.pretrained={hf_dir / 'bert'}", "data=hf"]
    args += [f"data.path={hf_dir / 'topics.csv'}", "finetune.lora.r=8", "objective.metric=val_mcc"]
    args += ["optimizer=adamw,sgd", "lr=tag(log, interval(1e-3, 1e-2))", "hydra.sweeper.n_trials=4"]
    args += ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=1"]
    args += ["data.batch_size=16", "trainer.max_epochs=4"]
    proc = run_cli([*args, "checkpoint=false", *QUIET], cwd=workdir, env=OFFLINE, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 4 and {t.params["optimizer"] for t in trials} == {"adamw", "sgd"}
    assert all(1e-3 <= t.params["lr"] <= 1e-2 for t in trials)
    recorded = {r.data.tags["sweeplab.trial"]: r for r in runs(workdir, "run")}
    assert len(recorded) == 4
    for trial in trials:
        run = recorded[str(trial.number)]
        assert run.data.tags["sweeplab.state"] == (
            "PRUNED" if trial.state == TrialState.PRUNED else "FINISHED"
        )
        assert int(run.data.params["params_trainable"]) < int(run.data.params["params_total"])  # LoRA
        assert "val_mcc" in run.data.metrics and -1.0 <= run.data.metrics["val_mcc"] <= 1.0
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(run.data.metrics["best_val_mcc"])
    assert "rank  job  run" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved as initialised (no pretraining: quick), and a labelled topic set beside it."""
    root = tmp_path_factory.mktemp("plain")
    pretrained_bert(root / "bert", steps=0)
    write_topic_csv(root / "topics.csv", 120)
    return root


class RunsCode:
    """Unpickling it would create ``path``: the kind of pickle that must never be loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def copy_without_weights(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dest / name).write_bytes((src / name).read_bytes())
    return dest


@pytest.mark.slow
def test_pickled_weights_that_would_run_code_are_refused_in_one_line(plain_dir: Path, tmp_path: Path):
    folder = copy_without_weights(plain_dir / "bert", tmp_path / "evil")
    marker = tmp_path / "code-ran"
    torch.save({"bert.embeddings.word_embeddings.weight": RunsCode(marker)}, folder / "pytorch_model.bin")
    args = hf_args(plain_dir, *ONE_BATCH, "trainer.num_threads=1")
    args[1] = f"model.pretrained={folder}"
    proc = run_cli(args, cwd=tmp_path, env=OFFLINE, timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model.pretrained={folder}: refused"), proc.stderr
    assert not marker.exists()
    assert not runs(tmp_path, "run")


def test_plain_tensor_bin_weights_load_with_weights_only(plain_dir: Path, tmp_path: Path):
    from lightning_modules.hf import HFModel

    folder = copy_without_weights(plain_dir / "bert", tmp_path / "bin")
    vocab = len(topic_tokenizer())
    source = HFModel(str(plain_dir / "bert"), num_labels=4, vocab_size=vocab)
    torch.save(source.hf.state_dict(), folder / "pytorch_model.bin")
    loaded = HFModel(str(folder), num_labels=4, vocab_size=vocab)
    for name, tensor in source.hf.state_dict().items():
        assert torch.equal(loaded.hf.state_dict()[name], tensor), name
    assert loaded.hf.training  # from_pretrained leaves eval mode: Lightning would keep dropout off


def test_text_data_is_tokenized_once_and_cached_beside_the_file(plain_dir: Path, tmp_path: Path):
    from lightning_modules.text import TextDataModule

    data = write_topic_csv(tmp_path / "t.csv", 60)
    tokenizer = str(plain_dir / "bert")
    first = TextDataModule(str(data), tokenizer=tokenizer, max_length=16)
    first.setup()
    (cache,) = tmp_path.glob(".t.csv.*.tokens.npz")
    stamp = cache.stat().st_mtime_ns
    again = TextDataModule(str(data), tokenizer=tokenizer, max_length=16)
    again.setup()
    assert cache.stat().st_mtime_ns == stamp and len(list(tmp_path.glob(".t.csv.*"))) == 1
    for split in ("train", "val", "test"):
        for a, b in zip(first.splits[split], again.splits[split], strict=True):
            assert torch.equal(a, b)
    x, y = first.splits["train"]
    assert x.shape[1] == 16 and x.dtype == torch.long and first.n_classes == 4
    ids = topic_tokenizer()(["f1 f2"], padding="max_length", max_length=16)["input_ids"][0]
    assert ids[:4] == [2, *ids[1:3], 3] and ids[4] == first.pad_token_id  # [CLS] f1 f2 [SEP] [PAD]...
    TextDataModule(str(data), tokenizer=tokenizer, max_length=8).setup()  # other settings: another entry
    data.write_text(data.read_text().replace("sport", "games"))  # other content: another entry
    TextDataModule(str(data), tokenizer=tokenizer, max_length=16).setup()
    assert len(list(tmp_path.glob(".t.csv.*.tokens.npz"))) == 3


def test_a_bad_text_column_is_one_line_naming_the_key_and_the_columns(plain_dir: Path):
    from sweeps.support.errors import ConfigError
    from sweeps.training.build import build_datamodule

    cfg = compose_cfg([*hf_args(plain_dir), "data.text=body"])
    with pytest.raises(ConfigError) as err:
        build_datamodule(cfg)
    assert str(err.value) == "data.text='body' is not a column of topics.csv; columns: text, label"


def test_causal_lm_on_json_lines_with_accumulation_checkpointing_and_bf16(tmp_path: Path):
    """A tiny GPT-2 (its tokenizer pads with end-of-sequence) predicts next tokens of JSON-lines texts."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lightning_modules.text import topic_texts
    from sweeps.training.fit import prepare
    from sweeps.training.job import train

    tok = topic_tokenizer()
    tok.add_special_tokens({"eos_token": "[SEP]"})
    tok.pad_token = None
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt")
    tok.save_pretrained(tmp_path / "gpt")
    lines = [json.dumps({"body": t}) for t, _ in topic_texts(80, content=6)]
    (tmp_path / "texts.jsonl").write_text("\n".join(lines) + "\n")
    args = ["model=hf", f"model.pretrained={tmp_path / 'gpt'}", "model.head=causal_lm", "data=text"]
    args += [
        f"data.path={tmp_path / 'texts.jsonl'}",
        "data.text=body",
        "data.target=null",
        "data.max_length=12",
    ]
    args += ["model.gradient_checkpointing=true", "precision=bf16-mixed", "trainer.accumulate_grad_batches=2"]
    cfg = compose_cfg([*args, "trainer.max_epochs=2", "checkpoint=false", *QUIET])
    built = prepare(cfg)
    assert built.task == "lm" and built.module.model.hf.is_gradient_checkpointing
    assert built.module.accumulate == 2 and built.datamodule.pad_token_id == tok.eos_token_id
    outcome = train(cfg)
    assert outcome.metrics["train_loss"] < np.log(len(tok)) and 0 < outcome.metrics["val_acc"] <= 1


def test_gradient_accumulation_equals_the_larger_batch():
    """Two accumulated mini-batches of 32 make the same SGD step as one of 64 (same shuffled order)."""
    from sweeps.training.fit import fit, prepare

    common = ["optimizer=sgd", "lr=0.1", "trainer.steps_per_batch=1", "trainer.max_epochs=1", *QUIET]
    common += ["checkpoint=false"]
    results = []
    for batch, accumulate, limit in ((64, 1, 6), (32, 2, 12)):
        sizes = [f"data.batch_size={batch}", f"trainer.accumulate_grad_batches={accumulate}"]
        cfg = compose_cfg([*common, *sizes, f"trainer.limit_train_batches={limit}"])
        built = prepare(cfg)
        fit(cfg, built)
        results.append(torch.cat([p.detach().flatten() for p in built.module.model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_warmup_linear_rises_then_decays_to_min_lr():
    from lightning_modules.optim import warmup_linear

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_linear(opt, max_epochs=2, steps_per_epoch=5, warmup_epochs=0.4, min_lr=0.1)
    assert schedule["interval"] == "step"
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule["scheduler"].step()
    assert seen[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(seen[2:], seen[3:], strict=False)) and seen[-1] > 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


@pytest.mark.slow
def test_every_run_records_its_parameter_counts(workdir: Path):
    proc = run_cli(["model=mlp", *ONE_BATCH], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = runs(workdir, "run")
    assert int(run.data.params["params_total"]) == 64 * 128 + 128 + 128 * 10 + 10
    assert run.data.params["params_trainable"] == run.data.params["params_total"]
    assert "base_model" not in run.data.params


@pytest.mark.slow
def test_a_model_shorter_than_data_max_length_trains_with_it_clamped(plain_dir: Path, tmp_path: Path):
    """BERT with 32 positions and the default data.max_length=64: clamped in one line, no traceback."""
    from transformers import BertForMaskedLM

    tok = topic_tokenizer()
    config = tiny_bert_config(len(tok))
    config.max_position_embeddings = 32
    short = tmp_path / "short"
    BertForMaskedLM(config).save_pretrained(short)
    tok.save_pretrained(short)
    args = hf_args(plain_dir, *ONE_BATCH, "trainer.num_threads=1", "tracking=off")
    args[1] = f"model.pretrained={short}"
    proc = run_cli(args, cwd=tmp_path, env=OFFLINE, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    said = "data.max_length=64 is longer than the model accepts (max_position_embeddings=32): clamped to 32"
    assert (proc.stdout + proc.stderr).count(said) == 1
