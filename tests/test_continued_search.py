"""A seeded search continued by the same command with a larger ``n_trials`` proposes new points: the
sampler of a continuing command draws from the seed plus the trials the study holds, while a search from
scratch stays as reproducible as its seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ONE_BATCH, run_cli
from tests.test_search import studies

SEARCH = ["-m", "lr=tag(log, interval(1e-4, 1e-1))", *ONE_BATCH, "tracking=off"]


def lrs(workdir: Path) -> list[float]:
    (study,) = studies(workdir)
    return [t.params["lr"] for t in study.get_trials()]


def search(workdir: Path, seed: int, n_trials: int) -> None:
    args = [*SEARCH, f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.n_trials={n_trials}"]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.timeout(900)
def test_continuing_a_seeded_search_proposes_no_point_again(tmp_path: Path, workdir: Path):
    for seed in range(5):
        folder = workdir / f"seed{seed}"
        folder.mkdir()
        search(folder, seed, 3)
        first = lrs(folder)
        search(folder, seed, 6)
        both = lrs(folder)
        assert both[:3] == first and len(both) == 6
        assert len(set(both)) == 6, (seed, both)  # 6 distinct learning rates: none proposed again
    again = tmp_path / "again"
    again.mkdir()
    search(again, 0, 3)
    assert lrs(again) == lrs(workdir / "seed0")[:3]  # from scratch, the same seed, the same points
