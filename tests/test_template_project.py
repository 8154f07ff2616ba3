"""A project in lightning-hydra-template's conventions (tests/lht_project), swept as written: its module
takes ``net``/``optimizer``/``scheduler`` partials and its YAML carries all three, its DataModule says
``num_classes`` (and splits with ``random_split``, so the classes cannot be counted), it logs ``val/acc`` and
``test/acc``. What the command line sweeps is what trains, and what trains is what MLflow records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeps.support.errors import ConfigError
from sweeps.training.reconcile import reconcile
from tests.conftest import CONF, ONE_BATCH, ROOT, cli_env, run_cli
from tests.test_search import children, studies

PROJECT = ROOT / "tests" / "lht_project"
CONFIGS = PROJECT / "configs"
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)])}
TEMPLATE = ["data=blobs", "module=blobs", "objective.metric=val/acc", "objective.mode=max"]
EPOCHS = ["trainer.max_epochs=3", "early_stopping_patience=0"]


def sweep(workdir: Path, args: list[str], configs: Path = CONFIGS, code: int = 0):
    proc = run_cli(["--config-dir", str(configs), *args], cwd=workdir, env=ENV)
    assert proc.returncode == code, proc.stderr[-3000:]
    return proc


def history(workdir: Path, run_id: str, metric: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    return [m.value for m in client.get_metric_history(run_id, metric)]


def without_optimizer(workdir: Path) -> Path:
    """The project's configs with the module YAML's ``optimizer`` removed."""
    configs = shutil.copytree(CONFIGS, workdir / "configs")
    path = configs / "module" / "blobs.yaml"
    node = yaml.safe_load(path.read_text())
    del node["optimizer"]
    path.write_text(yaml.safe_dump(node))
    return configs


@pytest.mark.parametrize("yaml_optimizer", [True, False], ids=["module-yaml-optimizer", "none-in-yaml"])
def test_grid_trains_each_optimizer_and_lr_and_records_what_was_built(workdir: Path, yaml_optimizer: bool):
    configs = CONFIGS if yaml_optimizer else without_optimizer(workdir)
    proc = sweep(workdir, ["-m", *TEMPLATE, "optimizer=adam,sgd", "lr=1e-3,1e-2", *EPOCHS], configs)
    head = next(line for line in proc.stdout.splitlines() if line.startswith("rank"))
    assert head.split()[-5:] == ["val/acc", "test/acc", "epochs", "time", "state"]  # the leaderboard
    compared = run_cli([], cwd=workdir, module="sweeps.compare")
    assert compared.returncode == 0, compared.stderr
    head = next(line for line in compared.stdout.splitlines() if line.startswith("rank"))
    assert "val/acc  test/acc" in head  # sweeps.compare
    runs = children(workdir)
    assert len(runs) == 4
    curves = set()
    for run in runs:
        p = run.data.params
        assert run.info.status == "FINISHED"
        # the built optimizer's class and param group agree with the axes the grid swept
        assert p["trained.optimizer"] == {"adam": "Adam", "sgd": "SGD"}[p["optimizer"]]
        assert float(p["trained.lr"]) == float(p["lr"]) in (1e-3, 1e-2)
        assert p["trained.scheduler"] == "ReduceLROnPlateau" and p["scheduler"] == "module"
        # the module brings its own net: sweeplab's default model and loss were neither built nor recorded
        assert not any(k == "model" or k.startswith(("model.", "loss")) for k in p)
        assert "test/acc" in run.data.metrics and "test/loss" in run.data.metrics
        epoch_times = history(workdir, run.info.run_id, "epoch_time")
        assert len(epoch_times) == 3 and all(t > 0 for t in epoch_times)
        curves.add(tuple(history(workdir, run.info.run_id, "val/loss")))
    assert len(curves) == 4  # four different trainings, not one trained four times


def test_module_yaml_optimizer_trains_unless_the_command_line_says_otherwise(workdir: Path):
    sweep(workdir, [*TEMPLATE, *ONE_BATCH, "lr=0.05"])
    sweep(workdir, [*TEMPLATE, *ONE_BATCH, "module.optimizer.weight_decay=0.25"])
    by_wd = {r.data.params["trained.weight_decay"]: r.data.params for r in children(workdir)}
    cli_lr, yaml_lr = by_wd["0.0"], by_wd["0.25"]
    assert cli_lr["trained.optimizer"] == yaml_lr["trained.optimizer"] == "Adam"  # the module YAML's class
    assert cli_lr["optimizer"] == "module" and cli_lr["module.optimizer._target_"] == "torch.optim.Adam"
    assert float(cli_lr["trained.lr"]) == float(cli_lr["lr"]) == 0.05  # the command line's lr wins
    assert float(yaml_lr["trained.lr"]) == float(yaml_lr["lr"]) == 0.001  # the YAML's, recorded as lr


def test_both_sides_on_the_command_line_exit_2_before_a_run(workdir: Path):
    proc = sweep(workdir, [*TEMPLATE, *ONE_BATCH, "lr=0.05", "module.optimizer.lr=0.1"], code=2)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: module.optimizer.lr and lr on the command line both set the lr")
    assert not (workdir / "mlruns" / "mlflow.db").exists() or not children(workdir)


def test_a_loss_class_without_its_own_init_trains(workdir: Path):
    """``class MeanLoss(nn.Module)`` has ``nn.Module``'s ``*args, **kwargs``: it takes no ``task``."""
    sweep(workdir, ["data=blobs", "loss=mean", "+data.n_classes=3", *ONE_BATCH])
    (run,) = children(workdir)
    assert run.info.status == "FINISHED" and run.data.params["loss._target_"] == "lhtproj.losses.MeanLoss"


# Fast: the rule itself, on composed configs (no training).


@pytest.fixture
def project_on_path(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(PROJECT))


def reconciled(overrides: list[str], base: list[str] = TEMPLATE):
    """sweeplab's config with the project's configs on the search path (as ``--config-dir`` puts them),
    reconciled for ``overrides`` as a job of that command line."""
    search = f"hydra.searchpath=[file://{CONFIGS}]"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", [search, *base, *overrides], return_hydra_config=True)
    return reconcile(cfg, [*base, *overrides], dict(cfg.hydra.runtime.choices))


@pytest.mark.usefixtures("project_on_path")
def test_a_lightning_module_in_the_model_group_is_the_module():
    """The template keeps its module in ``model``: ``model=blobs`` is the module, ``model.*`` its keys."""
    cfg, choices = reconciled(
        ["data=blobs", "model=blobs", "model.optimizer.lr=0.2", "+optimized_metric=x/y"], []
    )
    assert cfg.module._target_ == "lhtproj.module.BlobsLitModule" and choices["module"] == "blobs"
    assert "model" not in cfg and "model" not in choices and "loss" not in cfg
    assert cfg.module.optimizer.lr == cfg.lr == 0.2 and choices["optimizer"] == "module"
    assert cfg.objective.metric == "x/y"  # optimized_metric, as a search file for Optuna's sweeper says
    with pytest.raises(ConfigError, match="model.optimizer.lr and lr"):
        reconciled(["data=blobs", "model=blobs", "model.optimizer.lr=0.2", "lr=0.1"], [])


@pytest.mark.usefixtures("project_on_path")
@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ([], {"optimizer": "module", "lr": 0.001, "scheduler": "module", "model": None, "loss": None}),
        (["lr=0.1"], {"optimizer": "module", "lr": 0.1, "module.optimizer.lr": 0.1}),
        (["optimizer=sgd"], {"optimizer": "sgd", "lr": 0.001, "module.optimizer": None}),
        (["scheduler=step"], {"scheduler": "step", "module.scheduler": None}),
        (["model=mlp"], {"model": "mlp", "module.net": None}),
    ],
)
def test_command_line_axes_win_over_the_module_yaml(overrides: list[str], expect: dict):
    cfg, choices = reconciled(overrides)
    for key, value in expect.items():
        if key in ("optimizer", "scheduler", "model", "loss"):
            assert choices.get(key) == value, key
        else:
            assert OmegaConf.select(cfg, key) == value, key
    assert "loss" not in cfg and "loss" not in choices  # the module takes no loss_fn: not built
    if "model=mlp" not in overrides:
        assert "model" not in cfg and "model" not in choices  # the module brings its own net


@pytest.mark.usefixtures("project_on_path")
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["lr=0.1", "module.optimizer.lr=0.2"], ("module.optimizer.lr", "lr")),
        (["optimizer=sgd", "module.optimizer._target_=torch.optim.SGD"], ("module.optimizer", "optimizer")),
        (["model=mlp", "module.net.lin1_size=8"], ("module.net.lin1_size", "model")),
        (["loss=mean"], ("loss", "loss_fn")),
    ],
)
def test_irreconcilable_settings_name_both_places(overrides: list[str], named: tuple[str, str]):
    with pytest.raises(ConfigError) as err:
        reconciled(overrides)
    assert all(n in str(err.value) for n in named), str(err.value)


def test_the_stored_command_pasted_into_a_shell_resumes_the_same_study(workdir: Path):
    args = ["-m", *TEMPLATE, *ONE_BATCH, "module.optimizer.lr=tag(log, interval(1e-4, 1e-1))"]
    args += ["hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=pasted"]
    args += ["+notes.api_key=s3cret"]  # a key of the user's own (``keys``), a secret to mask
    sweep(workdir, args)
    (study,) = studies(workdir)
    line = study.user_attrs["sweeplab.command"]
    assert "s3cret" not in line and "--config-dir" in line and "hydra.sweeper.study_name=pasted" in line
    (parent,) = [r for r in runs_of(workdir) if r.data.tags.get("sweeplab.kind") == "sweep"]
    assert parent.data.tags["sweeplab.command"] == line
    (child,) = children(workdir)[:1]
    assert child.data.tags["sweeplab.command"].startswith(line.split(" -m ")[0])  # program, config folder
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.run(
        line, shell=True, cwd=workdir, env=cli_env({**ENV, "PATH": path}), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (again,) = studies(workdir)  # the same study: resumed (it has its 2 trials), not a new one
    assert again.study_name == "pasted" and len(again.get_trials()) == 2


def runs_of(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("sweeplab").experiment_id])


SEARCHED = {"model.optimizer.lr", "data.batch_size", "model.net.lin1_size"}


def test_an_optuna_sweeper_search_file_runs_as_written_in_sweeplabs_app(workdir: Path):
    """lightning-hydra-template's layout as it is: its module in the ``model`` group (``model=blobs``), its
    ``hparams_search`` file (``override /hydra/sweeper: optuna``, the plugin's ``_target_``,
    ``optimized_metric``, ``params`` on ``model.optimizer.lr``), no ``-m`` (the file sets MULTIRUN)."""
    sweep(workdir, ["data=blobs", "model=blobs", "hparams_search=blobs_optuna", "trainer.max_epochs=2"])
    (study,) = studies(workdir)
    trials = study.get_trials()
    assert len(trials) == 4 and all(set(t.params) == SEARCHED for t in trials)
    runs = {int(r.data.tags["sweeplab.trial"]): r for r in children(workdir)}
    for trial in trials:
        p = runs[trial.number].data.params
        assert float(p["trained.lr"]) == trial.params["model.optimizer.lr"]  # the key the file searches
        assert int(p["module.net.lin1_size"]) == trial.params["model.net.lin1_size"]
        assert int(p["data.batch_size"]) == trial.params["data.batch_size"]
        assert p["objective.metric"] == "val/acc_best" and "model" not in p  # optimized_metric
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned  # seeded: trial 3 is pruned; its run says how many epochs it trained
    for trial in pruned:
        assert runs[trial.number].data.metrics["epochs"] == max(trial.intermediate_values)


def test_an_optuna_sweeper_search_file_runs_as_written_in_the_users_own_app(workdir: Path):
    """The user's own ``@hydra.main`` app (the template's train.py) with sweeplab's sweeper: its config has
    ``data`` and ``trainer``-like keys, and is still its own (no sweeplab checks, no ``objective``)."""
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "train.py"), "hparams_search=blobs_optuna"],
        cwd=workdir,
        env=cli_env(ENV),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    assert study.direction.name == "MAXIMIZE"
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4 and all(set(t.params) == SEARCHED for t in trials)
    for trial in trials:
        (job,) = workdir.glob(f"multirun/*/*/{trial.number}/trained.json")
        trained = json.loads(job.read_text())
        assert trained["lr"] == trial.params["model.optimizer.lr"]
        assert trained["lin1_size"] == trial.params["model.net.lin1_size"]
        assert trained["batch_size"] == trial.params["data.batch_size"]
    line = study.user_attrs["sweeplab.command"]
    assert line.startswith(f"python {PROJECT / 'train.py'} ") and "hparams_search=blobs_optuna" in line
