"""Training-efficiency methods at equal compute: TREAD, ΔFM and REPA against the baseline (CPU).

    python benchmarks/speedups.py --study micro-ladder --seeds 0,1,2 --plot docs/img/speedups_micro_ladder.png
    python benchmarks/speedups.py --study demo --steps 300 --seeds 0 --plot docs/img/speedups_demo.png
    python benchmarks/speedups.py --study demo --dry-run      # the runs and their FLOPs, train nothing

Issue 12 item 4: a method is one recipe key, and it wins when it reaches the baseline's final quality
with less compute. Every method gets the baseline's training FLOPs (a cheaper step trains more steps:
TREAD; a dearer one fewer: REPA's projector), with the same seeds (`train.seed`), so the comparison is
at equal compute. For each method, the compute at which its curve (mean over seeds) first reaches
the baseline's final validation loss, and on the demo the baseline's final held-out all-correct, is
interpolated between eval points (benchmarks/speedup_curves.py), as FLOPs and as wall seconds; the
ratio method / baseline is the speedup (< 1 wins). Per-seed ratios show the noise.

Studies:
- micro-ladder: one rung of benchmarks/micro_ladder.py (its data, shards and rung overrides);
- demo: recipes/demo.yaml on the demo's data and shards (launcher/demo_job.py), with a checkpoint at
  every eval, each scored afterwards on the held-out prompts by the demo scorer (the trainer logs
  validation loss only, so all-correct is measured on the kept checkpoints).
FLOPs are `plan`'s per-sample training count (TREAD's routed blocks at the kept tokens, REPA's
projector included). Wall seconds run from the step-0 validation to each eval
(validation passes included: the same number for every method). Runs in WORKDIR are reused when
finished. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import micro_ladder  # noqa: E402  (benchmarks/ is not a package: the scripts run as files)
from speedup_curves import mean_curve, reach_table  # noqa: E402

METHODS = ("baseline", "tread", "dfm", "repa")
SCORES_FILE = "heldout_scores.json"


def score_settings() -> dict:
    """The demo's own sampling settings (launcher/demo_job.DemoOptions' defaults) for the held-out score."""
    from dataclasses import fields

    from launcher.demo_job import DemoOptions

    default = {f.name: f.default for f in fields(DemoOptions)}
    return {"steps": default["sample_steps"], "cfg": default["cfg"], "per_prompt": default["per_prompt"],
            "seed": default["seed"]}


def method_overrides(method: str, depth: int, args: argparse.Namespace) -> list[str]:
    """The one recipe key each method sets. TREAD routes the middle blocks: all but the first and
    the last (TREAD keeps both ends at every token), so it needs at least 3 blocks."""
    if method == "tread":
        if depth < 3:
            raise SystemExit(f"TREAD needs depth >= 3 to route middle blocks, got {depth}")
        return [f"train.routing.ratio={args.tread}", "train.routing.start_block=1",
                f"train.routing.end_block={depth - 2}"]
    if method == "dfm":
        return [f"flow.contrastive_weight={args.dfm}"]
    if method == "repa":
        return [f"train.repa.weight={args.repa}"]  # block: depth // 3, the schema's default
    return []


def flops_per_sample(cfg) -> float:
    """Training FLOPs of one sample: `plan`'s count, TREAD's routing and REPA's projector included."""
    from mmdit_scale.plan.flops import run_training_flops
    from mmdit_scale.plan.tokens import square_tokens, token_layout
    from mmdit_scale.run.data_dims import fill_from_data

    cfg, _ = fill_from_data(cfg)
    return run_training_flops(cfg, square_tokens(cfg, token_layout(cfg))).training


def shards_for(work: Path, method: str, args: argparse.Namespace, env: dict) -> Path:
    """Prepared shards: REPA's carry the demo vision encoder's features (their own folder)."""
    from data_pipeline.manifest import MANIFEST_NAME

    if args.study == "demo":
        from launcher.demo_job import DemoOptions, make_data, prepare_shards

        opts = DemoOptions(workdir=work, repa=args.repa if method == "repa" else 0.0)
        out = work / ("shards-repa" if opts.repa else "shards")
        if all((out / split / MANIFEST_NAME).is_file() for split in ("train", "val")):
            return out  # prepare would find every shard done, after loading the encoders
        return prepare_shards(opts, make_data(opts))[0].parent
    ns = argparse.Namespace(**vars(args), train_images=2048, val_images=256, seed=0)
    micro_ladder.prepare(work, ns, env)  # images and plain shards
    if method != "repa":
        return work / "shards"
    out = work / "shards-repa"
    for split in ("train", "val"):
        if not (out / split / MANIFEST_NAME).is_file():
            micro_ladder.run(micro_ladder.cli(
                "prepare", "--input", str(work / "data" / split), "--output", str(out / split), "--encoders", "demo",
                "--repa-encoder", "demo", "--resolution", str(micro_ladder.RESOLUTION), "--no-progress"),
                work / "logs" / f"prepare_repa_{split}.log", env)
    return out


def study_recipe(args: argparse.Namespace) -> Path:
    from launcher.demo_job import RECIPE as DEMO_RECIPE

    return DEMO_RECIPE if args.study == "demo" else micro_ladder.RECIPE


def overrides_for(args: argparse.Namespace, shards: Path, method: str, seed: int, steps: int) -> list[str]:
    data = [f"data.train={shards / 'train'}", f"data.val={shards / 'val'}"]
    common = [f"train.seed={seed}", *method_overrides(method, args.depth, args), *args.overrides]
    if args.study == "demo":
        every = steps // args.evals
        return [*data, f"train.steps={steps}", f"eval.every={every}", f"checkpoint.every={every}",
                f"checkpoint.keep={args.evals + 1}", *common]
    rung = argparse.Namespace(samples=steps * args.global_batch, global_batch=args.global_batch, nproc=args.nproc,
                              evals=args.evals, overrides=common)
    return [*data, *micro_ladder.rung_overrides(args.depth, rung)]


def plan_runs(args: argparse.Namespace, work: Path, env: dict) -> list[dict]:
    """Every (method, seed) run: its overrides and steps. Steps give each method the baseline's FLOPs,
    rounded to a whole number of evals."""
    from mmdit_scale.config import load_config

    recipe = study_recipe(args)
    shards = {m: shards_for(work, m, args, env) for m in args.methods}
    base_steps = args.steps
    base = flops_per_sample(load_config(recipe, overrides_for(args, shards["baseline"], "baseline", 0, base_steps)))
    runs = []
    for method in args.methods:
        cost = flops_per_sample(load_config(recipe, overrides_for(args, shards[method], method, 0, base_steps)))
        steps = max(args.evals, round(base_steps * base / cost / args.evals) * args.evals)
        for seed in args.seeds:
            overrides = overrides_for(args, shards[method], method, seed, steps)
            runs.append({"method": method, "seed": seed, "steps": steps, "flops_per_sample": cost,
                         "global_batch": load_config(recipe, overrides).train.global_batch,
                         "run_dir": str(work / "runs" / f"{method}_s{seed}"), "overrides": overrides})
    return runs


def train(run: dict, args: argparse.Namespace, work: Path, env: dict) -> float | None:
    """Train one run unless WORKDIR holds it finished; seconds it took, None when reused."""
    from mmdit_scale.config import load_config
    from mmdit_scale.run.data_dims import absolute_data, fill_from_data
    from mmdit_scale.run.layout import CONFIG_FILE

    run_dir, recipe = Path(run["run_dir"]), study_recipe(args)
    # The saved config has the input dims the trainer filled from the shards (the demo recipe leaves
    # them to the data): compare it with the config as the trainer completes it.
    wanted = fill_from_data(absolute_data(load_config(recipe, run["overrides"])))[0]
    if (run_dir / CONFIG_FILE).is_file() and load_config(run_dir / CONFIG_FILE) != wanted:
        raise SystemExit(f"{run_dir} was trained with another config: use another --workdir")
    if micro_ladder.finished(run_dir, run["steps"]):
        print(f"reusing {run_dir}", flush=True)
        return None
    print(f"training {run['method']} seed {run['seed']} ({run['steps']} steps) -> {run_dir}", flush=True)
    return micro_ladder.run(micro_ladder.cli("train", str(recipe), *run["overrides"], "--nproc", str(args.nproc),
                                             "--run-dir", str(run_dir)), work / "logs" / f"{run_dir.name}.log", env)


def score_checkpoints(run_dir: Path) -> dict[int, float]:
    """Held-out all-correct of every kept checkpoint, by step (cached in the run dir)."""
    from data_pipeline.demo_data import HELD_OUT
    from launcher.demo_job import sample_and_score_prompts
    from mmdit_scale.eval.sampling import RunSampler, SampleSettings
    from mmdit_scale.run.checkpoints import list_checkpoints
    from mmdit_scale.run.layout import CHECKPOINTS, step_of

    cache = run_dir / SCORES_FILE
    scores = {int(k): v for k, v in json.loads(cache.read_text()).items()} if cache.is_file() else {}
    for ckpt in list_checkpoints(run_dir / CHECKPOINTS):
        step = step_of(ckpt.name)
        if step not in scores:
            sampler = RunSampler(ckpt)
            settings = sampler.resolved(SampleSettings(**score_settings()))
            scores[step] = sample_and_score_prompts(sampler, settings, HELD_OUT)[1]["all"]
            cache.write_text(json.dumps(scores))
    return scores


def curves_of(run: dict, scores: dict[int, float] | None) -> dict[str, list[tuple[float, float]]]:
    """A run's curves from its metrics.jsonl: loss vs FLOPs and vs wall seconds (and all-correct)."""
    from mmdit_scale.run.metrics_log import metrics_path, read_records

    records, _ = read_records(metrics_path(run["run_dir"]))
    val = {r["step"]: r for r in records if r.get("kind") == "val"}  # a later record of a step wins
    if 0 not in val:
        raise SystemExit(f"{run['run_dir']}: no step-0 validation, so no start for its wall clock")
    t0, per_step = val[0]["time"], run["global_batch"] * run["flops_per_sample"]
    steps = sorted(val)
    out = {"loss_flops": [(s * per_step, val[s]["val_loss"]) for s in steps],
           "loss_wall": [(val[s]["time"] - t0, val[s]["val_loss"]) for s in steps]}
    if scores is not None:
        scored = [s for s in steps if s in scores]
        out["acc_flops"] = [(s * per_step, scores[s]) for s in scored]
        out["acc_wall"] = [(val[s]["time"] - t0, scores[s]) for s in scored]
    return out


METRICS = {"loss_flops": ("validation loss", "training FLOPs", False),
           "loss_wall": ("validation loss", "wall seconds (shared 2-core VM)", False),
           "acc_flops": ("held-out all-correct", "training FLOPs", True),
           "acc_wall": ("held-out all-correct", "wall seconds (shared 2-core VM)", True)}


def plot(curves: dict[str, dict[str, list]], tables: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss_flops", "loss_wall", "acc_wall") if k in tables]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4))
    for ax, key in zip(axes, keys):
        ylabel, xlabel, _ = METRICS[key]
        for method, runs in curves[key].items():
            mean = mean_curve(runs)
            xs = [p[0] for p in mean]
            line, = ax.plot(xs, [p[1] for p in mean], "o-", ms=3, label=f"{method} (n={len(runs)})")
            ax.fill_between(xs, [p[2] for p in mean], [p[3] for p in mean], color=line.get_color(), alpha=0.2)
        ax.axhline(tables[key]["baseline"]["target"], color="grey", ls="--", lw=0.8, label="baseline final")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        if key.startswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_ratio(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}x"


def print_table(summary: dict) -> None:
    keys = [k for k in METRICS if k in summary["ratios"]]
    print(f"{'method':<9} {'steps':>5} {'GFLOP/sample':>12} {'val loss':>9}"
          + ("" if "acc_wall" not in keys else f" {'all-correct':>11}")
          + "".join(f" {k:>12}" for k in keys) + "   per-seed ratios (loss vs FLOPs)")
    for m in summary["methods"]:
        row = summary["methods"][m]
        acc = "" if "acc_wall" not in keys else f" {summary['ratios']['acc_wall'][m]['final']:>11.3f}"
        seeds = ", ".join(fmt_ratio(r) for r in summary["ratios"]["loss_flops"][m]["ratio_per_seed"])
        print(f"{m:<9} {row['steps']:>5} {row['flops_per_sample'] / 1e9:>12.4f} "
              f"{summary['ratios']['loss_flops'][m]['final']:>9.4f}{acc}"
              + "".join(f" {fmt_ratio(summary['ratios'][k][m]['ratio']):>12}" for k in keys) + f"   {seeds}")
    print("ratio = compute to reach the baseline's final value (mean over seeds) / the baseline's; < 1 wins")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("demo", "micro-ladder"), required=True)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, baseline first")
    parser.add_argument("--seeds", default="0,1,2", help="train.seed of every method's runs (default: 0,1,2)")
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR", help="default: runs/speedups_<study>")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="default: WORKDIR/speedups.png")
    parser.add_argument("--steps", type=int, default=None,
                        help="the baseline's steps (default: demo 800, the recipe's; micro-ladder 64)")
    parser.add_argument("--evals", type=int, default=None, help="evals after step 0 (default: demo 4, micro-ladder 8)")
    parser.add_argument("--depth", type=int, default=None, help="micro-ladder rung (default: 3; the demo's is 4)")
    parser.add_argument("--global-batch", type=int, default=32, help="micro-ladder only")
    parser.add_argument("--nproc", type=int, default=None, help="CPU ranks (default: demo 2, micro-ladder 1)")
    parser.add_argument("--tread", type=float, default=0.5, help="TREAD's train.routing.ratio (default: 0.5)")
    parser.add_argument("--dfm", type=float, default=0.05, help="ΔFM's flow.contrastive_weight (default: 0.05)")
    parser.add_argument("--repa", type=float, default=0.5, help="REPA's train.repa.weight (default: 0.5)")
    parser.add_argument("--dry-run", action="store_true", help="prepare data, print the runs as JSON, train nothing")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="extra overrides for every run")
    args = parser.parse_args(argv)
    demo = args.study == "demo"
    args.methods = args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.steps = args.steps or (800 if demo else 64)
    args.evals = args.evals or (4 if demo else 8)
    args.depth = 4 if demo else (args.depth or 3)
    args.nproc = args.nproc or (2 if demo else 1)
    if args.methods[0] != "baseline" or not set(args.methods) <= set(METHODS):
        parser.error(f"--methods: baseline first, then any of {', '.join(METHODS[1:])}")
    if args.steps % args.evals:
        parser.error(f"--steps {args.steps} must be a multiple of --evals {args.evals}")
    args.workdir = (args.workdir or REPO / "runs" / f"speedups_{args.study.replace('-', '_')}").resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    env = {**os.environ, **micro_ladder.ENV}
    work = args.workdir
    runs = plan_runs(args, work, env)
    if args.dry_run:
        print(json.dumps({"study": args.study, "workdir": str(work), "runs": runs}))
        return 0
    seconds = {f"{r['method']}_s{r['seed']}": train(r, args, work, env) for r in runs}
    curves: dict[str, dict[str, list]] = {}
    for r in runs:
        scores = score_checkpoints(Path(r["run_dir"])) if args.study == "demo" else None
        for key, curve in curves_of(r, scores).items():
            curves.setdefault(key, {}).setdefault(r["method"], []).append(curve)
    tables = {key: reach_table(by_method, METRICS[key][2]) for key, by_method in curves.items()}
    first = {r["method"]: r for r in runs}
    summary = {
        "benchmark": "speedups", "study": args.study, "device": "cpu", "ranks": args.nproc, "seeds": args.seeds,
        "depth": args.depth, "baseline_steps": args.steps, "evals": args.evals,
        "methods": {m: {"steps": first[m]["steps"], "flops_per_sample": first[m]["flops_per_sample"],
                        "overrides": method_overrides(m, args.depth, args)} for m in args.methods},
        "ratios": tables, "train_seconds": {k: None if v is None else round(v, 1) for k, v in seconds.items()},
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    path = (args.plot or work / "speedups.png").resolve()
    plot(curves, tables, path, f"{args.study}: depth {args.depth}, seeds {args.seeds}, baseline {args.steps} steps, "
         f"every method at the baseline's FLOPs")
    print_table(summary)
    print(f"plot: {path}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
