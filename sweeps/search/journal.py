"""Check a journal file's records before a command writes to it.

Optuna's ``JournalFileBackend`` appends one JSON record per line. A crash or a full disk inside a write
leaves a partial last line; Optuna then raises ``JSONDecodeError`` on every read, and the records appended
after it make the study unreadable for good. So, before the study is opened: a damaged last record is moved
aside (into a dated ``.damaged`` file beside the journal, never deleted) under Optuna's own journal lock, and
the study goes on from the complete records; a damaged record with records after it is refused, with its
byte offset, and nothing is written. Optuna has no repair of its own (its reader only stops at the damage).

Cheap on every open: a journal whose lines all look like records (``{`` ... ``}``, no NUL bytes: counted
with ``bytes.count``, at memory speed) and whose last line parses is taken as whole; Optuna parses every
line when it opens the journal anyway. Only when that look fails, or Optuna's own load fails
(``thorough``), is each line parsed here, to find the damaged record's offset.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from sweeps.support.errors import ConfigError


def check(url: str, thorough: bool = False) -> None:
    """Refuse a journal damaged before its last record; move a damaged last record aside (one line on
    stderr says so and where). Storage URLs (``...://``) and missing or empty files are left alone.
    ``thorough``: parse every line (Optuna could not load it), not only where the lines look wrong."""
    path = Path(url)
    if "://" in url or not path.is_file() or path.stat().st_size == 0:
        return
    size = path.stat().st_size
    if not thorough and _looks_whole(path, size):
        return
    end = _complete_end(path, url, size)
    if end == size:
        return
    # Another process may be writing the last record right now: look again while holding its lock.
    with _locked(path):
        size = path.stat().st_size
        end = _complete_end(path, url, size)
        if end < size:
            _move_tail(path, url, end, size)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Optuna's own lock of the journal at ``path``, held (the one its ``JournalFileBackend`` takes)."""
    lock = JournalFileSymlinkLock(str(path.resolve()))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _looks_whole(path: Path, size: int) -> bool:
    """Every line a ``{...}`` and the last one a complete record. JSON text holds no raw newline, so each
    newline ends a record: all of them follow a ``}`` and all but the last precede a ``{``."""
    with path.open("rb") as f:
        data = f.read(size)
    lines = data.count(b"\n")
    if not data.endswith(b"\n") or not data.startswith(b"{") or b"\x00" in data:
        return False
    if data.count(b"}\n") != lines or data.count(b"\n{") != lines - 1:
        return False
    return _record(data[data.rfind(b"\n", 0, len(data) - 1) + 1 :])


def _complete_end(path: Path, url: str, size: int) -> int:
    """The byte offset after the last complete record among the first ``size`` bytes; raises ConfigError
    if a damaged record has complete ones after it."""
    damaged_at = None
    for offset, line in _lines(path, size):
        if damaged_at is not None:
            raise ConfigError(
                f"{url} is damaged at byte offset {damaged_at} (not a complete JSON record, and records "
                f"follow it): nothing was written; restore a copy, or keep the records before it with "
                f"`truncate -s {damaged_at} {url}`"
            )
        if not _record(line):
            damaged_at = offset
    return size if damaged_at is None else damaged_at


def _lines(path: Path, size: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of the file's first ``size`` bytes (what later writers add is not read)."""
    offset = 0
    with path.open("rb") as f:
        for line in f:
            line = line[: size - offset]
            if not line:
                return
            yield offset, line
            offset += len(line)


def _record(line: bytes) -> bool:
    """A complete journal record: a JSON object on a line of its own."""
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _move_tail(path: Path, url: str, end: int, size: int) -> None:
    """Copy bytes ``end:size`` to a dated ``.damaged`` file (synced), then cut the journal at ``end``."""
    with path.open("rb") as f:
        f.seek(end)
        tail = f.read(size - end)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = Path(f"{url}.{stamp}.damaged")
    with aside.open("ab") as out:  # "a": two repairs in one second keep both tails
        out.write(tail)
        out.flush()
        os.fsync(out.fileno())
    os.truncate(path, end)
    print(
        f"warning: {url} ended in a damaged record ({size - end} bytes at byte offset {end}, what a crash or "
        f"a full disk inside a write leaves): moved to {aside}; the study goes on from the complete records",
        file=sys.stderr,
    )
