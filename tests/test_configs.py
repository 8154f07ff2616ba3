"""Every option of every config group composes and trains for one batch.

The options are read from conf/, not listed by hand. An option that does not fit the defaults (say
``loss=log_loss`` on 10-class digits) is tried with the other data, loss and model options, defaults first,
until it fits; an option that fits none fails the test.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sweeps.support.errors import ConfigError
from sweeps.training.build import build
from sweeps.training.checks import distributed
from sweeps.training.job import train
from tests.conftest import CONF, ONE_BATCH, compose_cfg

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
CONTEXT_GROUPS = ("data", "loss", "model")


def contexts(group: str) -> list[list[str]]:
    """Override lists to try an option in: the defaults first, then other data/loss/model choices."""
    others = [g for g in CONTEXT_GROUPS if g != group] if group != "experiment" else []
    choices = [[None, *sorted(f.stem for f in (CONF / g).glob("*.yaml"))] for g in others]
    combos = sorted(itertools.product(*choices), key=lambda c: sum(x is not None for x in c))
    return [[f"{g}={x}" for g, x in zip(others, combo, strict=True) if x is not None] for combo in combos]


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user CSV file for the ``csv`` data option (its path and target are mandatory keys)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    frame["colour"] = rng.choice(["red", "green"], 200)
    frame["label"] = (x[:, 0] + x[:, 1] > 0).astype(int)
    path = tmp_path_factory.mktemp("table") / "table.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved with its tokenizer (``model=hf``), a text CSV beside it (``data=text``, ``hf``)."""
    from tests.hf_fixtures import pretrained_bert, write_topic_csv

    root = tmp_path_factory.mktemp("hf")
    write_topic_csv(root / "texts.csv", 100)
    return pretrained_bert(root / "bert", steps=0)


def own_weights(overrides: list[str], folder: Path) -> Path:
    """A checkpoint of the model ``overrides`` build, freshly initialised."""
    path = folder / "init.pt"
    torch.save(build(compose_cfg([*overrides, "stage=train"])).module.model.state_dict(), path)
    return path


def test_groups_are_found():
    assert {"data", "loss", "model", "optimizer", "scheduler", "trainer", "experiment"} <= set(GROUPS)
    assert len(OPTIONS) >= 30


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_trains_one_batch(
    group: str, option: str, table_file: Path, hf_folder: Path, tmp_path: Path
):
    composed = compose_cfg([f"{group}={option}"])
    if composed.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("composes; training needs a GPU (tests/test_gpu.py)")
    if distributed(composed.trainer):  # Lightning's DDP re-runs the command line: here, pytest's
        pytest.skip("composes; DDP trains through the CLI in tests/test_ddp.py")
    gpu_sized = option.endswith("_gpu")  # ~100M parameters: minutes a step on 2 cores
    if gpu_sized and not torch.cuda.is_available():
        params = sum(p.numel() for p in build(composed).module.model.parameters())
        assert params > 50e6
        pytest.skip(f"builds ({params / 1e6:.0f}M parameters); training it needs a GPU (bench/gpu.py)")
    on_gpu = ["trainer=gpu"] if gpu_sized else []  # not the default trainer=cpu: that trains it on the CPU
    errors = []
    for context in contexts(group):
        overrides = [f"{group}={option}", *on_gpu, *context, *ONE_BATCH]
        if "data=csv" in overrides:
            overrides += [f"data.path={table_file}", "data.target=label"]
        if "model=hf" in overrides:
            overrides.append(f"model.pretrained={hf_folder}")
        if "data=text" in overrides or "data=hf" in overrides:
            overrides += [f"data.path={hf_folder.parent / 'texts.csv'}", f"data.tokenizer={hf_folder}"]
        if "data=hf" in overrides:  # (its default, null, is the limit model=hf's checks read from the model)
            overrides.append("data.max_length=32")
        cfg = compose_cfg(overrides)
        if cfg.get("stage") == "finetune":  # it needs weights to start from: its own model's, untrained
            cfg = compose_cfg([*overrides, f"finetune.init_from={own_weights(overrides, tmp_path)}"])
        try:
            build(cfg)
        except ConfigError as err:
            errors.append(f"{context}: {err}")
            continue
        assert cfg.trainer.accelerator == ("gpu" if gpu_sized else composed.trainer.accelerator)
        result = train(cfg, output_dir=tmp_path)
        assert result.epochs == 1
        assert np.isfinite(result.metrics["train_loss"])
        return
    pytest.fail(f"{group}={option} fits no data option: {errors}")
