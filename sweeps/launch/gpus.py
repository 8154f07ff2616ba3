"""Which GPUs each parallel trial sees: every trial its own devices, never two on one GPU unless asked.

Each trial worker gets ``CUDA_VISIBLE_DEVICES`` when it starts, so a trial (and the DDP processes it starts)
sees only its own GPUs as ``cuda:0..``; Lightning's ``devices=N`` then takes exactly those.
"""

from __future__ import annotations

import os
from typing import Any

from sweeps.support.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def visible() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def assign(n_jobs: int, gpus: list[str], per_trial: int, trials_per_gpu: int = 1) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each of ``n_jobs`` workers (None: no GPUs, leave the environment).

    ``trials_per_gpu`` > 1 shares each GPU between that many one-device trials (small models).
    """
    if not gpus:
        return [None] * n_jobs
    if trials_per_gpu > 1:
        if per_trial != 1:
            raise ConfigError(
                f"hydra.sweeper.trials_per_gpu={trials_per_gpu} shares GPUs between one-device trials: "
                f"it needs trainer.devices=1 (not {per_trial})"
            )
        if n_jobs > len(gpus) * trials_per_gpu:
            raise ConfigError(
                f"hydra.sweeper.n_jobs={n_jobs} is more than {len(gpus)} GPUs x "
                f"hydra.sweeper.trials_per_gpu={trials_per_gpu}"
            )
        return [gpus[i % len(gpus)] for i in range(n_jobs)]
    if n_jobs * per_trial > len(gpus):
        need = n_jobs * per_trial
        raise ConfigError(
            f"hydra.sweeper.n_jobs={n_jobs} trials x trainer.devices={per_trial} need {need} GPUs, "
            f"{len(gpus)} visible: lower n_jobs, or share GPUs with hydra.sweeper.trials_per_gpu"
        )
    return [",".join(gpus[i * per_trial : (i + 1) * per_trial]) for i in range(n_jobs)]


def for_workers(n_jobs: int, trainer: Any, trials_per_gpu: int = 1) -> list[str | None]:
    """The assignment for a sweep's trainer config: GPUs only for GPU trainers, when there are any."""
    if n_jobs < 2 or str(trainer.get("accelerator", "auto")) not in GPU_ACCELERATORS:
        return [None] * n_jobs
    devices = trainer.get("devices", 1)
    per_trial = devices if isinstance(devices, int) and devices > 0 else 1
    return assign(n_jobs, visible(), per_trial, trials_per_gpu)
