"""Each compat module's private API, used for real against the installed libraries (a tiny Trainer.fit, a
real study, a real exit): these fail when a library changes what the project relies on."""

from __future__ import annotations

import errno
import inspect
import io
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import pytorch_lightning as pl
import torch
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from lightning_modules import compat
from sweeps.support import fulldisk, optuna_compat, stdlib_compat

ROOT = Path(__file__).resolve().parents[1]


class ManualSteps(pl.LightningModule):
    """Steps the plain torch optimizer between Lightning's step hooks, as ``LitModule``'s direct path does."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(1, 1)
        self.hook_names: list[str | None] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.hook_names.append(self.__dict__.get(compat.FX_NAME))
        lightning_opt = self.optimizers()
        opt = lightning_opt.optimizer  # type: ignore[union-attr]
        opt.zero_grad()
        self.manual_backward(self.layer(batch).sum())
        compat.step_with_hooks(lightning_opt, opt.step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_counts_plain_steps_in_its_step_hooks_and_names_the_running_hook(tmp_path: Path):
    module = ManualSteps()
    before = module.layer.weight.detach().clone()
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = pl.Trainer(
        max_steps=2, max_epochs=1, enable_model_summary=False, default_root_dir=tmp_path, **quiet
    )
    trainer.fit(module, torch.utils.data.DataLoader(torch.ones(4, 1)))
    assert trainer.global_step == 2  # counted in the hooks: without them 0, and max_steps would not stop it
    assert module.hook_names == ["training_step", "training_step"]  # stopped after 2 of the 4 batches
    assert not torch.equal(module.layer.weight, before)  # the plain optimizer stepped


EXIT = """
import atexit, sys
from sweeps.support.stdlib_compat import exit_now

class Teardown:
    def __del__(self):
        print("torn down", flush=True)

kept = Teardown()
atexit.register(print, "registered first, ran last")
atexit.register(print, "ran first")
sys.stdout.write("buffered ")
sys.stderr.write("buffered error")
code = sys.argv[1]
sys.exit(3) if code == "plain" else exit_now(int(code) if code.isdigit() else code)
"""


def exit_with(code: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", EXIT, code]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_fast_exit_runs_the_exit_handlers_flushes_and_keeps_the_code_without_teardown():
    plain = exit_with("plain")  # Python's own exit tears the module down
    assert plain.returncode == 3 and "torn down" in plain.stdout
    done = exit_with("3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered ran first\nregistered first, ran last\n"  # no teardown
    assert done.stderr == "buffered error"
    words = exit_with("error: no")
    assert words.returncode == 1 and words.stderr == "buffered errorerror: no\n"


FORK = """
import atexit, os, sys
from sweeps.support.stdlib_compat import leave_fork

atexit.register(print, "parent's exit handler")
pid = os.fork()
if pid == 0:
    sys.stdout.write("child buffered ")
    leave_fork(5)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_leaves_with_its_output_and_code_and_without_its_parents_exit_handlers():
    """``stdlib_compat.leave_fork``: what the child printed is written once, its code kept, and the exit
    handler it inherited runs only in the parent."""
    done = subprocess.run(
        [sys.executable, "-c", FORK], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "child buffered child exit 5\nparent's exit handler\n", done.stdout


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_log_line_lost_to_a_full_disk_says_nothing_and_any_other_logging_error_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(logging.Handler, "handleError", stdlib_compat._plain_handle_error)  # restored after
    monkeypatch.setattr(logging, "raiseExceptions", True)
    handler = logging.StreamHandler(FullDisk())
    full = logging.LogRecord("sweeplab", logging.INFO, __file__, 1, "a line", None, None)
    handler.handle(full)
    assert "--- Logging error ---" in capsys.readouterr().err  # what Python prints without the hook
    stdlib_compat.drop_logging_errors(fulldisk.is_full)
    handler.handle(full)
    assert capsys.readouterr().err == ""
    handler.handle(logging.LogRecord("sweeplab", logging.INFO, __file__, 1, "%d", ("x",), None))
    assert "--- Logging error ---" in capsys.readouterr().err  # a format error is no full disk


def test_a_trial_asked_in_one_process_is_suggested_reported_and_pruned_in_another(tmp_path: Path):
    journal = str(tmp_path / "optuna.journal")
    pruner = optuna.pruners.ThresholdPruner(upper=1.0)
    asker = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)))
    asked = asker.ask({"x": FloatDistribution(0.0, 1.0)})
    storage = JournalStorage(JournalFileBackend(journal))  # the other process's own view of the study
    other = optuna.load_study(study_name="s", storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("s"), asked.number
    )
    trial = optuna_compat.trial(other, trial_id)
    assert trial.number == asked.number and trial.suggest_float("x", 0.0, 1.0) == asked.params["x"]
    trial.report(0.5, 1)
    assert not trial.should_prune()
    trial.report(2.0, 2)
    assert trial.should_prune()
    (seen,) = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal))).trials
    assert seen.intermediate_values == {1: 0.5, 2: 2.0}


def recording_storage(calls: list[str]) -> type[RDBStorage]:
    """An ``RDBStorage`` that notes each method called on it from outside (not its calls to itself)."""
    depth = threading.local()

    def recording(name: str) -> Any:
        plain = getattr(RDBStorage, name)

        def method(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
            if not getattr(depth, "n", 0):
                calls.append(name)
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return plain(self, *args, **kwargs)
            finally:
                depth.n -= 1

        return method

    names = [n for n in dir(RDBStorage) if inspect.isfunction(inspect.getattr_static(RDBStorage, n))]
    return type("Recording", (RDBStorage,), {n: recording(n) for n in names if not n.startswith("__")})


def test_the_private_storage_methods_a_study_calls_are_those_the_compat_module_names(tmp_path: Path):
    calls: list[str] = []
    storage = recording_storage(calls)(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=60)
    calls.clear()
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    assert study.best_trial.number in (0, 1) and len(study.trials) == 2
    optuna.storages.fail_stale_trials(study)
    assert {c for c in calls if c.startswith("_")} == set(optuna_compat.CACHE_CALLS)
    stand_in = type("StandIn", (RDBStorage,), {})
    optuna_compat.override_cache_calls(stand_in, lambda name: f"retrying {name}")
    assert [vars(stand_in).get(n) for n in optuna_compat.CACHE_CALLS] == [
        f"retrying {n}" for n in optuna_compat.CACHE_CALLS
    ]  # each one still a method of this Optuna's RDBStorage


def test_host_reads_counts_item_float_and_bool_of_a_tensor():
    """``compat.HostReads`` (torch's TorchDispatchMode) sees every host read of a tensor, and only those."""
    with compat.HostReads() as reads:
        t = torch.arange(3.0) * 2
        t.sum().item(), float(t[1]), bool(t[0]), int(t.max())
        t.add_(1)
    assert reads.devices == ["cpu"] * 4


def test_compiled_frames_counts_what_torch_compile_compiles():
    """``compat.compiled_frames`` (Dynamo's counters) grows by one for a newly compiled function."""
    before = compat.compiled_frames()
    torch.compile(lambda t: t * 2 + 1, backend="eager")(torch.ones(2))
    assert compat.compiled_frames() == before + 1


class TermThenHold(pl.Callback):
    """SIGTERM in the first batch; at its end Lightning's flag is held (``compat.hold_sigterm``)."""

    def __init__(self) -> None:
        self.held: list[bool] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == 1:
            self.held.append(compat.hold_sigterm(trainer))


def test_hold_sigterm_clears_the_flag_by_which_lightning_stops_a_run(tmp_path: Path):
    """Without the hold, Lightning raises ``SIGTERMException`` after the first batch; with it, the run
    trains all its batches."""
    hold = TermThenHold()
    before = signal.getsignal(signal.SIGTERM)
    try:
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[hold],
            enable_model_summary=False,
            default_root_dir=tmp_path,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        trainer.fit(ManualSteps(), torch.utils.data.DataLoader(torch.ones(4, 1)))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert hold.held == [True] and trainer.global_step == 4
