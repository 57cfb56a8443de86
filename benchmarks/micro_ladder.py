"""The micro-ladder study: does validation loss fall predictably with model size and compute (CPU)?

    python benchmarks/micro_ladder.py                     # d1..d4 at width 32 d, 4096 samples each
    python benchmarks/micro_ladder.py --depths 1 2 3 4 5 --samples 8192 --nproc 2
    python benchmarks/micro_ladder.py --dry-run           # resolve and print the rungs, train nothing

A miniature of the SD3 scaling study (docs/scaling.md) on the embedded demo data:
1. demo images (data_pipeline.demo_data): a training folder, and a validation folder drawn with
   another seed from which every image identical to a training image is removed;
2. `mmdit-scale prepare --encoders demo --resolution 32` into WORKDIR/shards/{train,val};
3. `mmdit-scale train recipes/studies/micro_ladder/base.yaml` once per depth d, one width rule
   (hidden 32 d, heads of 32), every rung on the same samples in the same order, validation
   every `samples / evals` samples, so each run is a loss-against-compute curve;
4. `mmdit-scale scaling-report` over the run dirs into --out (default WORKDIR/report).
With `--image-metrics` every validation also generates images from a fixed prompt set and logs FID,
CMMD and CLIP score, computed with the demo's own seeded feature models (docs/metrics.md), so the
report correlates validation loss with image metrics (the paper's loss-against-GenEval figure).
Each stage is reused when the script runs again with the same WORKDIR (a finished run is one whose
metrics.jsonl has a validation loss at its last step; a run dir trained with another config is an
error, not a resume). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = REPO / "recipes" / "studies" / "micro_ladder" / "base.yaml"
WIDTH_PER_DEPTH = 32
HEAD_DIM = 32
"""The width rule: hidden = 32 x depth, depth heads of 32 (the paper's ladder: 64 x depth, heads of 64)."""
RESOLUTION = 32
ENV = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def rung_overrides(depth: int, args: argparse.Namespace) -> list[str]:
    steps = args.samples // args.global_batch
    return [f"model.depth={depth}", f"model.hidden_size={WIDTH_PER_DEPTH * depth}",
            f"model.num_heads={WIDTH_PER_DEPTH * depth // HEAD_DIM}",
            f"train.steps={steps}", f"train.global_batch={args.global_batch}",
            f"train.micro_batch={args.global_batch // args.nproc}",
            f"eval.every={steps // args.evals}", f"checkpoint.every={steps}", *args.overrides]


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *argv]


def image_metric_overrides(work: Path, args: argparse.Namespace) -> list[str]:
    """Image metrics at every validation, with the demo's feature models (built once in WORKDIR)."""
    if not args.image_metrics:
        return []
    from data_pipeline.demo_data import demo_corpus
    from mmdit_scale.eval.image_metrics.demo_models import build_metric_models

    inception, clip = build_metric_models(work / "encoders", demo_corpus(), image_size=RESOLUTION)
    steps = args.samples // args.global_batch
    return [f"eval.image_every={steps // args.evals}", f"eval.image_prompts={args.image_metrics}",
            f"eval.metrics.inception={inception}", f"eval.metrics.clip={clip}"]


def check_rungs(args: argparse.Namespace, shards: Path) -> list[dict]:
    """Resolve every rung's config before anything runs (a bad override fails here, not after an hour)."""
    from mmdit_scale.config import load_config
    from mmdit_scale.plan.params import count_parameters

    rungs = []
    images = image_metric_overrides(shards.parent, args)
    for depth in sorted(set(args.depths)):
        overrides = [f"data.train={shards / 'train'}", f"data.val={shards / 'val'}", *rung_overrides(depth, args),
                     *images]
        cfg = load_config(RECIPE, overrides)
        rungs.append({"depth": depth, "width": cfg.model.hidden_size, "heads": cfg.model.num_heads,
                      "params": count_parameters(cfg.model).total, "steps": cfg.train.steps,
                      "samples": cfg.train.steps * cfg.train.global_batch, "eval_every": cfg.eval.every,
                      "overrides": overrides})
    return rungs


def make_images(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from data_pipeline.demo_data import write_demo_data

    train, val = work / "data" / "train", work / "data" / "val"
    write_demo_data(train, count=args.train_images, side=RESOLUTION, seed=args.seed)
    write_demo_data(val, count=args.val_images, side=RESOLUTION, seed=args.seed + 1)
    # The scenes are few enough that another seed redraws some training images pixel for pixel:
    # those would measure memorisation, not generalisation.
    seen = {p.read_bytes() for p in train.glob("*.png")}
    for png in val.glob("*.png"):
        if png.read_bytes() in seen:
            for sibling in val.glob(png.stem + ".*"):
                sibling.unlink()
    return train, val


def prepare(work: Path, args: argparse.Namespace, env: dict) -> None:
    shards = work / "shards"
    from data_pipeline.manifest import MANIFEST_NAME

    if all((shards / split / MANIFEST_NAME).is_file() for split in ("train", "val")):
        return
    for folder in make_images(work, args):
        run(cli("prepare", "--input", str(folder), "--output", str(shards / folder.name), "--encoders", "demo",
                "--resolution", str(RESOLUTION), "--no-progress"), work / "logs" / f"prepare_{folder.name}.log", env)


def run(cmd: list[str], log: Path, env: dict) -> float:
    """Run `cmd` with its output in `log`; returns the seconds it took, exits on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd[2:5])} ... failed with exit code {code}; {log}:\n{tail}")
    return time.monotonic() - start


def finished(run_dir: Path, steps: int) -> bool:
    from mmdit_scale.run.metrics_log import metrics_path, read_records

    records, _ = read_records(metrics_path(run_dir))
    return any(r.get("kind") == "val" and r.get("step") == steps for r in records)


def train(rung: dict, work: Path, args: argparse.Namespace, env: dict) -> tuple[Path, float | None]:
    from mmdit_scale.config import load_config
    from mmdit_scale.run.layout import CONFIG_FILE

    run_dir = work / "runs" / f"d{rung['depth']}_w{rung['width']}_s{rung['samples']}"
    if (run_dir / CONFIG_FILE).is_file() and load_config(run_dir / CONFIG_FILE) != load_config(
            RECIPE, rung["overrides"]):
        raise SystemExit(f"{run_dir} was trained with another config (batch, evals or overrides): "
                         "use another --workdir")
    if finished(run_dir, rung["steps"]):
        print(f"reusing {run_dir}", flush=True)
        return run_dir, None
    print(f"training d{rung['depth']} (width {rung['width']}, {rung['params']:,} parameters, {rung['steps']} steps)"
          f" -> {run_dir}", flush=True)
    seconds = run(cli("train", str(RECIPE), *rung["overrides"], "--nproc", str(args.nproc), "--run-dir", str(run_dir)),
                  work / "logs" / f"{run_dir.name}.log", env)
    return run_dir, seconds


def summarise(fits: dict, rungs: list[dict], seconds: list[float | None], wall: float, args) -> dict:
    runs = {r["depth"]: r for r in fits["runs"]}
    compute = fits["compute_fit"]
    last = max(fits["params_fits"], key=int) if fits["params_fits"] else None
    return {
        "benchmark": "micro_ladder", "device": "cpu", "ranks": args.nproc, "samples": args.samples,
        "width_rule": f"hidden = {WIDTH_PER_DEPTH} x depth, heads of {HEAD_DIM}",
        "compute_fit": compute and {k: compute[k] for k in ("a", "b", "c", "r2", "points")},
        "params_fit_last_step": last and {"step": int(last), **{k: fits["params_fits"][last][k]
                                                                 for k in ("a", "b", "c", "r2", "points")}},
        "runs": [{"depth": r["depth"], "width": r["width"], "params": r["params"],
                  "flops_per_sample": runs[r["depth"]]["flops_per_sample"],
                  "final_val_loss": runs[r["depth"]]["points"][-1]["val_loss"],
                  "final_flops": runs[r["depth"]]["points"][-1]["flops"],
                  "val_loss": {p["step"]: round(p["val_loss"], 5) for p in runs[r["depth"]]["points"]},
                  "train_seconds": None if s is None else round(s, 1)} for r, s in zip(rungs, seconds)],
        "wall_seconds": round(wall, 1),
    }


def print_table(summary: dict) -> None:
    print(f"{'depth':>5} {'width':>5} {'params':>10} {'GFLOP/sample':>12} {'compute':>10} {'val loss':>9} {'train s':>8}")
    for r in summary["runs"]:
        secs = "reused" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        print(f"{r['depth']:>5} {r['width']:>5} {r['params']:>10,} {r['flops_per_sample'] / 1e9:>12.3f} "
              f"{r['final_flops']:>10.3e} {r['final_val_loss']:>9.4f} {secs:>8}")
    fit = summary["compute_fit"]
    print("L(C) = " + (f"{fit['a']:.4g} * C^(-{fit['b']:.4f}) + {fit['c']:.4g}, R^2 {fit['r2']:.4f} over "
                       f"{fit['points']} frontier points" if fit else "no fit"))
    size = summary["params_fit_last_step"]
    if size:
        print(f"L(N) at step {size['step']} = {size['a']:.4g} * N^(-{size['b']:.4f}) + {size['c']:.4g}, "
              f"R^2 {size['r2']:.4f} over {size['points']} sizes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "micro_ladder", metavar="DIR")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="report folder (default: WORKDIR/report)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--samples", type=int, default=4096, help="training samples per rung (default: 4096)")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--evals", type=int, default=8, help="validations after step 0 (default: 8)")
    parser.add_argument("--nproc", type=int, default=1, help="CPU ranks per run (default: 1)")
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="demo image seed (validation: seed + 1)")
    parser.add_argument("--image-metrics", type=int, default=0, metavar="N",
                        help="generate N images at every validation and log FID, CMMD and CLIP score with the "
                             "demo's feature models (default: 0, off)")
    parser.add_argument("--dry-run", action="store_true", help="resolve the rungs, print them as JSON, train nothing")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="extra overrides for every rung")
    args = parser.parse_args(argv)
    steps = args.samples // args.global_batch
    if args.samples % args.global_batch or args.global_batch % args.nproc or steps % args.evals:
        parser.error(f"--samples {args.samples} must be a multiple of --global-batch {args.global_batch}, which "
                     f"--nproc {args.nproc} must divide, and the steps ({steps}) a multiple of --evals {args.evals}")
    if len(set(args.depths)) < 4:
        parser.error("a ladder needs at least 4 different depths (the compute fit has 3 parameters)")
    work = args.workdir.resolve()
    from mmdit_scale.config import ConfigError

    try:
        rungs = check_rungs(args, work / "shards")
    except ConfigError as err:
        parser.error(str(err))
    if args.dry_run:
        print(json.dumps({"recipe": str(RECIPE.relative_to(REPO)), "workdir": str(work), "rungs": rungs}))
        return 0
    start = time.monotonic()
    env = {**os.environ, **ENV}
    prepare(work, args, env)
    run_dirs, seconds = [], []
    for rung in rungs:
        run_dir, secs = train(rung, work, args, env)
        run_dirs.append(run_dir)
        seconds.append(secs)
    out = (args.out or work / "report").resolve()
    run(cli("scaling-report", *map(str, run_dirs), "--out", str(out)), work / "logs" / "scaling_report.log", env)
    summary = summarise(json.loads((out / "scaling_fit.json").read_text()), rungs, seconds,
                        time.monotonic() - start, args)
    print_table(summary)
    print(f"report: {out / 'scaling_report.md'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
