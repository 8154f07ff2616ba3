"""One trial per GPU: how parallel trial workers split the visible GPUs (sweeps/gpus.py), on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.launch.gpus import assign
from sweeps.support.errors import ConfigError
from tests.conftest import run_cli


def test_each_trial_gets_its_own_gpus():
    assert assign(4, ["0", "1", "2", "3"], per_trial=1) == ["0", "1", "2", "3"]
    assert assign(2, ["0", "1", "2", "3"], per_trial=2) == ["0,1", "2,3"]
    assert assign(2, ["4", "6"], per_trial=1) == ["4", "6"]  # CUDA_VISIBLE_DEVICES already narrowed
    assert assign(3, [], per_trial=1) == [None, None, None]  # no GPUs: leave the environment alone


def test_sharing_a_gpu_only_when_asked():
    assert assign(4, ["0", "1"], per_trial=1, trials_per_gpu=2) == ["0", "1", "0", "1"]
    with pytest.raises(ConfigError, match="need 4 GPUs, 2 visible"):
        assign(4, ["0", "1"], per_trial=1)
    with pytest.raises(ConfigError, match="more than 2 GPUs x hydra.sweeper.trials_per_gpu=2"):
        assign(5, ["0", "1"], per_trial=1, trials_per_gpu=2)
    with pytest.raises(ConfigError, match="needs trainer.devices=1"):
        assign(2, ["0", "1"], per_trial=2, trials_per_gpu=2)


def test_too_few_gpus_is_one_line_before_anything_starts(workdir: Path):
    args = ["-m", "trainer=gpu", "lr=interval(1e-4, 1e-2)", "hydra.sweeper.n_jobs=2"]
    proc = run_cli(args, cwd=workdir, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: hydra.sweeper.n_jobs=2 trials x trainer.devices=1 need 2 GPUs, 1 visible: lower n_jobs, "
        "or share GPUs with hydra.sweeper.trials_per_gpu"
    ]
    assert not (workdir / "mlruns" / "multirun").exists()
