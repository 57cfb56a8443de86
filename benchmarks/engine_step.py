"""The trainer's own step through the DeepSpeed engine: throughput, MFU and memory against `plan`.

    python benchmarks/engine_step.py                              # GPU: d24 at 256 and 1024 px, ZeRO-2 and ZeRO-3, bf16
    python benchmarks/engine_step.py --cases d24-256 --stages 2 --steps 20
    python benchmarks/engine_step.py --device cpu --smoke         # a tiny case on CPU (what the test runs)
    python benchmarks/engine_step.py --cases d24-256 --stages 2 --steps 5 --profile 3 --profile-dir prof

Unlike benchmarks/gpu_step.py (plain torch), this is exactly what `mmdit-scale train` runs on one
rank: the engine from `train.engine.build_engine` (the generated DeepSpeed config: ZeRO stage,
bf16, AdamW, schedule), the batches from the real loader reading synthetic shards of the SD3 shapes
(`train.data.train_loader`), the step from `train.step.TrainStep` (flow loss, backward, optimizer,
non-finite guard) and EMA on its schedule (`train.ema.ShardedEMA`). Each case warms up, then times
`--steps` steps (CUDA events on a GPU).

MFU is the step's model FLOPs (`plan`'s exact count for the batch's tokens, as the trainer logs it)
over the card's data-sheet peak (`mmdit_scale.plan.peaks`), and over a large matmul measured in the
same run (`mfu_vs_matmul`: the attainable ceiling). `peak_memory_gb` is torch.cuda.max_memory_allocated
(null on CPU); `plan_memory_gb` is what `plan` predicts for the same config on one GPU. Prints a
table and one JSON line. Installs nothing.

`--profile N` adds a pass of N more steps under torch.profiler after the timed ones (the timed
figures are unchanged): the top kernels by self device time go to stdout and to
`--profile-dir`/CASE-zSTAGE.kernels.txt, a Chrome trace beside them, and the SDPA backend the
model's attention ran on (flash, efficient, cudnn or math) into the row's `sdpa_backend`
(null on CPU or without --profile).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.kernel_profile import profile_steps  # noqa: E402
from benchmarks.timing import matmul_flops_per_s, timed  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    recipe: str
    pixels: int
    micro_batch: int
    overrides: tuple[str, ...] = ()
    text: str = "sd3"
    """Text widths of the synthetic shards: `sd3` (CLIP-L/G + T5-XXL) or `tiny`."""


CASES = {
    "d24-256": Case("d24-256", "recipes/ladder/d24.yaml", 256, 32),
    "d24-1024": Case("d24-1024", "recipes/ladder/d24.yaml", 1024, 4),
    "smoke": Case("smoke", "recipes/tiny.yaml", 32, 4, ("model.in_channels=null", "model.context_dim=null",
                                                       "model.pooled_dim=null"), text="tiny"),
}


def write_shards(root: Path, case: Case, samples: int) -> Path:
    from data_pipeline.loader.synthetic import SD3_TEXT, TINY_TEXT, SyntheticSpec, write_synthetic

    out = root / case.name
    if not (out / "manifest.json").is_file():
        side = case.pixels // 8
        write_synthetic(out, SyntheticSpec(shards=1, per_shard=samples, latent_sizes=((side, side),),
                                           text=SD3_TEXT if case.text == "sd3" else TINY_TEXT,
                                           variants=("orig",)))
    return out


def run_case(case: Case, stage: int, precision: str, data: Path, args, device, device_name: str,
             matmul: float) -> dict:
    import torch

    from mmdit_scale.config import load_config
    from mmdit_scale.plan.memory import GIB
    from mmdit_scale.plan.peaks import mfu, peak_flops
    from mmdit_scale.plan.report import Hardware, make_plan
    from mmdit_scale.run.data_dims import fill_from_data
    from mmdit_scale.train.data import train_loader
    from mmdit_scale.train.ema import ShardedEMA
    from mmdit_scale.train.engine import build_engine, full_fp32_params, param_shapes
    from mmdit_scale.train.step import TrainStep

    cfg = load_config(REPO / case.recipe, [
        *case.overrides, f"data.train={data}", f"parallel.zero_stage={stage}", f"parallel.precision={precision}",
        f"train.micro_batch={case.micro_batch}", f"train.global_batch={case.micro_batch}", "data.num_workers=0",
        f"train.steps={args.warmup + args.steps + args.profile}", f"train.ema_every={args.ema_every}", "optim.warmup_steps=1"])
    cfg, _ = fill_from_data(cfg)
    plan = make_plan(cfg, Hardware(gpus=1))
    engine = build_engine(cfg, world_size=1)
    loader = iter(train_loader(cfg, rank=0, world_size=1))
    step_fn = TrainStep(engine, cfg, plan.layout, device, 0, 1)  # the data's token layout, as plan read it
    ema = ShardedEMA(cfg.train.ema_decay, cfg.train.ema_every, 0, 1, param_shapes(engine))
    ema.reset(full_fp32_params(engine))
    results = []

    def one(step: int) -> None:
        result = step_fn.run(step, [next(loader)])
        if ema.due(step):
            ema.update(full_fp32_params(engine))
        results.append(result)

    for step in range(1, args.warmup + 1):
        one(step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results.clear()
    counter = iter(range(args.warmup + 1, args.warmup + args.steps + args.profile + 1))  # the profile pass goes on
    seconds = timed(lambda: one(next(counter)), device, args.steps)
    applied = all(r.applied for r in results)
    samples = sum(r.samples for r in results)
    flops = sum(r.flops for r in results)
    peak = peak_flops(device_name, precision)
    out = {
        "engine": "deepspeed", "case": case.name, "zero_stage": stage, "precision": precision,
        "device": device_name, "params": plan.params.total, "micro_batch": case.micro_batch,
        "steps": args.steps, "applied": applied, "step_ms": 1000 * seconds / args.steps,
        "samples_per_s": samples / seconds, "tokens_per_s": sum(r.tokens for r in results) / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": mfu(flops, seconds, 1, peak), "mfu_vs_matmul": flops / seconds / matmul,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
        "plan_memory_gb": plan.memory[stage].total / GIB,
        "sdpa_backend": None, "profile": None,
    }
    if args.profile:
        out["profile"] = profile_steps(lambda: one(next(counter)), args.profile, device, args.profile_dir,
                                       f"{case.name}-z{stage}", out["step_ms"])
        out["sdpa_backend"] = out["profile"]["sdpa_backend"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="d24-256,d24-1024", help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--stages", default="2,3", help="ZeRO stages, comma-separated")
    ap.add_argument("--precision", default=None, help="bf16 (GPU default) or fp32 (CPU default)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ema-every", type=int, default=2, help="train.ema_every (so EMA runs in the timed steps)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--smoke", action="store_true", help="the tiny case only, few steps (CPU test)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile N steps after the timed ones (top kernels, Chrome trace, SDPA backend)")
    ap.add_argument("--profile-dir", type=Path, default=Path("engine-profile"),
                    help="where --profile writes CASE-zSTAGE.kernels.txt and .trace.json.gz")
    ap.add_argument("--data", type=Path, default=None, help="where to write the synthetic shards (default: a temp dir)")
    args = ap.parse_args()
    if args.smoke:
        args.cases, args.steps, args.warmup = "smoke", 2, 1
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.device == "cpu" else "cuda")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")

    import warnings

    import deepspeed
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")  # DeepSpeed's own calls
    device = torch.device(args.device)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    matmul = matmul_flops_per_s(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    tmp = tempfile.TemporaryDirectory(prefix="engine-step-")
    root = args.data or Path(tmp.name)
    rows = []
    for name in args.cases.split(","):
        case = CASES[name]
        data = write_shards(root, case, samples=case.micro_batch * (args.warmup + args.steps + args.profile + 1))
        for stage in (int(s) for s in args.stages.split(",")):
            rows.append(run_case(case, stage, precision, data, args, device, device_name, matmul))
    print(f"{device_name}: matmul {matmul / 1e12:.1f} TFLOP/s ({precision})")
    print(f"{'case':<10}{'ZeRO':>5}{'ms/step':>9}{'samples/s':>11}{'tokens/s':>11}{'MFU':>7}{'vs matmul':>11}"
          f"{'peak GB':>9}{'plan GB':>9}")
    for r in rows:
        mfu_text = "n/a" if r["mfu"] is None else f"{r['mfu']:.3f}"
        peak_text = "n/a" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}"
        print(f"{r['case']:<10}{r['zero_stage']:>5}{r['step_ms']:>9.1f}{r['samples_per_s']:>11.1f}"
              f"{r['tokens_per_s']:>11.0f}{mfu_text:>7}{r['mfu_vs_matmul']:>11.3f}{peak_text:>9}"
              f"{r['plan_memory_gb']:>9.1f}")
    print(json.dumps({"benchmark": "engine_step", "device": device_name, "matmul_tflops": matmul / 1e12,
                      "results": rows}))
    tmp.cleanup()


if __name__ == "__main__":
    main()
