"""Scaling-law fits over training runs: validation loss against compute and against model size.

What a run directory must hold (written by `mmdit-scale train`; docs/recipes.md has the contract):
- `config.yaml`: the resolved run config; gives the model (parameters are counted exactly on the
  meta device), the FLOPs per sample at data.resolution, and train.global_batch. The tokens per
  sample come from the manifest of data.train when it can be read (its autoencoder factor and text
  encoders: the demo's `pixel` autoencoder gives 16x the image tokens of SD3's), else SD3's layout;
- `metrics.jsonl`: one JSON object per line. A line with `val_loss` is a validation point; it has
  `step` and may have `samples` (training samples seen so far; default step x global batch) and
  `flops` (training FLOPs so far; default samples x FLOPs per sample). Keys `eval/<name>` (e.g.
  `eval/geneval`, `eval/fid`) are evaluation metrics at that `step`, on the same line or another.
  A later line for the same step wins (a resumed run logs it again); lines that are not JSON
  objects (a line cut by a kill) are skipped.

Compute is fitted on the frontier: at each compute, the lowest loss any run reached with at most
that compute, L(C) = a C^(-b) + c. The step-0 validation of a fresh run (zero compute) stays a point
of its run but is not on the frontier: a power law has no value at C = 0. Size is fitted at fixed
steps across runs, L(N) = a N^(-b) + c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mmdit_scale.eval.comparable import Setting
from mmdit_scale.run.layout import CONFIG_FILE, METRICS_FILE
from mmdit_scale.run.metrics_log import metrics_path, read_records
from mmdit_scale.plan.tokens import Tokens, square_tokens, token_layout

EVAL_PREFIX = "eval/"
MIN_SATURATING_POINTS = 4
"""A fit with the offset c (3 parameters) needs at least one point more than parameters."""


@dataclass
class ValPoint:
    step: int
    samples: float
    flops: float
    val_loss: float
    evals: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    name: str
    path: Path
    depth: int
    hidden_size: int
    params: int
    flops_per_sample: float
    points: list[ValPoint]
    """Validation points in step order."""
    skipped_lines: int = 0
    tokens: Optional[Tokens] = None
    """Tokens of one sample, as flops_per_sample counts them."""
    tokens_from: str = ""
    """Where `tokens` came from: the training manifest's path, or SD3_TOKENS."""
    setting: Optional[Setting] = None
    """What its validation loss is measured on (comparable.py): only equal settings share a fit."""
    init_from: str = ""
    """train.init_from: a fine-tune's compute is not all in its FLOPs, so it is left out of fits."""

    def at_step(self, step: int) -> Optional[ValPoint]:
        return next((p for p in self.points if p.step == step), None)


class RunDirError(ValueError):
    """A run directory lacks what the report reads; the message names the file."""


def read_run(path: str | Path, name: Optional[str] = None) -> Run:
    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.plan.flops import run_training_flops
    from mmdit_scale.plan.params import count_parameters
    from mmdit_scale.run.data_dims import fill_from_data

    path = Path(path)
    config, metrics = path / CONFIG_FILE, metrics_path(path)
    for needed in (config, metrics):
        if not needed.is_file():
            raise RunDirError(f"{needed} not found: a run directory holds {CONFIG_FILE} and {METRICS_FILE}")
    try:
        cfg = load_config(config)
    except ConfigError as err:
        raise RunDirError(f"{config}: {err}") from None
    cfg, _ = fill_from_data(cfg, sd3_fallback=True)  # runs of older code may leave data.resolution unset
    layout = token_layout(cfg)
    tokens = square_tokens(cfg, layout)
    per_sample = run_training_flops(cfg, tokens).training
    rows, skipped = _read_metrics(metrics)
    points = []
    for step in sorted(rows):
        row = rows[step]
        if "val_loss" not in row:
            continue
        samples = float(row.get("samples", step * cfg.train.global_batch))
        flops = float(row.get("flops", samples * per_sample))
        evals = {k[len(EVAL_PREFIX):]: float(v) for k, v in row.items() if k.startswith(EVAL_PREFIX)}
        points.append(ValPoint(step=step, samples=samples, flops=flops, val_loss=float(row["val_loss"]), evals=evals))
    return Run(name=name or path.name, path=path, depth=cfg.model.depth, hidden_size=cfg.model.hidden_size,
               params=count_parameters(cfg.model).total, flops_per_sample=per_sample, points=points,
               skipped_lines=skipped, tokens=tokens, tokens_from=layout.source, setting=Setting.of(cfg),
               init_from=cfg.train.init_from)


def _read_metrics(path: Path) -> tuple[dict[int, dict], int]:
    """Metric records merged per step (later keys win), and the count of unreadable lines."""
    records, skipped = read_records(path)
    rows: dict[int, dict] = {}
    for row in records:
        if not isinstance(row.get("step"), int):
            skipped += 1
            continue
        rows.setdefault(row["step"], {}).update(row)
    return rows, skipped


@dataclass(frozen=True)
class PowerLawFit:
    """y = a x^(-b) + c, fitted to `points` (x, y) pairs."""

    a: float
    b: float
    c: float
    r2: float
    """Coefficient of determination in y."""
    points: int

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.a * np.power(x, -self.b) + self.c


def fit_power_law(x: Sequence[float], y: Sequence[float], saturating: bool = True) -> PowerLawFit:
    """Least-squares fit of y = a x^-b + c (c = 0 unless `saturating`).

    x is rescaled by its geometric mean so the parameters stay near 1 whatever the units (FLOPs
    span 1e15-1e23). The offset is started from the c that makes log(y - c) most linear in log x.
    """
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < (MIN_SATURATING_POINTS if saturating else 2):
        raise ValueError(f"{len(x)} points are too few for a {'3' if saturating else '2'}-parameter power law")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("power-law fits need positive x and y")
    scale = math.exp(float(np.mean(np.log(x))))
    u = x / scale
    if saturating:
        c0 = _best_offset(u, y)
        b0, log_a0 = _loglog_line(u, y - c0)

        def model(u, a, b, c):
            return a * np.power(u, -b) + c

        try:
            (a, b, c), _ = curve_fit(model, u, y, p0=(math.exp(log_a0), min(max(b0, 1e-3), 9.9), c0),
                                     bounds=([0.0, 0.0, 0.0], [np.inf, 10.0, float(y.min())]), maxfev=20000)
        except RuntimeError as err:  # no convergence: say so instead of reporting a bad fit
            raise ValueError(f"the power-law fit did not converge: {err}") from None
    else:
        b, log_a = _loglog_line(u, y)
        a, c = math.exp(log_a), 0.0
    predicted = a * np.power(u, -b) + c
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - predicted) ** 2)) / total if total > 0 else 1.0
    return PowerLawFit(a=float(a) * scale ** float(b), b=float(b), c=float(c), r2=r2, points=len(x))


def _loglog_line(u: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(b, log a) of the straight line log y = log a - b log u."""
    slope, intercept = np.polyfit(np.log(u), np.log(y), 1)
    return float(-slope), float(intercept)


def _best_offset(u: np.ndarray, y: np.ndarray) -> float:
    candidates = float(y.min()) * np.linspace(0.0, 0.99, 100)

    def residual(c: float) -> float:
        b, log_a = _loglog_line(u, y - c)
        return float(np.sum((np.log(y - c) - (log_a - b * np.log(u))) ** 2))

    return float(min(candidates, key=residual))


def compute_frontier(runs: Sequence[Run]) -> list[tuple[float, float]]:
    """(compute, loss) points of positive compute that no point with less or equal compute beats, in compute order."""
    points = sorted((p.flops, p.val_loss) for run in runs for p in run.points if p.flops > 0)
    frontier: list[tuple[float, float]] = []
    for flops, loss in points:
        if not frontier or loss < frontier[-1][1]:
            frontier.append((flops, loss))
    return frontier


def fixed_steps(runs: Sequence[Run], most: int = 4) -> list[int]:
    """Up to `most` validation steps that every run reached, evenly spread, the last shared one included."""
    shared = sorted(set.intersection(*({p.step for p in run.points} for run in runs))) if runs else []
    shared = [s for s in shared if s > 0]
    if len(shared) <= most:
        return shared
    picks = np.linspace(0, len(shared) - 1, most).round().astype(int)
    return [shared[i] for i in sorted(set(picks))]


def loss_vs_params(runs: Sequence[Run], step: int) -> Optional[PowerLawFit]:
    """L(N) at `step` across runs of different sizes; the offset only with enough runs; None under 2 sizes."""
    pairs = sorted((run.params, run.at_step(step).val_loss) for run in runs if run.at_step(step) is not None)
    if len({n for n, _ in pairs}) < 2:
        return None
    saturating = len(pairs) >= MIN_SATURATING_POINTS
    return fit_power_law([n for n, _ in pairs], [loss for _, loss in pairs], saturating=saturating)


@dataclass(frozen=True)
class Correlation:
    """Validation loss against one eval metric over (run, step) points, as in the SD3 paper's figure
    of validation loss against GenEval and human preference."""

    metric: str
    points: int
    pearson: float
    spearman: float
    pearson_p: float
    """Two-sided p-value of no linear correlation."""
    spearman_p: float
    """Two-sided p-value of no monotonic correlation."""


def eval_correlations(runs: Sequence[Run]) -> list[Correlation]:
    """Correlation of validation loss with each eval metric, over (run, step) pairs that have both."""
    from scipy.stats import pearsonr, spearmanr

    names = sorted({name for run in runs for p in run.points for name in p.evals})
    out = []
    for name in names:
        pairs = [(p.val_loss, p.evals[name]) for run in runs for p in run.points if name in p.evals]
        losses, values = zip(*pairs) if pairs else ((), ())
        if len(pairs) < 3 or len(set(values)) < 2 or len(set(losses)) < 2:
            continue
        pearson, spearman = pearsonr(losses, values), spearmanr(losses, values)
        out.append(Correlation(metric=name, points=len(pairs), pearson=float(pearson[0]), spearman=float(spearman[0]),
                               pearson_p=float(pearson[1]), spearman_p=float(spearman[1])))
    return out
