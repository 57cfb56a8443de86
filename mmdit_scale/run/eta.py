"""How long a run has left: remaining steps x seconds per step, and that time as text (torch-free).

The trainer logs it with every train record (`eta_s`, from its own clock); `status` computes it
afresh from metrics.jsonl's time stamps, since a run that was stopped or requeued logs nothing.
"""
from __future__ import annotations

import statistics
from typing import Any, Optional, Sequence

RATE_WINDOW = 5
"""Intervals between the newest train records that `seconds_per_step` looks at."""


def eta_seconds(step: int, total: int, seconds_per_step: float) -> float:
    return max(total - step, 0) * seconds_per_step


def seconds_per_step(records: Sequence[dict[str, Any]]) -> Optional[float]:
    """Seconds per step over the newest train records (`step` and `time`), or None with fewer than two.

    The median of the last RATE_WINDOW intervals' rates: an interval that holds a requeue's wait or a
    validation pass is one outlier among them, not a mean it drags."""
    timed = [r for r in records if r.get("kind") == "train" and isinstance(r.get("step"), int)
             and isinstance(r.get("time"), (int, float))]
    pairs = zip(timed[-RATE_WINDOW - 1:], timed[-RATE_WINDOW:])
    rates = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in pairs
             if b["step"] > a["step"] and b["time"] >= a["time"]]
    return statistics.median(rates) if rates else None


def duration_text(seconds: float) -> str:
    """'45s', '12m05s', '3h07m', '2d04h': two units at most, enough to plan by."""
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"
