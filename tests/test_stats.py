"""The statistics of repeats: spread, paired verdicts, Holm's correction, shared ranks (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sweeps.tracking import stats


def test_spread_is_the_mean_the_sample_std_and_students_t_interval():
    values = [0.91, 0.93, 0.92, 0.95]
    found = stats.spread(values)
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert found.n == 4 and found.mean == pytest.approx(np.mean(values))
    assert found.std == pytest.approx(np.std(values, ddof=1))
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))


def test_spread_of_one_value_has_no_interval_and_nan_values_are_left_out():
    one = stats.spread([0.9, math.nan])
    assert one.n == 1 and one.mean == 0.9 and math.isnan(one.low) and math.isnan(one.std)
    assert stats.spread([]).n == 0


def test_identical_configurations_under_two_names_are_not_distinguishable():
    same = {"1": 0.91, "2": 0.93, "3": 0.90, "4": 0.94, "5": 0.92}
    (verdict,) = stats.verdicts([("adam", same), ("adam_copy", dict(same))], "max")
    assert not verdict.better and verdict.n == 5
    assert verdict.text("val_acc").startswith("adam is not distinguishable from adam_copy at 5 seeds")


def test_at_most_two_false_wins_over_twenty_pairs_of_seed_sets_from_one_distribution():
    """Two configurations whose per-seed values come from one distribution, on 20 sets of 5 seeds: at 95%
    about one false "better" is expected; the method must not give more than two."""
    rng = np.random.default_rng(2026)
    false_wins = 0
    for _ in range(20):
        a, b = rng.normal(0.9, 0.02, 5), rng.normal(0.9, 0.02, 5)
        first, second = ("a", a), ("b", b)
        if b.mean() > a.mean():
            first, second = second, first
        configs = [(name, {str(s): float(v) for s, v in enumerate(x)}) for name, x in (first, second)]
        false_wins += stats.verdicts(configs, "max")[0].better
    assert false_wins <= 2


def test_a_clear_difference_is_a_win_with_its_interval_in_words():
    adam = {"1": 0.95, "2": 0.96, "3": 0.94}
    sgd = {"1": 0.55, "2": 0.58, "3": 0.57}
    (verdict,) = stats.verdicts([("adam lr=1e-3", adam), ("sgd lr=1e-3", sgd)], "max")
    d = np.subtract(list(adam.values()), list(sgd.values()))
    expected = scipy_stats.ttest_rel(list(adam.values()), list(sgd.values()))
    assert verdict.better and verdict.diff == pytest.approx(d.mean())
    assert verdict.p == pytest.approx(expected.pvalue)
    ci = expected.confidence_interval(0.95)
    assert (verdict.low, verdict.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert verdict.text("val_acc").startswith("adam lr=1e-3 beats sgd lr=1e-3 by 0.383 val_acc (95% CI")
    assert "3 seeds" in verdict.text("val_acc")


def test_lower_is_better_flips_the_sign_and_only_shared_seeds_pair():
    low = {"1": 0.20, "2": 0.21, "3": 0.19, "9": 5.0}
    high = {"1": 0.50, "2": 0.52, "3": 0.49}
    verdict = stats.paired(low, high, "min", ("a", "b"))
    assert verdict.n == 3 and verdict.diff == pytest.approx(0.3033, abs=1e-3) and verdict.p < 0.05


def test_holm_step_down():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.2, math.nan]) == [0.2, pytest.approx(math.nan, nan_ok=True)]


def test_holm_can_turn_a_raw_win_into_not_distinguishable():
    best = {str(i): 0.90 for i in range(5)}
    near = {k: v - d for (k, v), d in zip(best.items(), [0.01, 0.02, 0.0, 0.015, 0.005], strict=True)}
    (alone,) = stats.verdicts([("best", best), ("near", near)], "max")
    assert 0.025 < alone.p < 0.05 and alone.better  # one comparison: a win at 95%
    twice = stats.verdicts([("best", best), ("near", near), ("near_copy", dict(near))], "max")
    assert [c.p_holm for c in twice] == [pytest.approx(2 * alone.p)] * 2
    assert not any(c.better for c in twice)
    assert "Holm-corrected p=" in twice[0].text("val_acc")


def test_configurations_not_beaten_share_rank_one():
    best = {"1": 0.95, "2": 0.96, "3": 0.94}
    tied = {"1": 0.96, "2": 0.94, "3": 0.945}
    beaten = {"1": 0.55, "2": 0.58, "3": 0.57}
    comparisons = stats.verdicts([("a", best), ("b", tied), ("c", beaten)], "max")
    assert stats.ranks(comparisons) == [1, 1, 3]


def test_one_seed_says_nothing():
    (verdict,) = stats.verdicts([("a", {"1": 0.9}), ("b", {"1": 0.1})], "max")
    assert not verdict.better and "needs 2 or more" in verdict.text("val_acc")
    assert stats.ranks([verdict]) == [1, 2]  # not compared at 2+ seeds: keeps its place
