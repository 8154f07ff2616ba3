"""The command a user ran, as a line that runs it again: the program (``python -m sweeps.run``, or their own
``python train.py``), Hydra's options that find the config (``--config-dir``, ``--config-path``,
``--config-name``) and every override, ``hydra.sweeper.*`` included, with secrets masked.

Read from ``sys.argv`` in the process the user started; the processes that process starts (trial workers,
DDP ranks, submitit jobs) have argv of their own, so the sweep leaves the invocation in their environment
(``remember``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from sweeps.support.secrets import redact_override

ENV = "SWEEPLAB_INVOCATION"
# Hydra's options that take a value (as separate word or after ``=``), and the flags to leave out
# (``-m``: the caller says whether the line is a sweep).
CONFIG_OPTIONS = {"--config-dir": "-cd", "--config-path": "-cp", "--config-name": "-cn"}
SHORT = {short: long for long, short in CONFIG_OPTIONS.items()}
FLAGS = ("-m", "--multirun")
PYTHON = Path(sys.executable).name


def _program(argv0: str) -> list[str]:
    """``python -m MODULE`` where the process ran a module, else ``python SCRIPT`` as typed."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.origin and Path(spec.origin).resolve() == Path(argv0).resolve():
        return [PYTHON, "-m", spec.name.removesuffix(".__main__")]
    here = Path(argv0).resolve()
    if here.suffix == ".py" and Path(__file__).resolve().parents[1] in here.parents:  # one of sweeplab's
        root = Path(__file__).resolve().parents[2]
        return [PYTHON, "-m", ".".join(here.relative_to(root).with_suffix("").parts)]
    return [PYTHON, argv0]


def _config_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hydra's config options (a config folder made absolute, so the line runs from anywhere) and the rest."""
    options: list[str] = []
    rest: list[str] = []
    words = iter(args)
    for word in words:
        name, sep, value = word.partition("=")
        name = SHORT.get(name, name)
        if name in CONFIG_OPTIONS:
            value = value if sep else next(words, "")
            if name == "--config-dir":
                value = str(Path(value).resolve())
            options += [name, value]
        elif word not in FLAGS:
            rest.append(word)
    return options, rest


def _own() -> dict[str, list[str]]:
    options, overrides = _config_options(sys.argv[1:])
    return {"program": _program(sys.argv[0]), "options": options, "overrides": overrides}


def _ancestor(pid: int) -> bool:
    """Whether ``pid`` started this process (directly or not): the environment outlives the command that
    wrote it there (a process that ran a sweep in itself, and anything it starts later)."""
    import psutil

    try:
        return any(parent.pid == pid for parent in psutil.Process().parents())
    except psutil.Error:
        return False


def invocation() -> dict[str, list[str]]:
    """This command's program, config options and overrides: ``remember``'s where the sweep that started
    this process left them, else this process's own."""
    saved = json.loads(os.environ.get(ENV) or "{}")
    if saved.get("pid") and _ancestor(int(saved["pid"])):
        return {k: list(v) for k, v in saved.items() if k != "pid"}
    return _own()


def remember() -> None:
    """Leave this command's invocation for the processes it starts (their own argv is something else)."""
    os.environ[ENV] = json.dumps({**_own(), "pid": os.getpid()})


def command(overrides: Sequence[str] | None = None, multirun: bool = False) -> str:
    """The line that runs this command again: with ``overrides`` (a job's), those in place of the
    command's own; secrets masked."""
    said = invocation()
    words = [*said["program"], *said["options"], *(["-m"] if multirun else [])]
    words += [redact_override(o) for o in (said["overrides"] if overrides is None else overrides)]
    return shlex.join(words)
