"""``trainer.compile=true``: the model's training forward through ``torch.compile``, trained on the CPU; the
trials of one sweep that differ in lr and optimizer reuse the graph (no recompile), and the result is the
eager one. Compiling is slow on these CPUs (~30-50 s the first time): few tests, tiny models, one cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gpu_finetune import overrides as finetune_case
from bench.gpu_finetune import save_base
from sweeps.support.errors import ConfigError
from sweeps.training.checks import check_config
from sweeps.training.job import train
from tests.conftest import compose_cfg

TINY = ["trainer.max_epochs=2", "checkpoint=false", "trainer.progress=none", "model.hidden=[32]"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile") / "cache"


@pytest.mark.slow
def test_trials_with_other_lr_and_optimizer_reuse_the_graph_and_train_as_eager(cache: Path):
    compiled = ["trainer.compile=true", f"trainer.compile_cache={cache}"]
    trials = [["optimizer=adam", "lr=1e-2"], ["optimizer=sgd", "lr=0.1"], ["optimizer=adamw", "lr=3e-3"]]
    outcomes = [train(compose_cfg([*TINY, *compiled, *trial])) for trial in trials]
    assert [o.metrics["recompiles"] for o in outcomes] == [0, 0, 0]
    assert outcomes[0].metrics["compiled_graphs"] >= 1  # the first trial compiles ...
    assert [o.metrics["compiled_graphs"] for o in outcomes[1:]] == [0, 0]  # ... the others reuse its graph
    assert (cache / "fxgraph").is_dir() and (cache / "aotautograd").is_dir()  # Inductor's caches, one folder
    eager = train(compose_cfg([*TINY, *trials[1], "data.drop_last=true"]))  # compile drops the last batch too
    timing = ("epoch_time", "samples_per_sec")
    assert outcomes[1].value > 0.5
    for key, value in eager.metrics.items():
        if key not in timing:
            assert outcomes[1].metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


@pytest.mark.slow
def test_hf_model_with_lora_trains_compiled(cache: Path, tmp_path: Path):
    vocab = save_base(tmp_path, smoke=True)  # a config-only tiny BERT and its tokenizer: nothing downloaded
    case = [o for o in finetune_case(tmp_path, vocab, smoke=True) if not o.startswith("data.n_samples")]
    options = ["trainer.compile=true", f"trainer.compile_cache={cache}", "finetune.lora.r=4"]
    options.append("data.n_samples=160")
    outcome = train(compose_cfg([*case, *options, "trainer.max_epochs=1", "checkpoint=false"]))
    assert outcome.metrics["recompiles"] == 0 and outcome.metrics["compiled_graphs"] >= 1
    assert 0.0 <= outcome.value <= 1.0 and outcome.metrics["train_loss"] > 0


@pytest.mark.parametrize("key", ["trainer.compile", "optimizer.fused"])
def test_a_switch_that_is_not_a_boolean_is_one_line_naming_it(key: str):
    with pytest.raises(ConfigError, match=rf"^{key}=yes: allowed are true, false$"):
        check_config(compose_cfg([f"{key}=yes"]))
