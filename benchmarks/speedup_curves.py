"""The arithmetic of benchmarks/speedups.py: compute to reach a quality, its ratio to the baseline's,
and curves averaged over seeds. Pure functions on lists of numbers (no torch, no files), so the unit
tests check them on synthetic curves with known answers.

A curve is a list of (compute, value) points in compute order: validation loss (lower is better) or
held-out all-correct (higher is better) against training FLOPs or wall seconds.
"""
from __future__ import annotations

from typing import Optional, Sequence

Curve = Sequence[tuple[float, float]]


def compute_to_reach(curve: Curve, target: float, higher_is_better: bool = False) -> Optional[float]:
    """The compute at which `curve` first reaches `target`, linearly interpolated between the eval
    point before and the first one at or past it; None when no point reaches it. Between evals the
    curve is unknown: a straight line is the least assuming guess, and it never credits a method with
    a point it did not measure as reaching the target."""
    sign = -1.0 if higher_is_better else 1.0
    previous = None
    for x, y in curve:
        if sign * y <= sign * target:
            if previous is None or previous[1] == y:
                return float(x)
            px, py = previous
            return float(px + (target - py) * (x - px) / (y - py))
        previous = (x, y)
    return None


def ratio(method: Optional[float], baseline: Optional[float]) -> Optional[float]:
    """method / baseline compute (< 1: the method needs less); None when either is not reached."""
    if method is None or baseline is None or baseline <= 0:
        return None
    return method / baseline


def mean_curve(curves: Sequence[Curve]) -> list[tuple[float, float, float, float]]:
    """(mean compute, mean value, min value, max value) per eval point over seeds. The seeds of one
    method evaluate at the same steps, so point i is the same step in every curve; a seed with fewer
    points (a run cut short) shortens the mean to the points every seed has."""
    n = min(len(c) for c in curves)
    out = []
    for i in range(n):
        xs = [c[i][0] for c in curves]
        ys = [c[i][1] for c in curves]
        out.append((sum(xs) / len(xs), sum(ys) / len(ys), min(ys), max(ys)))
    return out


def reach_table(curves: dict[str, Sequence[Curve]], higher_is_better: bool = False) -> dict[str, dict]:
    """For each method (with "baseline" among them): the target (the baseline's final value, mean over
    seeds), the compute its mean curve needs to reach it, the ratio to the baseline's, and the ratio per
    seed against the same seed's baseline (its spread is the seed noise of the ratio)."""
    base_mean = mean_curve(curves["baseline"])
    target = base_mean[-1][1]
    base_cost = compute_to_reach([(x, y) for x, y, _, _ in base_mean], target, higher_is_better)
    base_final = {i: c[-1][1] for i, c in enumerate(curves["baseline"])}
    table = {}
    for method, runs in curves.items():
        mean = mean_curve(runs)
        cost = compute_to_reach([(x, y) for x, y, _, _ in mean], target, higher_is_better)
        per_seed = []
        for i, run in enumerate(runs):
            if i >= len(curves["baseline"]):
                break
            own = compute_to_reach(run, base_final[i], higher_is_better)
            per_seed.append(ratio(own, compute_to_reach(curves["baseline"][i], base_final[i], higher_is_better)))
        table[method] = {"target": target, "compute": cost, "ratio": ratio(cost, base_cost),
                         "ratio_per_seed": per_seed, "final": mean[-1][1], "final_compute": mean[-1][0]}
    return table
