"""What ``sweeps.search.journal.check`` costs on every open of a large journal: the quick look (each line a
``{...}``, counted with ``bytes.count``) against the thorough check (every line parsed: what each open did
before, and what still runs when Optuna's own load fails), beside Optuna's own load of the same journal.

The records are real: 100 trials of one study written by Optuna's ``JournalStorage`` (2 params, 10
intermediate values each); their lines are then repeated until the file reaches ``--mb`` megabytes (writing
that many through Optuna takes minutes: each write re-reads the journal's new records).

    .venv/bin/python bench/journal_check.py [--mb 25] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.search.journal import check  # noqa: E402


def make_journal(path: Path, megabytes: float) -> int:
    """A journal of about ``megabytes``; returns its record count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(path))), study_name="bench")
    for _ in range(100):
        trial = study.ask()
        lr, beta = trial.suggest_float("lr", 1e-4, 1e-1, log=True), trial.suggest_float("beta", 0.8, 0.99)
        for step in range(10):
            trial.report(lr * beta / (step + 1), step)
        study.tell(trial, lr * beta)
    first, *records = path.read_bytes().splitlines(keepends=True)
    block = b"".join(records)
    with path.open("ab") as f:
        for _ in range(int(megabytes * 1e6 / len(block))):
            f.write(block)
    return path.read_bytes().count(b"\n")


def timed(fn: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "optuna.journal"
        lines = make_journal(path, args.mb)
        print(f"journal: {path.stat().st_size / 1e6:.1f} MB, {lines} records")
        quick = timed(lambda: check(str(path)), args.rounds)
        thorough = timed(lambda: check(str(path), thorough=True), args.rounds)
        read = timed(lambda: sum(1 for _ in JournalFileBackend(str(path)).read_logs(0)), args.rounds)
        print(f"check (quick, every open): {quick:.3f} s (median of {args.rounds})")
        print(f"check (thorough, every open before): {thorough:.3f} s")
        print(f"Optuna's own read of the records (JournalFileBackend.read_logs): {read:.3f} s")


if __name__ == "__main__":
    main()
