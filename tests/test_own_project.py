"""A user's own project swept by sweeplab: examples/own_project's plain LightningDataModule, network, loss
and lightning-hydra-template-style LightningModule (on ``pytorch_lightning`` and on ``lightning``), through
the real CLI with the project's conf/ on Hydra's search path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ROOT, run_cli
from tests.test_search import children, studies

OWN = ROOT / "examples" / "own_project"
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(OWN)])}
MINE = ["--config-dir", str(OWN / "conf"), "data=mine", "model=mine"]
TEMPLATE = [*MINE, "module=mine", "objective.metric=val/acc", "objective.mode=max"]


def own(args: list[str], workdir: Path, timeout: float = 400, subprocess: bool = False):
    proc = run_cli(args, cwd=workdir, env=ENV, timeout=timeout, subprocess=subprocess)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def history(workdir: Path, run_id: str, metric: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    return [m.value for m in client.get_metric_history(run_id, metric)]


def test_plain_datamodule_user_net_and_loss_grid_of_three_optimizers(workdir: Path):
    args = ["-m", *MINE, "loss=mine", "optimizer=adam,sgd,rmsprop", "trainer.max_epochs=3"]
    own([*args, "early_stopping_patience=0", "checkpoint=false"], workdir)
    runs = children(workdir)
    assert sorted(r.data.params["optimizer"] for r in runs) == ["adam", "rmsprop", "sgd"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["loss"] == "mine" and run.data.params["model"] == "mine"
        assert len(history(workdir, run.info.run_id, "val_acc")) == 3
        assert len(history(workdir, run.info.run_id, "train_loss")) == 3


LR_SEARCH = """# @package _global_
hydra:
  sweeper:
    n_trials: 4
    params:
      lr: choice(0.3, 0.1, 1e-5, 1e12)
"""
LRS = {0.3, 0.1, 1e-5, 1e12}
FAST = ["data.n=200", "trainer.max_epochs=4", "early_stopping_patience=0"]


def sweep_and_prune(workdir: Path, module: str) -> None:
    """An Optuna search over lr (a search preset in the project's conf/) with the median pruner, one lr of
    which diverges."""
    shutil.copytree(OWN / "conf", workdir / "conf")
    (workdir / "conf" / "search").mkdir()
    (workdir / "conf" / "search" / "lrs.yaml").write_text(LR_SEARCH)
    args = ["-m", *TEMPLATE, f"module._target_={module}"]
    args[args.index(str(OWN / "conf"))] = str(workdir / "conf")
    args += ["search=lrs", "optimizer=sgd", "hydra/sweeper/sampler=grid", *FAST]
    args += ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=1"]
    own(args, workdir, timeout=600)
    (study,) = studies(workdir)
    assert {t.params["lr"] for t in study.get_trials()} == LRS  # 4 finished, and the failed one
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and all(max(t.intermediate_values) < 4 for t in pruned)
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.params["lr"] == 1e12
    assert "non-finite loss" in failed.user_attrs["sweeplab.reason"]
    runs = {r.data.tags["sweeplab.trial"]: r for r in children(workdir)}
    assert runs[str(failed.number)].info.status == "FAILED"
    assert "non-finite loss" in runs[str(failed.number)].data.tags["sweeplab.reason"]
    for trial in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        run = runs[str(trial.number)]
        accs = history(workdir, run.info.run_id, "val/acc")
        assert len(accs) == max(trial.intermediate_values)  # per epoch, none after the pruning
        # a pruned epoch stops at its validation, before Lightning totals its training loss
        losses = history(workdir, run.info.run_id, "train/loss")
        assert len(losses) == len(accs) - (trial.state == TrialState.PRUNED)
    best = runs[str(study.best_trial.number)]
    assert best.data.metrics["best_val/acc"] == study.best_value > 0.9
    (ckpt,) = workdir.glob(f"mlruns/multirun/*/*/{study.best_trial.number}/checkpoints/best.ckpt")
    saved = torch.load(ckpt, weights_only=True)  # nothing that needs pickle: no hyperparameters
    assert any(k.startswith("net.") for k in saved["state_dict"]) and "hyper_parameters" not in saved


def test_template_module_on_pytorch_lightning_prunes_checkpoints_and_fails_diverging_lr(workdir: Path):
    sweep_and_prune(workdir, "tests.own_pl.PLClassifier")


def test_template_module_on_lightning_package_sweeps_and_prunes(workdir: Path):
    sweep_and_prune(workdir, "myproject.module.Classifier")


def test_template_module_ddp_grid_two_runs(workdir: Path):
    args = ["-m", *TEMPLATE, "module._target_=tests.own_pl.PLClassifier", "trainer=ddp_cpu"]
    own(
        [*args, "lr=0.05,0.1", "optimizer=sgd", "data.n=200", "trainer.max_epochs=2", "checkpoint=false"],
        workdir,
        subprocess=True,  # DDP: a real process, as in test_ddp
    )
    runs = children(workdir)
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" and r.data.params["trainer.strategy"] == "ddp" for r in runs)
    assert all(len(history(workdir, r.info.run_id, "val/acc")) == 2 for r in runs)
