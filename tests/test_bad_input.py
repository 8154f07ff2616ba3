"""Bad input in general: for every numeric key of every option of every config group, 0, a negative number,
NaN and a wrong type either pass the checks or fail them with one ConfigError line; nothing else escapes.

In-process through ``validate`` (what a sweep runs on every job before any trains; ``prepare``, which a
single run calls, adds Lightning's own Trainer checks, so the trainer group goes through it), plus real
commands for the cases that used to leave a traceback after their run was created.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from sweeps.support.errors import ConfigError
from sweeps.training.build import validate
from sweeps.training.fit import prepare
from tests.conftest import CONF, ONE_BATCH, run_cli

GROUPS = ("data", "model", "loss", "optimizer", "scheduler", "trainer")
TOP = ("lr", "weight_decay", "l1", "grad_clip", "early_stopping_patience", "seed")
VALUES = {"0": 0, "-1": -1, "nan": math.nan, "abc": "abc"}  # as Hydra parses them from the command line


def numeric_keys(node: dict[str, Any], prefix: str) -> list[str]:
    keys = []
    for key, value in node.items():
        if isinstance(value, dict):
            keys += numeric_keys(value, f"{prefix}.{key}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            keys.append(f"{prefix}.{key}")
    return keys


def cases() -> list[tuple[list[str], str]]:
    found: list[tuple[list[str], str]] = [([], key) for key in TOP]
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            assert isinstance(raw, dict)
            found += [([f"{group}={path.stem}"], key) for key in numeric_keys(raw, group)]
    return found


def test_every_numeric_key_passes_or_fails_in_one_line():
    """Each group option is composed once (Hydra's compose costs ~0.4 s); each bad value is then set as the
    command line would set it (``nan`` a float, ``abc`` a string)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = {
            tuple(choice): compose(config_name="config", overrides=[*choice, *ONE_BATCH])
            for choice in {tuple(c) for c, _ in cases()}
        }
    cache: dict[str, Any] = {}
    escaped = []
    tried = 0
    for choice, key in cases():
        for value in VALUES:
            cfg = copy.deepcopy(base[tuple(choice)])
            OmegaConf.update(cfg, key, VALUES[value], merge=False)
            tried += 1
            try:
                prepare(cfg) if key.startswith("trainer") else validate(cfg, cache)
            except ConfigError as err:
                assert "\n" not in str(err), (choice, key, value)
            except Exception as err:  # noqa: BLE001 - what the test is looking for
                line = f"{' '.join(choice)} {key}={value}: {type(err).__name__}: {err}"
                escaped.append(line.splitlines()[0])
    assert tried > 300
    assert not escaped, "\n".join(escaped)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer=gpu"], "trainer: "),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0"),
    ],
)
def test_bad_values_that_used_to_fail_after_their_run_began(workdir: Path, args: list[str], message: str):
    proc = run_cli([*args, "trainer.max_epochs=2"], cwd=workdir)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not list(workdir.glob("mlruns/outputs/*/*"))  # no half-written run folder
