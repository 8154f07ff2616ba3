"""Fine-tuning: pretrain on digits 0-4, fine-tune on 5-9 with 10% of the labels; freezing, learning-rate
groups, warm-up, lineage in MLflow, and every way ``init_from`` can be wrong (one line, exit 2)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from lightning_modules import finetune as ft
from sweeps.support.errors import ConfigError
from sweeps.training.fit import fit, make_trainer, prepare
from sweeps.training.job import train
from tests.conftest import compose_cfg, run_cli

QUIET = ["trainer.progress=none", "tracking=off"]
PRETRAIN = ["experiment=pretrain_digits_0_4", *QUIET]
FINETUNE = ["experiment=finetune_digits_5_9", "checkpoint=false", *QUIET]
RUN_LINE = re.compile(r"recorded as MLflow run ([0-9a-f]{32})")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CNN pretrained on digits 0-4 (once for this module): its best checkpoint."""
    result = train(compose_cfg(PRETRAIN), output_dir=tmp_path_factory.mktemp("pretrain"))
    assert result.value >= 0.95 and result.checkpoint
    return Path(result.checkpoint)


def finetune_cfg(init: Path, *overrides: str):
    return compose_cfg([*FINETUNE, f"finetune.init_from={init}", *overrides])


# -- the worked example ---
def test_finetuning_beats_training_from_scratch_over_three_seeds(pretrained: Path):
    """Same data (digits 5-9, 10% of the labels), model, optimizer, lr and epochs; only the start differs."""
    tuned, scratch = [], []
    for seed in (0, 1, 2):
        tuned.append(float(train(finetune_cfg(pretrained, f"seed={seed}"))))
        scratch.append(float(train(finetune_cfg(pretrained, f"seed={seed}", "stage=train"))))
    mean_tuned, mean_scratch = sum(tuned) / 3, sum(scratch) / 3
    print(f"val_acc fine-tuned {tuned} mean {mean_tuned:.4f}; from scratch {scratch} mean {mean_scratch:.4f}")
    assert mean_tuned > mean_scratch


def test_digits_5_9_with_a_tenth_of_the_labels():
    dm = prepare(compose_cfg([*FINETUNE, "stage=train"])).datamodule
    full = prepare(compose_cfg([*FINETUNE, "stage=train", "data.label_fraction=1.0"])).datamodule
    assert dm.n_classes == 5 and dm.class_counts is not None
    assert sum(dm.class_counts) == round(0.1 * full.train_size())
    assert min(dm.class_counts) >= 9  # stratified: every class keeps about a tenth of its labels
    for split in ("val", "test"):  # only training labels are dropped
        assert torch.equal(dm.splits[split][1], full.splits[split][1])
    assert set(dm.splits["val"][1].tolist()) == {0, 1, 2, 3, 4}
    again = prepare(compose_cfg([*FINETUNE, "stage=train"])).datamodule
    assert torch.equal(again.splits["train"][0], dm.splits["train"][0])  # seeded


# -- freezing, learning-rate groups, warm-up ---
def test_frozen_blocks_stay_bit_identical_and_groups_carry_scaled_lrs(pretrained: Path):
    cfg = finetune_cfg(
        pretrained,
        "finetune.freeze=[net.0,net.1]",
        "finetune.lr_scale=0.1",
        "lr=0.002",
        "finetune.warmup_epochs=0",
        "trainer.max_epochs=3",
    )
    built = prepare(cfg)
    model = built.module.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer(cfg, built, None)
    trainer.fit(built.module, datamodule=built.datamodule)

    after = model.state_dict()
    frozen = [k for k in before if ft.block_of(k) in ("net.0", "net.1")]
    assert len(frozen) == 7  # conv weight and bias; batch norm weight, bias, running mean/var and count
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["net.4.weight"], after["net.4.weight"])  # the rest trained
    assert not torch.equal(before["net.11.weight"], after["net.11.weight"])

    groups = trainer.optimizers[0].param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 0.002), ("backbone", pytest.approx(0.0002))]
    head_ids = {id(p) for p in groups[0]["params"]}
    named = dict(model.named_parameters())
    assert head_ids == {id(named["net.11.weight"]), id(named["net.11.bias"])}
    assert not named["net.0.weight"].requires_grad and named["net.4.weight"].requires_grad


def test_gradual_unfreezing_releases_the_block_nearest_the_head_each_epoch(pretrained: Path):
    # Blocks of the CNN: net.0 conv, net.1 norm, net.4 conv, net.5 norm, net.9 dense, net.11 head.
    cfg = finetune_cfg(
        pretrained,
        "finetune.freeze=4",
        "finetune.unfreeze_every=1",
        "trainer.max_epochs=3",
        "early_stopping_patience=0",
    )
    built = prepare(cfg)
    before = {k: v.clone() for k, v in built.module.model.state_dict().items()}
    fit(cfg, built)
    after = built.module.model.state_dict()
    assert built.module.frozen == ["net.0", "net.1"]
    for key in ("net.0.weight", "net.1.weight", "net.1.running_mean"):
        assert torch.equal(before[key], after[key]), key
    for key in ("net.4.weight", "net.5.weight"):  # released after epochs 1 and 2
        assert not torch.equal(before[key], after[key]), key


def test_warmup_ramps_every_group_linearly_then_hands_over_to_the_schedule():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    groups = [{"params": params[:1], "lr_scale": 1.0}, {"params": params[1:], "lr_scale": 0.1}]
    optimizer = ft.scaled(lambda p: torch.optim.SGD(p, lr=0.1))(groups)
    from lightning_modules.optim import step

    schedule = ft.with_warmup(lambda o, **k: step(o, **k, step_size=1, gamma=0.5), epochs=1)
    sched = schedule(optimizer, max_epochs=3, steps_per_epoch=4)["scheduler"]
    seen = []
    for _ in range(8):
        seen.append([round(g["lr"], 6) for g in optimizer.param_groups])
        sched.step()
    assert [s[0] for s in seen] == [0.02, 0.04, 0.06, 0.08, 0.05, 0.05, 0.05, 0.05]
    assert all(s[1] == pytest.approx(s[0] / 10) for s in seen)


# -- the transformer: language model, then classifier ---
def test_transformer_pretrained_as_language_model_fine_tunes_as_classifier(tmp_path: Path):
    data = ["data=sequence", "model=transformer", "model.width=32", "model.depth=1", "data.n_samples=1500"]
    data += ["trainer.max_epochs=3"]
    lm = train(compose_cfg([*data, "data.task=lm", *QUIET]), output_dir=tmp_path / "lm")
    assert lm.metrics["val_acc"] > 0.3 and lm.checkpoint  # next token: chance is 1/16
    state = ft.read_weights(lm.checkpoint)
    assert state["head.weight"].shape[0] == 16  # one output per token

    cfg = compose_cfg(
        [*data, *QUIET, "stage=finetune", f"finetune.init_from={lm.checkpoint}", "checkpoint=false"]
    )
    built = prepare(cfg)
    model = built.module.model
    assert model.head.weight.shape[0] == 4  # one output per class: a new head
    found = ft.match(model, state)
    assert sorted(found.mismatched) == ["head.bias", "head.weight"]
    for key in found.loaded:  # everything else comes from the language model
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert len(found.loaded) == len(model.state_dict()) - 2
    result = fit(cfg, built)
    assert result.value > 0.45  # 4 classes: chance is 0.25


def test_shape_mismatch_is_said(pretrained: Path, caplog: pytest.LogCaptureFixture):
    """A 10-class head on the 5-class checkpoint: only the head is re-initialised, and the log says so."""
    caplog.set_level("INFO", logger="sweeplab")
    prepare(finetune_cfg(pretrained, "data.classes=[0,1,2,3,4,5,6,7,8,9]", "finetune.new_head=false"))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("finetune:"))
    assert "re-initialised (shape differs from the checkpoint): net.11.weight (5, 128) -> (10, 128)" in line
    assert "net.11.bias (5,) -> (10,)" in line and "net.9" not in line


# -- bad init_from: one line, exit 2, before training ---
class RunsCode:
    """Unpickling this runs ``touch MARKER``: what a tampered checkpoint would do under weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def assert_one_line_error(proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "epoch" not in proc.stdout + proc.stderr  # nothing trained
    return lines[0]


def test_tampered_checkpoint_is_refused_without_running_its_code(pretrained: Path, workdir: Path):
    marker = workdir / "pwned"
    state = ft.read_weights(pretrained)
    tampered = workdir / "tampered.ckpt"
    torch.save(
        {"state_dict": {**state, "net.0.weight": state["net.0.weight"]}, "extra": RunsCode(marker)}, tampered
    )
    proc = run_cli(
        ["experiment=finetune_digits_5_9", f"finetune.init_from={tampered}", "tracking=off"], workdir
    )
    assert_one_line_error(proc, "refused:", "not a plain weights file")
    assert not marker.exists()
    with pytest.raises(ConfigError, match="refused"):  # the same in-process, as sweeps and workers call it
        prepare(finetune_cfg(tampered))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("finetune.init_from=missing/best.ckpt", ("finetune.init_from=missing/best.ckpt", "no such file")),
        ("model.channels=[8,16]", ("incompatible architecture", "net.0.weight (8, 1, 3, 3)")),
        ("finetune.init_from=null", ("finetune.init_from is required",)),
        ("finetune.freeze=[decoder.*]", ("finetune.freeze", "matches no block", "net.0, net.1")),
        ("finetune.freeze=6", ("finetune.freeze=6", "6 blocks")),
        ("finetune.lr_scale=0", ("finetune.lr_scale=0", "must be > 0")),
    ],
)
def test_bad_finetune_input_fails_with_one_line(pretrained: Path, override: str, words: tuple[str, ...]):
    with pytest.raises(ConfigError) as caught:
        prepare(finetune_cfg(pretrained, override))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.timeout(540)  # two run_cli 240, + 60
def test_missing_file_and_incompatible_architecture_exit_2_from_the_cli(pretrained: Path, workdir: Path):
    missing = run_cli(["experiment=finetune_digits_5_9", "finetune.init_from=nowhere.ckpt"], workdir)
    assert_one_line_error(missing, "finetune.init_from=nowhere.ckpt: no such file")
    wrong = run_cli(
        [
            "experiment=finetune_digits_5_9",
            f"finetune.init_from={pretrained}",
            "model.channels=[8,16]",
            "tracking=off",
        ],
        workdir,
    )
    assert_one_line_error(wrong, "incompatible architecture")
    assert not (workdir / "mlruns" / "mlflow.db").exists() or not _runs(workdir)


# -- MLflow: a run id as init_from, and the lineage ---
def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _runs(workdir: Path) -> list:
    client = _client(workdir)
    exp = client.get_experiment_by_name("sweeplab")
    return client.search_runs([exp.experiment_id], max_results=100) if exp else []


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with two pretraining runs: one with its best checkpoint logged, one without."""
    workdir = tmp_path_factory.mktemp("tracked")
    ids = []
    for extra in ([], ["checkpoint=false"]):
        args = [
            "experiment=pretrain_digits_0_4",
            "trainer.max_epochs=1",
            "data.batch_size=32",
            "hydra.run.dir=mlruns/pre",
            *extra,
        ]
        proc = run_cli(args, workdir)
        assert proc.returncode == 0, proc.stderr
        ids.append(RUN_LINE.search(proc.stdout).group(1))
    return workdir, ids[0], ids[1]


def test_finetune_from_a_run_id_records_its_lineage(tracked: tuple[Path, str, str]):
    workdir, source, _ = tracked
    args = ["experiment=finetune_digits_5_9", f"finetune.init_from={source}", "trainer.max_epochs=2"]
    proc = run_cli(args, workdir)
    assert proc.returncode == 0, proc.stderr
    run_id = RUN_LINE.search(proc.stdout).group(1)
    run = _client(workdir).get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert tags["sweeplab.init_from_run"] == source and tags["sweeplab.init_from"] == source
    assert tags["sweeplab.stage"] == "finetune" and run.info.status == "FINISHED"
    assert params["source.data.classes"] == "[0, 1, 2, 3, 4]" and params["data.classes"] == "[5, 6, 7, 8, 9]"
    assert params["source.experiment"] == "pretrain_digits_0_4"
    assert params["source.trainer.max_epochs"] == "1"


@pytest.mark.timeout(780)  # three run_cli 240, + 60
def test_run_id_without_checkpoint_or_unknown_fails_before_training(tracked: tuple[Path, str, str]):
    workdir, _, bare = tracked
    before = len(_runs(workdir))
    proc = run_cli(["experiment=finetune_digits_5_9", f"finetune.init_from={bare}"], workdir)
    assert_one_line_error(proc, f"finetune.init_from={bare}", "no checkpoints/best.ckpt artifact")
    unknown = "0" * 31 + "1"
    proc = run_cli(["experiment=finetune_digits_5_9", f"finetune.init_from=runs:/{unknown}"], workdir)
    assert_one_line_error(proc, "no such MLflow run")
    proc = run_cli(["experiment=finetune_digits_5_9", f"finetune.init_from={bare}", "tracking=off"], workdir)
    assert_one_line_error(proc, "tracking is off")
    assert len(_runs(workdir)) == before  # no run created, none left RUNNING


def test_optuna_search_over_finetuning_lr_and_lr_scale(tracked: tuple[Path, str, str]):
    workdir, source, _ = tracked
    args = [
        "-m",
        "experiment=finetune_digits_5_9",
        "search=finetune_lr",
        f"finetune.init_from={source}",
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=3",
    ]
    proc = run_cli(args, workdir)
    assert proc.returncode == 0, proc.stderr
    children = [
        r
        for r in _runs(workdir)
        if r.data.tags.get("sweeplab.kind") == "run" and "sweeplab.trial" in r.data.tags
    ]
    assert len(children) == 3
    for child in children:
        assert child.data.tags["sweeplab.init_from_run"] == source
        assert 0.1 <= float(child.data.params["finetune.lr_scale"]) <= 1.0
