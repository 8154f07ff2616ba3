"""A key nothing reads (``+lrr=0.01``, ``+trainer.max_epoch=5``) and an option that does not exist
(``optimizer=adamm``): one line naming the closest known names, exit code 2, before any run is recorded; a
top-level one before torch is imported."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.support.errors import ConfigError
from sweeps.training.keys import check_additions, early_refusal
from tests.conftest import CONF, cli_env, compose_cfg, run_cli


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["+lrr=0.01"], "did you mean lr?"),
        (["lrr=0.01"], "did you mean lr?"),  # Hydra's own hint would be to add it with "+"
        (["-m", "++weight_decayy=0.1"], "did you mean weight_decay?"),
        (["optimizer=adamm"], "did you mean adam or adamw?"),
        (["-m", "optimizer=adam,sgdd"], "optimizer=sgdd: no such option (did you mean sgd"),
        (["search=lr"], "search=lr: no such option"),
    ],
)
def test_a_top_level_typo_is_named_with_the_closest_known_name(argv: list[str], named: str):
    said = early_refusal(argv, CONF)
    assert said is not None and named in said and "\n" not in said


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "optimizer=adam,sgd", "lr=1e-3,1e-2"],
        ["+experiment=binary_adam"],
        ["++lr=0.1", "+trainer.max_epoch=5"],  # a dotted key: judged once composed
        ["-cd", "/elsewhere", "+lrr=1"],  # another config folder: only Hydra knows its keys
        ["experiment=null"],
        ["verbose=true", "stage=lr_find", "seeds=[1,7,13]", "--cfg", "job"],
    ],
)
def test_what_is_known_passes_the_early_check(argv: list[str]):
    assert early_refusal(argv, CONF) is None


def test_a_dotted_key_nothing_reads_is_refused_once_composed():
    overrides = ["+trainer.max_epoch=5"]
    with pytest.raises(ConfigError, match=r"'trainer\.max_epoch' \(did you mean trainer\.max_epochs"):
        check_additions(overrides, compose_cfg(overrides))
    overrides = ["+objective.metrc=val_loss"]
    with pytest.raises(ConfigError, match=r"did you mean objective\.metric"):
        check_additions(overrides, compose_cfg(overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["+trainer.val_check_interval=1.0"],  # an argument of Lightning's Trainer
        ["+model.bias=false"],  # a constructor's argument (a ``_target_`` node): its build judges it
        ["++trainer.max_epochs=3"],
    ],
)
def test_additions_something_reads_pass(overrides: list[str]):
    cfg = compose_cfg(overrides)
    check_additions(overrides, cfg, ["experiment", "optimizer", "trainer", "model"])


@pytest.mark.slow
def test_a_top_level_typo_exits_2_in_one_line_before_torch_is_imported(tmp_path: Path):
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sweeps.run", "+lrr=0.01"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - began
    said = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert said == ["error: +lrr=0.01: nothing reads the key 'lrr' (did you mean lr?)"]
    assert "torch" not in imported and "mlflow" not in imported
    assert not (tmp_path / "mlruns").exists()
    print(f"refused in {seconds:.2f}s")


@pytest.mark.slow
def test_a_dotted_typo_in_a_sweep_exits_2_with_no_run_recorded(workdir: Path):
    proc = run_cli(["-m", "optimizer=adam,sgd", "+trainer.max_epoch=5"], cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean trainer.max_epochs" in lines[0], proc.stderr
    db = workdir / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        experiments = client.search_experiments()
        assert not client.search_runs([e.experiment_id for e in experiments])


@pytest.mark.slow
def test_a_dotted_typo_in_a_single_run_exits_2(workdir: Path):
    proc = run_cli(["+trainer.max_epoch=5"], cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'trainer.max_epoch' (did you mean trainer.max_epochs" in proc.stderr
    assert not (workdir / "mlruns" / "mlflow.db").exists()


def test_a_new_name_like_no_known_one_is_the_users_own_and_a_secret_in_a_refusal_is_masked():
    overrides = ["+notes.owner=alice", "+ticket=JIRA-12"]  # recorded with the run's params
    check_additions(overrides, compose_cfg(overrides), ["optimizer"])
    overrides = ["+trainr.max_epochs=5"]
    with pytest.raises(ConfigError, match=r"'trainr' \(did you mean trainer"):
        check_additions(overrides, compose_cfg(overrides), ["trainer"])
    overrides = ["+objective.api_token=Canary42"]
    with pytest.raises(ConfigError) as refused:
        check_additions(overrides, compose_cfg(overrides))
    assert "Canary42" not in str(refused.value) and "***" in str(refused.value)
    said = early_refusal(["+lr_fnd.password=Canary43"], CONF)
    assert said is None  # a dotted key: judged once composed
    said = early_refusal(["+seeed=Canary44"], CONF)
    assert said is not None and "did you mean seed or seeds?" in said
