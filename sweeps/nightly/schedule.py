"""Installing a nightly plan: a crontab entry, or a systemd user timer, that runs
``python -m sweeps.nightly PLAN`` at a time of day and appends its output to ``mlruns/nightly/<plan>.log``.

cron starts jobs from ``/`` with almost no environment (``PATH=/usr/bin:/bin``, no virtual environment), so
the line names everything absolutely: the folder to run in, the project (``PYTHONPATH``) and its interpreter.
The crontab is ``crontab -l`` / ``crontab -`` where that command exists, or a file given with
``--crontab-file`` (or ``SWEEPLAB_CRONTAB_FILE``): machines without cron, and tests.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from sweeps.support.errors import ConfigError
from sweeps.support.processes import ROOT

MARK = "# sweeplab nightly"
UNIT_PREFIX = "sweeplab-nightly-"


def interpreter() -> Path:
    """The project's Python: this virtual environment's (unresolved: its link is what makes it a venv)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix).absolute() / "bin" / "python"
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable).absolute()


def log_path(plan: str, workdir: Path) -> Path:
    return workdir / "mlruns" / "nightly" / f"{plan}.log"


def command_line(plan: str, workdir: Path, options: list[str]) -> str:
    """The shell line cron (``sh -c``) runs: no ``%`` in it, which cron would turn into a newline."""
    log = log_path(plan, workdir)
    run = [str(interpreter()), "-m", "sweeps.nightly", plan, *options]
    line = (
        f"cd {shlex.quote(str(workdir))} && mkdir -p {shlex.quote(str(log.parent))} && "
        f"PYTHONPATH={shlex.quote(str(ROOT))} {shlex.join(run)} >> {shlex.quote(str(log))} 2>&1"
    )
    if "%" in line or "\n" in line:
        raise ConfigError("a crontab line cannot hold '%' or a newline: rename the folder or the option")
    return line


def _clock(at: str) -> tuple[int, int]:
    try:
        hour, minute = (int(p) for p in at.split(":"))
        if 0 <= hour < 24 and 0 <= minute < 60:
            return hour, minute
    except ValueError:
        pass
    raise ConfigError(f"--at {at}: expected a time of day as HH:MM (e.g. 22:00)")


def _marker(plan: str, workdir: Path) -> str:
    return f"{MARK} {plan} {workdir}"


# -- crontab ---
class Crontab:
    """The user's crontab: a file, or the ``crontab`` command."""

    def __init__(self, file: str | None) -> None:
        file = file or os.environ.get("SWEEPLAB_CRONTAB_FILE")
        self.file = Path(file).absolute() if file else None
        if self.file is None and not shutil.which("crontab"):
            raise ConfigError(
                "no crontab command on this machine: install cron (apt-get install cron), "
                "use --systemd, or give --crontab-file PATH"
            )

    @property
    def name(self) -> str:
        return f"crontab file {self.file}" if self.file else "crontab"

    def read(self) -> list[str]:
        if self.file:
            return self.file.read_text().splitlines() if self.file.exists() else []
        done = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        return done.stdout.splitlines() if done.returncode == 0 else []  # 1: "no crontab for user"

    def write(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n" if lines else ""
        if self.file:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text(text)
            return
        done = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True)
        if done.returncode:
            raise ConfigError(f"crontab -: {done.stderr.strip()}")


def _without(lines: list[str], marker: str) -> tuple[list[str], list[str]]:
    """The crontab without our entry (its marker line and the line after it), and the removed lines."""
    kept, removed, skip = [], [], False
    for line in lines:
        if skip:
            removed.append(line)
            skip = False
        elif line == marker:
            removed.append(line)
            skip = True
        else:
            kept.append(line)
    return kept, removed


def install_cron(plan: str, workdir: Path, at: str, options: list[str], file: str | None) -> list[str]:
    hour, minute = _clock(at)
    crontab = Crontab(file)
    marker = _marker(plan, workdir)
    kept, _ = _without(crontab.read(), marker)
    entry = [marker, f"{minute} {hour} * * * {command_line(plan, workdir, options)}"]
    crontab.write([*kept, *entry])
    log_path(plan, workdir).parent.mkdir(parents=True, exist_ok=True)
    return [f"{crontab.name}: installed", *entry]


def uninstall_cron(plan: str, workdir: Path, file: str | None) -> list[str]:
    crontab = Crontab(file)
    kept, removed = _without(crontab.read(), _marker(plan, workdir))
    if not removed:
        return [f"{crontab.name}: no entry for plan {plan} in {workdir}"]
    crontab.write(kept)
    return [f"{crontab.name}: removed", *removed]


def list_cron(file: str | None) -> list[str]:
    try:
        crontab = Crontab(file)
    except ConfigError:
        return []
    lines = crontab.read()
    return [
        f"{line}\n  {lines[i + 1] if i + 1 < len(lines) else ''}"
        for i, line in enumerate(lines)
        if line.startswith(MARK)
    ]


# -- systemd ---
def unit_dir(folder: str | None) -> Path:
    folder = folder or os.environ.get("SWEEPLAB_SYSTEMD_DIR")
    return Path(folder).absolute() if folder else Path.home() / ".config" / "systemd" / "user"


def unit_name(plan: str, workdir: Path) -> str:
    return f"{UNIT_PREFIX}{plan}-{hashlib.sha256(str(workdir).encode()).hexdigest()[:6]}"


def install_systemd(plan: str, workdir: Path, at: str, options: list[str], folder: str | None) -> list[str]:
    hour, minute = _clock(at)
    name, where = unit_name(plan, workdir), unit_dir(folder)
    line = command_line(plan, workdir, options)
    service = (
        f"[Unit]\nDescription=sweeplab nightly plan {plan} in {workdir}\n\n"
        f"[Service]\nType=oneshot\nExecStart=/bin/sh -c {_systemd_quote(line)}\n"
    )
    timer = (
        f"[Unit]\nDescription=sweeplab nightly plan {plan} in {workdir}, at {hour:02d}:{minute:02d}\n\n"
        f"[Timer]\nOnCalendar=*-*-* {hour:02d}:{minute:02d}:00\nUnit={name}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{name}.service").write_text(service)
    (where / f"{name}.timer").write_text(timer)
    log_path(plan, workdir).parent.mkdir(parents=True, exist_ok=True)
    out = [f"wrote {where / (name + '.service')}:", service, f"wrote {where / (name + '.timer')}:", timer]
    return out + _systemctl(["daemon-reload"], ["enable", "--now", f"{name}.timer"], default=folder is None)


def uninstall_systemd(plan: str, workdir: Path, folder: str | None) -> list[str]:
    name, where = unit_name(plan, workdir), unit_dir(folder)
    files = [where / f"{name}.timer", where / f"{name}.service"]
    if not any(f.exists() for f in files):
        return [f"systemd: no timer for plan {plan} in {workdir} ({where})"]
    out = _systemctl(["disable", "--now", f"{name}.timer"], default=folder is None)
    for f in files:
        if f.exists():
            f.unlink()
            out.append(f"removed {f}")
    return out + _systemctl(["daemon-reload"], default=folder is None)


def list_systemd(folder: str | None) -> list[str]:
    where = unit_dir(folder)
    found = []
    for timer in sorted(where.glob(f"{UNIT_PREFIX}*.timer")):
        text = timer.read_text()
        when = next((t.split("=", 1)[1] for t in text.splitlines() if t.startswith("OnCalendar=")), "?")
        found.append(f"{timer} ({when})")
    return found


def _systemd_quote(line: str) -> str:
    """A double-quoted systemd argument (systemd expands ``%`` and ``$`` too: none are in our lines)."""
    return '"' + line.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def _systemctl(*commands: list[str], default: bool) -> list[str]:
    """Tell the user's systemd (only for the default unit folder); say what to run where that fails."""
    shown = " && ".join(shlex.join(["systemctl", "--user", *c]) for c in commands)
    if not default or not shutil.which("systemctl"):
        return [f"to apply: {shown}"]
    for c in commands:
        done = subprocess.run(["systemctl", "--user", *c], capture_output=True, text=True)
        if done.returncode:
            reason = (done.stderr.strip().splitlines() or ["failed"])[0]
            return [f"systemctl --user {' '.join(c)}: {reason}", f"to apply: {shown}"]
    return [f"ran: {shown}"]
