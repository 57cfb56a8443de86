"""benchmarks/speedup_curves.py: compute to reach a quality, and the ratio to the baseline's, on
synthetic curves whose answers are known by hand."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def sc():
    from benchmarks import speedup_curves

    return speedup_curves


def test_reach_interpolates_between_the_eval_points_around_the_target(sc) -> None:
    loss = [(0, 1.0), (10, 0.6), (20, 0.4), (30, 0.3)]
    assert sc.compute_to_reach(loss, 0.5) == pytest.approx(15.0)  # halfway from 0.6 to 0.4
    assert sc.compute_to_reach(loss, 0.4) == pytest.approx(20.0)  # an eval point exactly on it
    assert sc.compute_to_reach(loss, 1.2) == 0.0  # already there at the first point
    assert sc.compute_to_reach(loss, 0.2) is None  # never reached


def test_reach_takes_the_first_crossing_of_a_noisy_curve(sc) -> None:
    loss = [(0, 1.0), (10, 0.4), (20, 0.6), (30, 0.35)]
    assert sc.compute_to_reach(loss, 0.5) == pytest.approx(10 * 0.5 / 0.6)  # not the later 0.6 -> 0.35


def test_reach_of_a_higher_is_better_metric(sc) -> None:
    acc = [(100, 0.0), (200, 0.2), (300, 0.5)]
    assert sc.compute_to_reach(acc, 0.3, higher_is_better=True) == pytest.approx(200 + 100 / 3)
    assert sc.compute_to_reach(acc, 0.6, higher_is_better=True) is None


def test_ratio_is_method_over_baseline_and_none_when_not_reached(sc) -> None:
    assert sc.ratio(30.0, 60.0) == 0.5
    assert sc.ratio(None, 60.0) is None
    assert sc.ratio(30.0, None) is None


def test_mean_curve_gives_mean_and_band_and_drops_points_not_every_seed_has(sc) -> None:
    curves = [[(0, 1.0), (10, 0.5), (20, 0.3)], [(0, 1.0), (12, 0.7)]]
    assert sc.mean_curve(curves) == [(0, 1.0, 1.0, 1.0), (11, pytest.approx(0.6), 0.5, 0.7)]


def test_a_method_twice_as_fast_gets_ratio_one_half(sc) -> None:
    """Loss 1/(1 + c) for the baseline up to c = 8, and the same curve at half the compute for the
    method: it reaches the baseline's final 1/9 at c = 4 (exact at an eval point), ratio 0.5 per seed
    and on the mean; a method that stalls above it is not reached."""
    base = [[(c, 1 / (1 + c) + noise) for c in range(9)] for noise in (0.0, 0.0)]
    fast = [[(c / 2, 1 / (1 + c) + noise) for c in range(17)] for noise in (0.0, 0.0)]
    flat = [[(c, 0.5) for c in range(9)]]
    table = sc.reach_table({"baseline": base, "fast": fast, "flat": flat})
    assert table["baseline"]["target"] == pytest.approx(1 / 9)
    assert table["baseline"]["ratio"] == pytest.approx(1.0)
    assert table["fast"]["compute"] == pytest.approx(4.0)
    assert table["fast"]["ratio"] == pytest.approx(0.5)
    assert table["fast"]["ratio_per_seed"] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert table["flat"]["ratio"] is None and table["flat"]["ratio_per_seed"] == [None]
