"""Training throughput on CPU ranks per ZeRO stage, through the real `mmdit-scale train`.

    python benchmarks/train_step.py                        # ZeRO 0-3, 2 ranks, fp32, a 4-block width-256 MM-DiT
    python benchmarks/train_step.py --stages 2 3 --precision bf16 --steps 30

For each stage the script trains the same model on the same synthetic shards (the real shard
format) for `--steps` optimizer steps and reads samples/s from the run's metrics.jsonl: the median
over the log intervals after the first one (start-up and the first steps are warm-up). One run
measures all stages one after the other, so the ratios to ZeRO-0 compare like with like; absolute
numbers on a shared 2-core machine move by several times with its load. Prints a table, then the
same as one JSON line. Installs nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic  # noqa: E402
from mmdit_scale.run.metrics_log import metrics_path, read_records  # noqa: E402

TEXT = {"clip_l": (32, 32), "clip_g": (32, 32), "t5": (64, None)}
"""The tiny recipe's text widths (context 64, pooled 64)."""
MODEL = ["model.depth=4", "model.hidden_size=256", "model.num_heads=4"]
LOG_EVERY = 5


def run_stage(stage: int, args: argparse.Namespace, shards: Path, work: Path) -> dict:
    run_dir = work / f"zero{stage}"
    cmd = [sys.executable, "-m", "launcher.cli", "train", "recipes/tiny.yaml", f"data.train={shards}",
           *MODEL, f"parallel.zero_stage={stage}", f"parallel.precision={args.precision}",
           f"train.steps={args.steps}", f"train.micro_batch={args.micro_batch}",
           f"train.global_batch={args.micro_batch * args.nproc}", f"logging.every={LOG_EVERY}",
           "checkpoint.every=100000", "eval.every=0", "train.ema_every=0",
           "--nproc", str(args.nproc), "--run-dir", str(run_dir)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ZeRO-{stage} run failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    records, _ = read_records(metrics_path(run_dir))
    train = [r for r in records if r["kind"] == "train"][1:]
    return {"stage": stage, "precision": args.precision, "ranks": args.nproc,
            "samples_per_s": statistics.median(r["samples_per_s"] for r in train),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train),
            "final_loss": train[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3], choices=[0, 1, 2, 3])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--micro-batch", type=int, default=4)
    args = parser.parse_args()
    if args.steps < 3 * LOG_EVERY:
        parser.error(f"--steps must be at least {3 * LOG_EVERY} (two log intervals after the warm-up one)")
    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        work = Path(tmp)
        write_synthetic(work / "shards", SyntheticSpec(shards=4, per_shard=64, latent_sizes=((8, 8),), text=TEXT))
        results = [run_stage(stage, args, work / "shards", work) for stage in args.stages]
    base = results[0]["samples_per_s"]
    print(f"{'ZeRO':>4} {'precision':>9} {'ranks':>5} {'samples/s':>10} {'tokens/s':>10} {'ratio':>6}")
    for r in results:
        r["ratio_to_first"] = r["samples_per_s"] / base
        print(f"{r['stage']:>4} {r['precision']:>9} {r['ranks']:>5} {r['samples_per_s']:>10.1f} "
              f"{r['tokens_per_s']:>10.0f} {r['ratio_to_first']:>6.2f}")
    print(json.dumps({"benchmark": "train_step", "device": "cpu", "model": MODEL, "latent": [16, 8, 8],
                      "results": results}))


if __name__ == "__main__":
    main()
