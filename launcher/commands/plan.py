"""`mmdit-scale plan`: parameters, FLOPs, memory per GPU by ZeRO stage, time and data for a recipe on N GPUs."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "Plan parameters, FLOPs, memory per GPU and time for a recipe on N GPUs."
DESCRIPTION = (
    "Resolve RECIPE with its key=value overrides and report: parameters (counted from the model built "
    "on the meta device), training FLOPs per sample, memory per GPU under ZeRO-1/2/3 (weights, gradients, "
    "optimizer states, activations, DeepSpeed buffers) and which fit, batch and gradient accumulation, "
    "step time and days at the given MFU, and the pre-encoded bytes read. Memory is in GiB. "
    "Exits 0 when some ZeRO stage fits, 1 when none does (and says what would), 2 on a bad recipe or flag."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", metavar="RECIPE [key=value ...]",
                        help="recipe YAML and dotted overrides, e.g. recipes/ladder/d24.yaml train.micro_batch=16; "
                             "with --markdown several recipes")
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs (data-parallel ranks)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, metavar="GB",
                        help="memory per GPU in GiB (default 80: an H100)")
    parser.add_argument("--mfu", type=float, default=0.4, metavar="F",
                        help="model FLOPs utilisation for the time estimate (default 0.4)")
    parser.add_argument("--peak-tflops", type=float, default=None, metavar="T",
                        help="peak TFLOP/s per GPU (default: H100 dense, 989.4 for bf16, 494.7 TF32 for fp32)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    out.add_argument("--markdown", action="store_true",
                     help="print the ladder table (one row per recipe) as in docs/recipes.md")


def _fail(message: str, as_json: bool) -> int:
    print(f"mmdit-scale plan: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message}))
    return 2


def run(args: argparse.Namespace) -> int:
    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.plan.report import Hardware, make_plan, to_json
    from mmdit_scale.plan.render import ladder_markdown, to_text

    recipes = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    if not recipes:
        return _fail("no RECIPE given", args.json)
    if len(recipes) > 1 and not args.markdown:
        return _fail(f"one RECIPE at a time (got {len(recipes)}); several only with --markdown", args.json)
    try:
        hardware = Hardware(gpus=args.gpus, gpu_memory_gib=args.gpu_memory, mfu=args.mfu,
                            peak_tflops=args.peak_tflops)
        plans = [make_plan(load_config(recipe, overrides), hardware) for recipe in recipes]
    except (ConfigError, ValueError) as err:
        return _fail(str(err), args.json)
    if args.markdown:
        sys.stdout.write(ladder_markdown(plans))
    elif args.json:
        print(json.dumps(to_json(plans[0]), indent=2))
    else:
        title = " ".join([recipes[0], *overrides])
        sys.stdout.write(to_text(plans[0], title))
    return 0 if all(plan.fits for plan in plans) else 1
