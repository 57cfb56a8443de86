"""`mmdit-scale scaling-report`: fit scaling laws to runs' validation losses and write plots and a table."""
from __future__ import annotations

import argparse
import sys

HELP = "Fit scaling laws to runs' validation losses and write plots and a table."
DESCRIPTION = (
    "Read each RUN_DIR's config.yaml and metrics.jsonl (validation lines: step, val_loss, optional samples, "
    "flops and eval/<name> metrics; see docs/recipes.md), fit L(C) = a*C^-b + c on the compute frontier and "
    "loss against parameters at fixed steps, correlate validation loss with eval metrics, and write "
    "PNG plots, scaling_report.md and scaling_fit.json into --out. Only comparable runs are fitted: the "
    "largest group that shares data.val, data.resolution and flow.formulation (a tie: the first RUN_DIR's "
    "group), trained from scratch (no train.init_from) and validated at step --min-steps or later; every "
    "other run is named with its reason on stderr and in the report. Exit 2 when no run is left."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.arguments import positive_int

    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (one per model size or setting)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the plots, table and fits")
    parser.add_argument("--min-steps", type=positive_int, default=1, metavar="N",
                        help="leave out runs whose last validation is before step N (default 1: a run with only "
                             "its step-0 validation has spent no compute and shares no step with the others)")


def run(args: argparse.Namespace) -> int:
    from mmdit_scale.eval.scaling import RunDirError, read_run
    from mmdit_scale.eval.scaling_report import write_scaling_report
    from mmdit_scale.plan.tokens import SD3_TOKENS
    from mmdit_scale.run.layout import METRICS_FILE

    try:
        runs = [read_run(path) for path in args.runs]
        report = write_scaling_report(runs, args.out, min_steps=args.min_steps)
    except (RunDirError, ValueError) as err:
        print(f"mmdit-scale scaling-report: {err}", file=sys.stderr)
        return 2
    for run in runs:
        if run.skipped_lines:
            print(f"note: {run.path / METRICS_FILE}: skipped {run.skipped_lines} unreadable line(s)", file=sys.stderr)
        if run.tokens_from == SD3_TOKENS:
            print(f"note: {run.path}: no readable manifest at data.train; FLOPs assume SD3's tokens "
                  f"({run.tokens.image} image + {run.tokens.text} text at data.resolution)", file=sys.stderr)
    for left_out in report.excluded:
        print(f"left out: {left_out.path}: {left_out.reason}", file=sys.stderr)
    fit = report.compute_fit
    if fit:
        print(f"L(C) = {fit.a:.4g} * C^(-{fit.b:.4f}) + {fit.c:.4g} over {fit.points} frontier points "
              f"(R^2 {fit.r2:.4f})")
    else:
        print("too few points on the compute frontier to fit L(C)")
    for step, size_fit in report.params_fits.items():
        print(f"step {step}: L(N) exponent {size_fit.b:.4f} over {size_fit.points} sizes")
    for corr in report.correlations:
        print(f"val loss vs {corr.metric}: Pearson {corr.pearson:.3f}, Spearman {corr.spearman:.3f} "
              f"({corr.points} points)")
    print(f"wrote {len(report.files)} files to {args.out}")
    return 0
