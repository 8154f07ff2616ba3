"""data=hf: Hugging Face datasets built here (``save_to_disk``, local CSV, JSON-lines and Parquet files
read through ``load_dataset``; nothing downloaded), single texts and pairs, ``Dataset.map``'s cache, dynamic
padding, the classification metrics (MCC, binary F1), MLflow dataset inputs, and the offline error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from lightning_modules.text import topic_texts
from tests.conftest import compose_cfg, run_cli
from tests.hf_fixtures import TOPICS, pretrained_bert

NAMES = ["sport", "science", "art", "food"]
QUIET = ["trainer.progress=none", "trainer.num_threads=1", "early_stopping_patience=0", "checkpoint=false"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved as initialised (quick), with its word-level tokenizer."""
    return pretrained_bert(tmp_path_factory.mktemp("hfdata") / "bert", steps=0)


def texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Topic texts of 2 to 10 words (one topic word among fillers), and their topics as words."""
    rng = np.random.default_rng(seed)
    found = topic_texts(n, seed=seed, content=1, **TOPICS)
    cut = [" ".join(t.split()[: int(rng.integers(2, 11))]) for t, _ in found]
    return cut, [NAMES[label] for _, label in found]


def pairs(n: int, seed: int = 0) -> dict[str, list]:
    """Sentence pairs labelled 1 when both texts are of the same topic (a paraphrase-like task)."""
    first = topic_texts(n, seed=seed, content=3, **TOPICS)
    second = topic_texts(n, seed=seed + 1, content=3, **TOPICS)
    return {
        "sentence1": [t for t, _ in first],
        "sentence2": [t for t, _ in second],
        "label": [int(a == b) for (_, a), (_, b) in zip(first, second, strict=True)],
    }


def saved_pairs(folder: Path, n_train: int = 160, n_val: int = 40) -> Path:
    """A ``DatasetDict`` of pairs with a train and a validation split, and a test split without labels (-1,
    as GLUE's), saved to disk."""
    from datasets import ClassLabel, Dataset, DatasetDict

    def split(n: int, seed: int, hidden: bool = False) -> Dataset:
        data = Dataset.from_dict({**pairs(n, seed), **({"label": [-1] * n} if hidden else {})})
        return data.cast_column("label", ClassLabel(names=["different", "same"]))

    splits = {"train": split(n_train, 0), "validation": split(n_val, 7), "test": split(10, 9, hidden=True)}
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def hf_args(bert: Path, *extra: str) -> list[str]:
    return ["model=hf", f"model.pretrained={bert}", "data=hf", *extra]


def build(bert: Path, *extra: str) -> object:
    """The set-up data module, after the checks a run makes first (they set data.max_length's default)."""
    from sweeps.training.build import build_datamodule
    from sweeps.training.checks import check_config

    cfg = compose_cfg(hf_args(bert, *extra))
    check_config(cfg)
    return build_datamodule(cfg).module


def token_files() -> list[Path]:
    return sorted((Path(os.environ["HF_DATASETS_CACHE"]) / "sweeplab-tokens").glob("*.arrow"))


def test_saved_pairs_keep_their_validation_split_and_the_tokens_are_cached(bert: Path, tmp_path: Path):
    folder = saved_pairs(tmp_path / "pairs")
    args = [f"data.path={folder}", "data.text=sentence1", "data.text_pair=sentence2", "data.max_length=40"]
    before = set(token_files())
    dm = build(bert, *args)
    made = sorted(set(token_files()) - before)
    assert len(made) == 2  # the train and validation splits' token ids, each an Arrow file of Dataset.map
    x, y = dm.splits["val"]
    assert len(x) == 40 and x.shape[1] == 2  # the source's own validation split; (ids, token types)
    ids, types = x[0], x[0][1]
    first_sep = int((ids[0] == 3).nonzero()[0])  # [CLS] a ... [SEP] b ... [SEP]
    assert ids[0][0] == 2 and types[: first_sep + 1].eq(0).all() and types[first_sep + 1 :].max() == 1
    # the source's test split has no labels (-1): the test split is cut from train
    assert len(dm.splits["test"][0]) == 32 and len(dm.splits["train"][0]) == 128
    assert dm.n_classes == 2 and set(y.tolist()) <= {0, 1}
    assert dm.hf_sources["val"]["split"] == "validation"
    assert dm.hf_sources["test"]["split"] == "train (test share, seed 42)"
    stamps = [p.stat().st_mtime_ns for p in made]
    again = build(bert, *args)  # a second trial: the same files, read back, not written again
    assert [p.stat().st_mtime_ns for p in made] == stamps and set(token_files()) - before == set(made)
    for split in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(dm.splits[split], again.splits[split], strict=True))
    build(bert, *args[:-1], "data.max_length=20")  # other settings: other files
    assert len(set(token_files()) - before) == 4


def test_local_csv_json_lines_and_parquet_files_give_the_same_data(bert: Path, tmp_path: Path):
    import pandas as pd

    body, labels = texts(100)
    frame = pd.DataFrame({"body": body, "topic": labels})
    files = [tmp_path / "t.csv", tmp_path / "t.jsonl", tmp_path / "t.parquet"]
    frame.to_csv(files[0], index=False)
    frame.to_json(files[1], orient="records", lines=True)
    frame.to_parquet(files[2])
    built = [build(bert, f"data.path={f}", "data.text=body", "data.target=topic") for f in files]
    for dm in built:
        assert dm.n_classes == 4 and dm.hf_sources["train"]["path"] in ("csv", "json", "parquet")
        for split in ("train", "val", "test"):
            assert all(
                torch.equal(a, b) for a, b in zip(built[0].splits[split], dm.splits[split], strict=True)
            )
    y = torch.cat([built[0].splits[s][1] for s in ("train", "val", "test")])
    assert sorted(set(y.tolist())) == [0, 1, 2, 3]  # topics numbered in sorted order: art 0 ... sport 3
    frame[80:].to_parquet(tmp_path / "dev.parquet")  # files per split: the validation split is that file
    files = f"data.path={{train: {files[2]}, validation: {tmp_path / 'dev.parquet'}}}"
    dm = build(bert, files, "data.text=body", "data.target=topic")
    assert len(dm.splits["val"][0]) == 20 and dm.hf_sources["val"]["split"] == "validation"
    assert dm.hf_sources["val"]["data_files"]["validation"] == [str(tmp_path / "dev.parquet")]


def batch_widths(dm: object) -> list[tuple[int, int, int]]:
    """Each training batch's width, its longest real text, and its real (not padding) tokens."""
    out = []
    for batch in dm.train_dataloader():  # type: ignore[attr-defined]
        for x, _ in batch if isinstance(batch, list) else [batch]:  # (trainer.steps_per_batch groups them)
            real = x.ne(dm.pad_token_id)  # type: ignore[attr-defined]
            out.append((x.shape[-1], int(real.sum(-1).max()), int(real.sum())))
    return out


@pytest.mark.parametrize("kind", ["hf", "text"])
def test_each_batch_is_padded_to_its_own_longest_text(bert: Path, tmp_path: Path, kind: str):
    """Dynamic padding: a batch is as wide as its longest text, not data.max_length; padding=max_length
    keeps every batch at max_length (static shapes)."""
    import pandas as pd

    body, labels = texts(200)
    pd.DataFrame({"text": body, "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    data = ["data=text", f"model.pretrained={bert}"] if kind == "text" else []
    args = [*data, f"data.path={tmp_path / 't.csv'}", "data.max_length=48", "data.batch_size=8"]
    dynamic = batch_widths(build(bert, *args))
    fixed = batch_widths(build(bert, *args, "data.padding=max_length"))
    assert all(width == longest for width, longest, _ in dynamic)  # no column of padding only
    assert max(w for w, _, _ in dynamic) <= 12 and len({w for w, _, _ in dynamic}) > 1
    assert {w for w, _, _ in fixed} == {48}
    real = sum(r for _, _, r in dynamic)
    assert real == sum(r for _, _, r in fixed)  # the same tokens, far less padding
    assert sum(w * 8 for w, _, _ in dynamic) < 0.3 * sum(w * 8 for w, _, _ in fixed)


def test_mcc_and_binary_f1_are_torchmetrics_values():
    from sklearn.metrics import f1_score, matthews_corrcoef

    from lightning_modules.module import task_metrics

    y = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1, 0, 0, 1, 0, 0, 1])
    logits = torch.nn.functional.one_hot(pred, 2).float()
    metrics = task_metrics(logits, y, "classification", torch.tensor(0.0))
    assert float(metrics["mcc"]) == pytest.approx(matthews_corrcoef(y, pred), abs=1e-6)
    assert float(metrics["f1_binary"]) == pytest.approx(f1_score(y, pred), abs=1e-6)
    assert float(metrics["f1"]) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    three = task_metrics(torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 1]), "classification", y[0])
    assert "f1_binary" not in three and float(three["mcc"]) == pytest.approx(
        matthews_corrcoef([0, 1, 2, 1], [0, 1, 2, 2]), abs=1e-6
    )


def test_binary_f1_as_the_objective_of_ten_classes_is_one_line():
    from sweeps.support.errors import ConfigError
    from sweeps.training.build import build

    with pytest.raises(
        ConfigError, match=r"^objective.metric=val_f1_binary needs two classes, the data has 10"
    ):
        build(compose_cfg(["objective.metric=val_f1_binary"]))


def test_a_bad_column_names_the_key_and_the_columns(bert: Path, tmp_path: Path):
    from sweeps.support.errors import ConfigError

    folder = saved_pairs(tmp_path / "pairs", 20, 10)
    with pytest.raises(ConfigError) as err:
        build(bert, f"data.path={folder}", "data.text=sentence1", "data.text_pair=question")
    assert str(err.value) == (
        "data.text_pair='question' is not a column of pairs; columns: sentence1, sentence2, label"
    )


@pytest.mark.slow
def test_a_dataset_missing_offline_is_one_line_exit_2_and_no_run(bert: Path, tmp_path: Path):
    """HF_DATASETS_OFFLINE=1 (the tests' environment) and a hub name not in the (empty) datasets cache."""
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    proc = run_cli([*hf_args(bert, "data.name=no-such/dataset"), *QUIET], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.name=no-such/dataset: "), proc.stderr
    assert "HF_DATASETS_OFFLINE" in lines[0]
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_a_lora_grid_of_optimizer_and_lr_on_pairs_scored_by_mcc_records_its_dataset_inputs(
    bert: Path, workdir: Path
):
    """optimizer x lr with LoRA adapters on a tiny BERT, sentence pairs from a saved dataset, the objective
    val_mcc: four runs, each with its MLflow dataset inputs (name, Hugging Face source with its split,
    digest) and the task metrics."""
    folder = saved_pairs(workdir / "pairs")
    args = ["-m", *hf_args(bert, f"data.path={folder}", "data.text=sentence1", "data.text_pair=sentence2")]
    args += ["optimizer=adamw,sgd", "lr=1e-3,1e-2", "finetune.lora.r=4", "objective.metric=val_mcc"]
    args += ["data.batch_size=16", "trainer.max_epochs=2", *QUIET]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    found = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    assert len(found) == 4
    assert {(r.data.params["optimizer"], r.data.params["lr"]) for r in found} == {
        (o, lr) for o in ("adamw", "sgd") for lr in ("0.001", "0.01")
    }
    digests = set()
    for run in found:
        assert {"val_mcc", "val_f1", "val_f1_binary", "val_acc"} <= set(run.data.metrics)
        assert int(run.data.params["params_trainable"]) < int(run.data.params["params_total"])  # LoRA
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "validation"}
        for context, split in (
            ("training", "train (less the test share, seed 42)"),
            ("validation", "validation"),
        ):
            dataset = inputs[context]
            source = json.loads(dataset.source)
            assert dataset.name == "pairs" and dataset.source_type == "hugging_face"
            assert source["path"] == str(folder.resolve()) and source["split"] == split
            digests.add(dataset.digest)
    assert len(digests) == 2  # every run trained and was validated on the same two splits
    assert "val_mcc" in proc.stdout + proc.stderr


def test_trainer_compile_keeps_every_batch_the_same_width(bert: Path, tmp_path: Path):
    """A batch cut to its own longest text would compile another graph: compiled, batches are not cut."""
    import pandas as pd

    from sweeps.training.build import build as build_all
    from sweeps.training.checks import check_config

    body, labels = texts(100)
    pd.DataFrame({"text": body, "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    cfg = compose_cfg(hf_args(bert, f"data.path={tmp_path / 't.csv'}", "data.batch_size=8"))
    cfg.trainer.compile = True
    check_config(cfg)
    dm = build_all(cfg).datamodule
    assert dm.padding == "max_length" and len({w for w, _, _ in batch_widths(dm)}) == 1
