"""A scheduler's stop signal ends a trial cleanly: checkpoint, MLflow run KILLED, non-zero exit; the
requeued job resumes from that checkpoint.

Signals: SIGTERM (``scancel``, Slurm's preemption), SIGUSR1 (``sbatch --signal=USR1@90``) and submitit's
own requeue signal (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default). The handler only notes the signal; the
checkpoint is written at the next batch end (a consistent state: never between backward and step) as
``last.ckpt`` in the trial's folder, and ``Preempted`` unwinds the run. After the MLflow run is closed,
``exit`` hands over to the handler that was there before (submitit's: it resubmits the same trial and
exits), or exits with 128 + the signal number.

Where the checkpoint is written: Lightning resumes a run correctly from the end of a training batch that
validation does not follow, or from the end of an epoch, but not from the end of the batch right before
validation, nor from inside validation: those resume in the next epoch, and the epoch's validation (its
Optuna report, its checkpoint) never happens (seen on a real Slurm: a requeued trial without epoch 3). So
a signal noted there is acted on at the end of the epoch (``on_train_epoch_end``), or at the next batch
end after a validation in mid-epoch.

Lightning notes SIGTERM too (its handler, installed after ``on_fit_start``, calls ours as well) and
raises its ``SIGTERMException`` at the next loop boundary, which may come before our batch-end check (seen
on a real Slurm: a requeued job whose run ended "SIGTERMException" with no checkpoint). ``on_exception``
then writes the checkpoint itself, and ``taken_over`` raises ``Preempted`` in place of Lightning's
exception. Lightning would also raise it inside validation; a single-process run holds Lightning's flag
back there (``compat.hold_sigterm``) so that the stop waits for the epoch's end. Under DDP Lightning's flag
is what stops every process at the same batch, so it is left alone.

Why not Lightning's SLURM auto-requeue (its SignalConnector): it acts only when Lightning detects SLURM,
requeues with ``scontrol`` behind submitit's back (two requeues), ignores SIGTERM and knows nothing of the
MLflow run. It is switched off where this runs (``SLURMEnvironment(auto_requeue=False)``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl

from lightning_modules import compat
from sweeps.support import interrupt

LAST = "last.ckpt"


def stop_signals() -> list[signal.Signals]:
    names = {"SIGTERM", "SIGUSR1", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()}
    return [getattr(signal, n) for n in sorted(names) if hasattr(signal, n)]


class Preempted(BaseException):
    """Not an ``Exception``: the run is KILLED (stopped from outside), not FAILED."""

    def __init__(self, signum: int, checkpoint: Path, previous: Any) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {checkpoint}")
        self.signum, self.checkpoint, self.previous = signum, checkpoint, previous

    def exit(self) -> None:
        """Hand over to the handler that was installed before ours, or leave with 128 + the signal; the
        command's own stop (``support.interrupt``) ends it with its one line."""
        if interrupt.ours(self.previous):
            raise interrupt.Interrupted(self.signum, f"checkpoint {self.checkpoint}")
        print(self, file=sys.stderr)
        if callable(self.previous):
            self.previous(self.signum, None)  # submitit's: resubmits this trial and exits
        sys.stdout.flush()
        raise SystemExit(128 + self.signum)


class Preemption(pl.Callback):
    """Notes stop signals while training runs; checkpoints and raises ``Preempted`` at the next batch."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LAST
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.preempted: Preempted | None = None  # Lightning stopped first (``on_exception``): ours instead

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a seed of ``repeats`` (a thread): only the main thread may take signals
        for sig in stop_signals():
            self.previous[sig] = signal.signal(sig, self._note)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, index: int
    ) -> None:
        if self.signum is not None and validates_after(trainer, index):
            self._hold(trainer)  # resumed from here, this epoch's validation would never happen
            return
        self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.signum is None:
            interrupt.check()
        self._hold(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self.signum is None:
            interrupt.check()  # Ctrl-C or SIGHUP (``support.interrupt``): the run stops here
            return
        raise self._stop(trainer)

    def _hold(self, trainer: pl.Trainer) -> None:
        """With a stop noted, keep Lightning from acting on it before the epoch's end (one process only, and
        not in the sanity check: see above)."""
        if self.signum is not None and trainer.world_size == 1 and not trainer.sanity_checking:
            compat.hold_sigterm(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Lightning's own SIGTERM stop (``SIGTERMException``) came before our check: checkpoint here."""
        if self.signum is not None and type(exception).__name__ == "SIGTERMException":
            self.preempted = self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> Preempted:
        """Write the checkpoint (complete on disk), put the handlers back; the exception that stops it."""
        assert self.signum is not None
        trainer.save_checkpoint(self.path)
        io = trainer.strategy.checkpoint_io
        if hasattr(io, "teardown"):
            io.teardown()  # the asynchronous writer: wait until the file is complete
        self._restore()
        previous = self.previous.get(signal.Signals(self.signum))
        return Preempted(self.signum, self.path, previous)


def validates_after(trainer: pl.Trainer, index: int) -> bool:
    """Whether validation may run right after training batch ``index``: the epoch's last batch, or one that
    ``val_check_interval`` (in batches) picks. Erring on yes only moves the stop one batch on."""
    if index + 1 >= trainer.num_training_batches:
        return True
    every = trainer.val_check_batch
    return isinstance(every, int) and every > 0 and (index + 1) % every == 0


@contextlib.contextmanager
def taken_over(stop: Preemption | None) -> Iterator[None]:
    """Around ``trainer.fit``: a stop that Lightning raised first becomes our ``Preempted`` (checkpoint
    written by ``on_exception``)."""
    try:
        yield
    except BaseException as err:
        if stop is not None and stop.preempted is not None and not isinstance(err, Preempted):
            raise stop.preempted from None
        raise


def resume_path(folder: Path | None) -> Path | None:
    """The checkpoint a stopped run of this trial left, if any: training resumes from it."""
    path = folder / LAST if folder is not None else None
    return path if path is not None and path.exists() else None
