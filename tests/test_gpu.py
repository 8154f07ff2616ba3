"""The GPU paths: a sweep on the GPU in bf16 mixed precision (skipped without a CUDA GPU), and bench/gpu.py's
own code path, run tiny on the CPU so that the script cannot rot where CI has no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, run_cli

GPUS = torch.cuda.device_count()


@pytest.mark.timeout(660)  # run_cli 600, + 60
@pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU")
def test_two_trial_sweep_on_gpu_in_bf16(workdir: Path):
    n_jobs = 2 if GPUS >= 2 else 1
    args = [
        "-m",
        "trainer=gpu",
        "precision=bf16-mixed",
        "lr=tag(log, interval(1e-4, 1e-2))",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "trainer.max_epochs=3",
    ]
    # A real process: CUDA, once initialised, would stay in the test process (and no GPU here to try it).
    proc = run_cli(args, cwd=workdir, timeout=600, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.params["trainer.accelerator"] == "gpu" for r in runs)
    assert all(r.data.params["precision"] == "bf16-mixed" for r in runs)
    assert all(r.data.metrics["best_val_acc"] > 0.5 for r in runs)
    if n_jobs == 2:  # one trial per GPU
        devices = [r.data.tags["sweeplab.cuda_visible_devices"] for r in runs]
        assert len(set(devices)) == 2, devices


@pytest.mark.timeout(480)  # the script's 420, + 60
def test_gpu_bench_script_runs_tiny_on_cpu():
    """Both cases: the transformer LM and the BERT fine-tuning (fp32, bf16-mixed, bf16-mixed + LoRA)."""
    command = [sys.executable, "bench/gpu.py", "--smoke", "--steps", "3", "--warmup", "1", "--rounds", "1"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("device: CPU (smoke run)")
    split = next(i for i, line in enumerate(lines) if line.startswith("fine-tuning:"))
    assert "tiny BERT config" in lines[split]
    check_table(lines[:split], {"32-true", "bf16-mixed"})
    rows = check_table(lines[split:], {"32-true", "bf16-mixed", "bf16-mixed+lora"})
    assert all(float(r[5]) == float(r[6]) == 0.0 for r in rows.values())  # peak GPU memory: none on CPU


def check_table(lines: list[str], arms: set[str]) -> dict[str, list[str]]:
    """The rates are positive and the ratio columns say what the rate columns measured."""
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("32-true", "bf16-mixed"))}
    assert set(rows) == arms
    rates = {k: (float(r[1].replace(",", "")), float(r[2].replace(",", ""))) for k, r in rows.items()}
    assert all(hand > 0 and ours > 0 for hand, ours in rates.values())
    fp32 = rates["32-true"][1]
    for arm, (hand, ours) in rates.items():
        ratio, vs_fp32 = float(rows[arm][3]), float(rows[arm][4])
        assert ratio == pytest.approx(ours / hand, rel=2e-3, abs=1e-3), arm  # rates are rounded
        assert vs_fp32 == pytest.approx(ours / fp32, rel=2e-3, abs=6e-3), arm
    return rows
