"""Write the scaling report of a set of runs: PNG plots, a markdown page and the fits as JSON.

    report = write_scaling_report([read_run(d) for d in run_dirs], out_dir, min_steps=1)

Only comparable runs are fitted (comparable.py); the others are listed, each with its reason, in
`report.excluded`, the markdown and the JSON. Files in `out_dir`: `loss_vs_compute.png`,
`loss_vs_params.png` (with 2 or more model sizes), `eval_correlation.png` (with eval metrics),
`scaling_report.md`, `scaling_fit.json`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from mmdit_scale.eval.comparable import Exclusion, Setting, nothing_left, select_comparable
from mmdit_scale.eval.scaling import (
    MIN_SATURATING_POINTS,
    Correlation,
    PowerLawFit,
    Run,
    compute_frontier,
    eval_correlations,
    fit_power_law,
    fixed_steps,
    loss_vs_params,
)


@dataclass
class ScalingReport:
    runs: list[Run]
    """The fitted runs: comparable, and validated at step min_steps or later."""
    setting: Setting
    """What the fitted runs share."""
    excluded: list[Exclusion]
    """The runs left out, each with its reason."""
    min_steps: int
    compute_fit: Optional[PowerLawFit]
    """L(C) on the compute frontier; None with fewer than 4 frontier points or no fit."""
    params_fits: dict[int, PowerLawFit]
    """L(N) at each fixed step."""
    correlations: list[Correlation]
    files: list[Path]


def write_scaling_report(runs: Sequence[Run], out_dir: str | Path, min_steps: int = 1) -> ScalingReport:
    """NoComparableRuns (a ValueError naming every run's reason) when no run is left to fit."""
    selection = select_comparable(runs, min_steps)
    runs = selection.runs
    if not runs:
        raise nothing_left(selection.excluded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frontier = compute_frontier(runs)
    compute_fit = _or_none(lambda: fit_power_law(*zip(*frontier))) if len(frontier) >= MIN_SATURATING_POINTS else None
    params_fits = {step: fit for step in fixed_steps(runs)
                   if (fit := _or_none(lambda: loss_vs_params(runs, step))) is not None}
    correlations = eval_correlations(runs)
    report = ScalingReport(runs=list(runs), setting=selection.setting, excluded=selection.excluded,
                           min_steps=min_steps, compute_fit=compute_fit, params_fits=params_fits,
                           correlations=correlations, files=[])
    report.files += _plots(report, frontier, out)
    (out / "scaling_fit.json").write_text(json.dumps(_as_json(report), indent=2) + "\n")
    (out / "scaling_report.md").write_text(_markdown(report))
    report.files += [out / "scaling_fit.json", out / "scaling_report.md"]
    return report


def _or_none(fit: Callable[[], Optional[PowerLawFit]]) -> Optional[PowerLawFit]:
    """A fit, or None where the points admit none (too few, not decreasing, no convergence)."""
    try:
        return fit()
    except ValueError:
        return None


def _equation(fit: PowerLawFit, var: str) -> str:
    offset = f" + {fit.c:.4g}" if fit.c else ""
    return f"{fit.a:.4g} * {var}^(-{fit.b:.4f}){offset} (R^2 {fit.r2:.4f}, {fit.points} points)"


def _markdown(report: ScalingReport) -> str:
    lines = ["# Scaling report", "", "| run | depth | width | parameters | last step | samples | compute (FLOPs) "
             "| val loss |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in sorted(report.runs, key=lambda r: r.params):
        last = run.points[-1]
        lines.append(f"| {run.name} | {run.depth} | {run.hidden_size} | {run.params:,} | {last.step} "
                     f"| {last.samples:.4g} | {last.flops:.3e} | {last.val_loss:.4f} |")
    shared = ", ".join(f"{key}={value!r}" for key, value in report.setting.as_json().items())
    lines += ["", f"The fitted runs are trained from scratch and share {shared}."]
    if report.excluded:
        lines += ["", "## Runs left out", "", "| run | path | reason |", "|---|---|---|"]
        lines += [f"| {e.run} | {e.path} | {e.reason} |" for e in report.excluded]
    lines += ["", "## Loss against compute", ""]
    if report.compute_fit:
        lines.append(f"Frontier fit: L(C) = {_equation(report.compute_fit, 'C')}; exponent b = "
                     f"{report.compute_fit.b:.4f}.")
    else:
        lines.append(f"No fit: it needs {MIN_SATURATING_POINTS} or more points on the compute frontier that a "
                     f"power law fits (there are {len(compute_frontier(report.runs))}).")
    lines += ["", "![loss vs compute](loss_vs_compute.png)", "", "## Loss against parameters at fixed steps", ""]
    if report.params_fits:
        lines += ["| step | fit | exponent b |", "|---:|---|---:|"]
        lines += [f"| {step} | L(N) = {_equation(fit, 'N')} | {fit.b:.4f} |"
                  for step, fit in report.params_fits.items()]
        lines += ["", "![loss vs parameters](loss_vs_params.png)"]
    else:
        lines.append("Needs runs of at least two sizes that share a validation step.")
    lines += ["", "## Validation loss and eval metrics", ""]
    if report.correlations:
        lines += ["| metric | points | Pearson r | p | Spearman rho | p |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c.metric} | {c.points} | {c.pearson:.3f} | {c.pearson_p:.2g} | {c.spearman:.3f} | "
                  f"{c.spearman_p:.2g} |" for c in report.correlations]
        lines += ["", "![eval correlation](eval_correlation.png)"]
    else:
        lines.append("No run logged eval metrics (`eval/<name>` in metrics.jsonl) at 3 or more validation points.")
    return "\n".join(lines) + "\n"


def _as_json(report: ScalingReport) -> dict:
    return {
        "runs": [{"name": r.name, "path": str(r.path), "depth": r.depth, "hidden_size": r.hidden_size,
                  "params": r.params, "flops_per_sample": r.flops_per_sample,
                  "tokens": asdict(r.tokens) if r.tokens else None, "tokens_from": r.tokens_from,
                  "points": [asdict(p) for p in r.points]} for r in report.runs],
        "setting": report.setting.as_json(),
        "min_steps": report.min_steps,
        "excluded": [asdict(e) for e in report.excluded],
        "compute_fit": asdict(report.compute_fit) if report.compute_fit else None,
        "params_fits": {str(step): asdict(fit) for step, fit in report.params_fits.items()},
        "correlations": [asdict(c) for c in report.correlations],
    }


def _plots(report: ScalingReport, frontier: list[tuple[float, float]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for run in sorted(report.runs, key=lambda r: r.params):
        spent = [p for p in run.points if p.flops > 0]  # a log axis has no place for step 0
        ax.plot([p.flops for p in spent], [p.val_loss for p in spent], "o-", ms=3,
                label=f"{run.name} ({run.params / 1e6:.3g}M)")
    if report.compute_fit:
        c = np.geomspace(frontier[0][0], frontier[-1][0], 200)
        ax.plot(c, report.compute_fit(c), "k--", label=f"frontier fit, b = {report.compute_fit.b:.3f}")
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="validation loss", title="Validation loss against compute")
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "loss_vs_compute.png"))
    if report.params_fits:
        fig, ax = plt.subplots(figsize=(7, 5))
        sizes = np.geomspace(min(r.params for r in report.runs), max(r.params for r in report.runs), 200)
        for step, fit in report.params_fits.items():
            pts = sorted((r.params, r.at_step(step).val_loss) for r in report.runs if r.at_step(step))
            line, = ax.plot(*zip(*pts), "o", label=f"step {step}: b = {fit.b:.3f}")
            ax.plot(sizes, fit(sizes), "--", color=line.get_color())
        ax.set(xscale="log", xlabel="parameters", ylabel="validation loss",
               title="Validation loss against model size at fixed steps")
        ax.legend(fontsize=8)
        files.append(_save(fig, out / "loss_vs_params.png"))
    if report.correlations:
        fig, axes = plt.subplots(1, len(report.correlations), figsize=(4.5 * len(report.correlations), 4),
                                 squeeze=False)
        for ax, corr in zip(axes[0], report.correlations):
            for run in report.runs:
                pts = [(p.val_loss, p.evals[corr.metric]) for p in run.points if corr.metric in p.evals]
                if pts:
                    ax.plot(*zip(*pts), "o", label=run.name)
            ax.set(xlabel="validation loss", ylabel=corr.metric, title=f"{corr.metric}: r = {corr.pearson:.2f}")
        axes[0][0].legend(fontsize=8)
        files.append(_save(fig, out / "eval_correlation.png"))
    return files


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
