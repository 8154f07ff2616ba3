"""The tags every run carries: host, versions and the git commit of the code that ran."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess

from sweeps.support.processes import ROOT

_env_tags: dict[str, str] = {}


def environment_tags() -> dict[str, str]:
    """Host, versions and the git commit (with whether the tree had uncommitted changes), read once."""
    if not _env_tags:
        versions = {
            f"sweeplab.{name}": _version(name) for name in ("torch", "pytorch-lightning", "mlflow", "optuna")
        }
        _env_tags.update(
            {"sweeplab.host": socket.gethostname(), "sweeplab.python": platform.python_version(), **versions}
        )
        _env_tags.update(git_state())
    return dict(_env_tags)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_state() -> dict[str, str]:
    root = ROOT
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"mlflow.source.git.commit": "unknown"}
    return {"mlflow.source.git.commit": commit, "sweeplab.git_dirty": str(bool(dirty)).lower()}
