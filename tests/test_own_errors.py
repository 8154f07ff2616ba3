"""A user's module or data that cannot work: one line naming what is wrong, before anything trains. Checked
in-process through ``validate`` (what the sweeper runs on every job before any trains, and ``prepare`` on a
single run), plus the CLI for the exit code and the error found only after the first validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from sweeps.support.errors import ConfigError
from sweeps.training.build import validate
from tests.conftest import CONF, run_cli
from tests.test_own_project import ENV, OWN, TEMPLATE

PL = "module._target_=tests.own_pl.PLClassifier"


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(OWN))


def check(overrides: list[str]) -> tuple[str, str]:
    search = f"hydra.searchpath=[file://{OWN / 'conf'}]"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose(config_name="config", overrides=[search, *overrides]))


MODULE = ["data=mine", "model=mine", "module=mine", "objective.metric=val/acc"]


def test_the_template_module_and_plain_data_pass_the_checks():
    assert check([*MODULE, PL]) == ("val/acc", "max")
    assert check(["data=mine", "model=mine", "loss=mine"]) == ("val_acc", "max")  # task inferred


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["module._target_=tests.own_pl.NoOptimizer"], "NoOptimizer.__init__ takes no `optimizer`"),
        (["module._target_=mypkg.Missing"], "module._target_=mypkg.Missing does not import"),
        (
            ["data._target_=tests.own_pl.NoValData", "~data.n", "~data.batch_size", "~data.seed"],
            "val_dataloader",
        ),
        (
            [
                "data._target_=tests.own_pl.DictData",
                "~data.n",
                "~data.batch_size",
                "~data.seed",
                "module._target_=lightning_modules.module.LitModule",
            ],
            "data.task: DictData does not declare `task`",
        ),
        (["data._target_=mypkg.Nowhere"], "data._target_"),
        (["objective.metric=auto"], "objective.metric=auto: name a metric your module logs"),
    ],
)
def test_bad_user_code_fails_in_one_line(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=None) as err:
        check([*MODULE, PL, *overrides])
    text = str(err.value)
    assert message in text and "\n" not in text, text


def test_data_description_from_config_keys_when_not_inferable():
    base = ["data=mine", "data._target_=tests.own_pl.DictData", "~data.n", "~data.batch_size", "~data.seed"]
    with pytest.raises(ConfigError, match="data.input_shape"):  # the default model needs the input shape
        check([*base, "+data.task=classification", "+data.n_classes=3"])
    given = ["+data.task=classification", "+data.n_classes=3", "+data.input_shape=[16]"]
    assert check([*base, *given]) == ("val_acc", "max")


def test_module_without_optimizer_exits_2_before_a_run(workdir: Path):
    proc = run_cli([*TEMPLATE, "module._target_=tests.own_pl.NoOptimizer"], cwd=workdir, env=ENV)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "takes no `optimizer`" in lines[0], proc.stderr
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_objective_never_logged_names_what_was_logged_and_fails_the_run(workdir: Path):
    args = [*TEMPLATE, PL, "objective.metric=val/accuracy", "trainer.max_epochs=2"]
    proc = run_cli(args, cwd=workdir, env=ENV)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "INFO" not in line]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "objective.metric=val/accuracy" in lines[0], proc.stderr[-2000:]
    assert "logged: val/acc, val/loss" in lines[0]  # the first validation ends the first epoch
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED" and "val/accuracy" in run.data.tags["sweeplab.reason"]
