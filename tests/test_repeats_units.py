"""Repeats without training: the members of a configuration, their configs, the lockstep of their threads,
cross-validation folds, and the leaderboard of repeated configurations."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch

from lightning_modules.data import BreastCancerDataModule
from sweeps.outcome import Outcome, Pruned, State
from sweeps.support.errors import ConfigError
from sweeps.tracking.leaderboard import Row, markdown, rank, summary, table, verdicts
from sweeps.training import folds, seeds
from sweeps.training.checks import check_config
from sweeps.training.lockstep import Lockstep, random_state
from tests.conftest import compose_cfg


def test_repeats_are_consecutive_seeds_and_keep_the_split():
    cfg = compose_cfg(["repeats=3", "seed=7"])
    members = seeds.check(cfg)
    assert [m.label for m in members] == ["seed=7", "seed=8", "seed=9"]
    second = seeds.config_of(cfg, members[1])
    assert second.seed == 8 and second.data.seed == 7 and second.repeats == 1
    assert seeds.overrides_of(["repeats=3", "lr=0.1"], cfg, members[1]) == [
        "lr=0.1",
        "seed=8",
        "data.seed=7",
        "+data.shuffle_seed=8",
    ]
    varied = compose_cfg(["seeds=[3,5]", "repeats_vary_split=true"])
    assert [seeds.config_of(varied, m).data.seed for m in seeds.check(varied)] == [3, 5]


def test_a_plain_run_has_no_members_and_cv_has_folds():
    assert seeds.check(compose_cfg()) == [] and not seeds.repeated(compose_cfg())
    members = seeds.check(compose_cfg(["cv=5", "data=breast_cancer"]))
    assert [m.label for m in members][::4] == ["fold=1/5", "fold=5/5"] and members[0].key == "fold1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["repeats=0"], "repeats=0 must be >= 1"),
        (["cv=1"], "cv=1: allowed are 0 (off) or a number of folds >= 2"),
        (["seeds=[1,1]"], "seeds=[1, 1]: give distinct whole numbers"),
        (["seeds=[1,2]", "repeats=3"], "repeats=3 and seeds=[1, 2]: give one of them"),
        (["cv=3", "repeats=2"], "cv=3 with repeats or seeds"),
        (["repeats=2", "trainer=ddp_cpu"], "not with a DDP trainer"),
    ],
)
def test_bad_repeats_fail_the_config_check_naming_the_key(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_cfg(overrides))


def _seed(lockstep: Lockstep, i: int, epochs: int, values: list[float], log: list, running: list) -> None:
    """A seed's thread as Lightning would drive it: a turn per epoch, its value recorded at its end."""
    try:
        lockstep.wait_turn(i)
        for epoch in range(1, epochs + 1):
            if epoch > 1:
                lockstep.pass_turn(i)
                lockstep.wait_turn(i)
            running.append(i)
            assert running == [i], "two seeds ran at once"
            torch.rand(1)  # each seed draws from its own random state
            time.sleep(0.01)
            log.append((i, epoch))
            lockstep.record(epoch, values[epoch - 1])
            running.remove(i)
    except Pruned:
        log.append((i, "pruned"))
    finally:
        lockstep.leave(i)


def _run(lockstep: Lockstep, epochs: list[int], values: list[list[float]]) -> list:
    log: list = []
    running: list = []
    threads = [
        threading.Thread(target=_seed, args=(lockstep, i, epochs[i], values[i], log, running))
        for i in range(len(epochs))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return log


def test_lockstep_takes_turns_and_reports_the_mean_of_each_epoch():
    torch.manual_seed(1)
    states = [random_state()] * 3
    reports: list = []
    lockstep = Lockstep(states, "val_acc", lambda e, m: reports.append((e, m)) or False)
    # The third seed stops early after epoch 2 (early stopping): later means are over the other two.
    log = _run(lockstep, [3, 3, 2], [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5], [0.5, 0.6, 0.9]])
    assert log == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2), (0, 3), (1, 3)]
    assert reports == [(1, pytest.approx(0.3)), (2, pytest.approx(0.4)), (3, pytest.approx(0.4))]


def test_a_pruned_round_stops_every_seed_at_its_next_turn():
    states = [random_state()] * 3
    lockstep = Lockstep(states, "val_acc", lambda epoch, mean: epoch == 2)
    log = _run(lockstep, [5, 5, 5], [[0.1] * 5] * 3)
    assert [e for e in log if e[1] != "pruned"] == [(i, e) for e in (1, 2) for i in range(3)]
    assert sorted(e for e in log if e[1] == "pruned") == [(0, "pruned"), (1, "pruned"), (2, "pruned")]
    assert lockstep.pruned == (2, pytest.approx(0.1))


def test_folds_cover_train_and_validation_once_and_keep_class_shares():
    dm = BreastCancerDataModule(seed=42)
    dm.setup()
    before = torch.cat([dm.splits["train"][1], dm.splits["val"][1]])
    test = dm.splits["test"][0].clone()
    seen = []
    for k in range(1, 6):
        fold = BreastCancerDataModule(seed=42)
        fold.setup()
        folds.use_fold(fold, k, 5, 42)
        seen.append(fold.splits["val"][0])
        assert torch.equal(fold.splits["test"][0], test)
        assert len(fold.splits["train"][0]) + len(fold.splits["val"][0]) == len(before)
        share = fold.splits["val"][1].float().mean()
        assert abs(share - before.float().mean()) < 0.03  # stratified
        assert fold.class_counts == torch.bincount(fold.splits["train"][1]).tolist()
    together = torch.cat(seen)
    assert len(together) == len(before) and len(torch.unique(together, dim=0)) == len(before)


def _rows() -> list[Row]:
    def row(job: int, name: str, samples: dict[str, float]) -> Row:
        mean = sum(samples.values()) / len(samples)
        return Row.of(job, {"optimizer": name}, Outcome(State.FINISHED, mean, epochs=3, samples=samples))

    return [
        row(0, "sgd", {"1": 0.55, "2": 0.58, "3": 0.57}),
        row(1, "adam", {"1": 0.95, "2": 0.96, "3": 0.94}),
        row(2, "adamw", {"1": 0.96, "2": 0.94, "3": 0.945}),
        Row.of(3, {"optimizer": "rmsprop"}, Outcome.of_error(ValueError("diverged"))),
    ]


def test_leaderboard_of_repeats_shows_mean_ci_n_shared_ranks_and_verdicts():
    ranked = rank(_rows(), "max")
    lines = table(ranked, "val_acc", "max").splitlines()
    assert lines[0].split()[:9] == ["rank", "job", "run", "optimizer", "val_acc", "(mean", "±", "95%", "CI)"]
    cells = [line.split() for line in lines[2:]]
    assert [c[0] for c in cells] == ["1", "1", "3", "4"]  # adamw is not distinguishable from adam
    assert cells[0][2:7] == ["adam", "0.9500", "±", "0.02484", "3"]  # no run id here; 4 significant digits
    said = verdicts(ranked, "val_acc", "max")
    assert said[0].startswith("optimizer=adam is not distinguishable from optimizer=adamw at 3 seeds")
    assert said[1].startswith("optimizer=adam beats optimizer=sgd by 0.383 val_acc (95% CI")
    text = markdown(ranked, "val_acc", "max")
    assert "Verdicts (paired t-test" in text and "- optimizer=adam beats optimizer=sgd" in text
    best = summary(ranked, "val_acc")["metrics"]
    assert best["best_n"] == 3 and best["best_val_acc_ci_low"] < 0.95 < best["best_val_acc_ci_high"]


def test_heatmap_cells_annotate_the_mean_and_its_interval(tmp_path):
    from sweeps.tracking.plots import cells, heatmap

    rows = [
        {
            **r.__dict__,
            "overrides": {"loss": "cross_entropy", "optimizer": r.overrides["optimizer"], "lr": "0.001"},
        }
        for r in _rows()
    ]
    losses, optimizers, found = cells(rows, "max")
    assert losses == ["cross_entropy"] and optimizers == ["adam", "adamw", "rmsprop", "sgd"]
    assert found[("cross_entropy", "adam")][2] == "0.950\n±0.025\nlr=0.001"
    assert found[("cross_entropy", "rmsprop")][2] == "failed"
    assert heatmap(rows, "val_acc", "max", tmp_path / "h.png").stat().st_size > 1000


def test_nightly_report_gives_the_best_trials_interval_when_it_ran_several_seeds():
    from sweeps.nightly.report import spread_text

    assert spread_text({"1": 0.95, "2": 0.96, "3": 0.94}) == " ± 0.0248 (95% CI, 3 seeds)"
    assert spread_text({}) == "" and spread_text({"1": 0.9}) == ""
