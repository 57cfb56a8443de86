"""One-GPU bf16 training step of the MM-DiT: throughput and MFU against a matmul measured in the same run.

    python benchmarks/gpu_step.py                       # d24 at 256 px and at 1024 px
    python benchmarks/gpu_step.py --cases d24-256 --iters 20 --compile

A step is what the trainer's bf16 mode computes per micro-batch: forward and backward of the
rectified-flow loss under bf16 autocast, then a fused AdamW update of fp32 master weights. It runs
plain torch (no DeepSpeed, which the GPU image lacks) on one card, so it measures the model and
optimizer, not ZeRO communication.

MFU counts model FLOPs only (`mmdit_scale.plan.training_flops`: every matmul, dual-stream, no
recomputation) and divides by two peaks: the bf16 dense peak of the card's data sheet, and the rate
of a large bf16 matmul measured in this run (the attainable ceiling; ENVIRONMENT_NOTES saw about
790 TFLOP/s on H100 and H200). Correctness comes first: the bf16 output must match fp32 closely and
the loss must be finite, or nothing is timed. Prints a table and one JSON line. Installs nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmdit_scale.interop.parity import max_rel_diff, randomise_parameters  # noqa: E402
from mmdit_scale.model import MMDiT, MMDiTConfig  # noqa: E402
from mmdit_scale.plan.flops import training_flops  # noqa: E402
from mmdit_scale.plan.peaks import PEAK_TFLOPS, PLAN_GPU  # noqa: E402
from mmdit_scale.plan.tokens import SD3_LAYOUT, Tokens  # noqa: E402

DEVICE = torch.device("cuda")
"""Set from --device in main(); cuda unless smoke-testing the script on a CPU."""

BF16_TOLERANCE = 5e-2
"""Max relative difference of the bf16-autocast output against fp32 before timing is allowed."""


@dataclass(frozen=True)
class Case:
    name: str
    depth: int
    pixels: int
    batch: int

    def config(self) -> MMDiTConfig:
        latent = self.pixels // 8
        # SD3's table: 192 positions for its 1024 px base (128 latent); keep max/base = 1.5.
        return MMDiTConfig.from_depth(self.depth, sample_size=latent, pos_embed_max_size=max(latent * 3 // 4, 16),
                                      qk_norm=True)


CASES = {
    "d24-256": Case("d24-256", depth=24, pixels=256, batch=32),
    "d24-1024": Case("d24-1024", depth=24, pixels=1024, batch=4),
    "tiny": Case("tiny", depth=2, pixels=128, batch=2),  # `--device cpu --cases tiny`: a smoke run of this script
}


def time_ms(fn, iters: int, warmup: int) -> list[float]:
    """Per-call milliseconds: CUDA events on a GPU, the wall clock on a CPU."""
    cuda = DEVICE.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def matmul_tflops(n: int, iters: int = 20) -> float:
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    ms = statistics.median(time_ms(lambda: a @ b, iters, warmup=5))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def inputs(cfg: MMDiTConfig, case: Case, batch: int, seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    side = case.pixels // 8
    x0 = torch.randn(batch, cfg.in_channels, side, side, device=DEVICE, generator=gen)
    noise = torch.randn(x0.shape, device=DEVICE, generator=gen)
    t = torch.sigmoid(torch.randn(batch, device=DEVICE, generator=gen))  # lognorm(0, 1)
    context = torch.randn(batch, SD3_LAYOUT.text, cfg.context_dim, device=DEVICE, generator=gen)
    pooled = torch.randn(batch, cfg.pooled_dim, device=DEVICE, generator=gen)
    return x0, noise, t, context, pooled


def check_numerics(model: MMDiT, cfg: MMDiTConfig, case: Case) -> float:
    """bf16 autocast vs fp32 on two samples; random weights everywhere, since at init the output is 0."""
    randomise_parameters(model, seed=0)
    with torch.no_grad():
        x0, noise, t, context, pooled = inputs(cfg, case, batch=2, seed=1)
        ref = model(x0, t, context, pooled)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            out = model(x0, t, context, pooled)
    rel = max_rel_diff(out, ref)
    if not rel <= BF16_TOLERANCE:
        raise SystemExit(f"{case.name}: bf16 output differs from fp32 by {rel:.3g}; refusing to time")
    return rel


def bench(case: Case, iters: int, warmup: int, compile_model: bool, matmul: float, peak: float) -> dict:
    cfg = case.config()
    with torch.device("meta"):
        model = MMDiT(cfg)
    model.to_empty(device=DEVICE)
    model.init_weights()
    rel = check_numerics(model, cfg, case)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-15, fused=True)
    step_model = torch.compile(model) if compile_model else model
    x0, noise, t, context, pooled = inputs(cfg, case, case.batch)
    z_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    target = noise - x0
    losses = []

    def step():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            loss = F.mse_loss(step_model(z_t, t, context, pooled).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_ms(step, iters, warmup)
    if not all(torch.isfinite(torch.stack(losses))):
        raise SystemExit(f"{case.name}: non-finite loss during timing")
    ms = statistics.median(times)
    tokens = Tokens(image=(case.pixels // 16) ** 2, text=SD3_LAYOUT.text)
    flops = training_flops(cfg, tokens).training * case.batch
    achieved = flops / (ms * 1e-3) / 1e12
    result = dict(case=case.name, depth=case.depth, pixels=case.pixels, batch=case.batch, tokens=tokens.total,
                  compile=compile_model, step_ms=ms, samples_per_s=case.batch / (ms * 1e-3),
                  model_tflops=achieved, mfu_vs_matmul=achieved / matmul,
                  mfu_vs_peak=achieved / peak,
                  peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else float("nan"),
                  bf16_rel_diff=rel)
    del model, opt, step_model
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="d24-256,d24-1024", help=f"comma-separated, of {sorted(CASES)}")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS[PLAN_GPU]["bf16"],
                        help="data-sheet dense bf16 peak of the card (default: H100/H200)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test the script (--cases tiny)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_step needs a CUDA device")
    name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    matmul = matmul_tflops(8192 if DEVICE.type == "cuda" else 512)
    peak = args.peak_tflops
    results = []
    for key in args.cases.split(","):
        for compiled in (False, True) if args.compile else (False,):
            results.append(bench(CASES[key], args.iters, args.warmup, compiled, matmul, peak))
    print(f"gpu_step: {name}, torch {torch.__version__}, bf16 matmul {matmul:.0f} TFLOP/s measured"
          f" (data-sheet peak {peak:.0f})")
    print(f"{'case':<10} {'batch':>5} {'tokens':>6} {'compile':>7} {'step ms':>9} {'samples/s':>10} "
          f"{'TFLOP/s':>8} {'MFU/matmul':>10} {'MFU/peak':>8} {'mem GiB':>8}")
    for r in results:
        print(f"{r['case']:<10} {r['batch']:>5} {r['tokens']:>6} {str(r['compile']):>7} {r['step_ms']:>9.1f} "
              f"{r['samples_per_s']:>10.1f} {r['model_tflops']:>8.0f} {r['mfu_vs_matmul']:>10.3f} {r['mfu_vs_peak']:>8.3f} "
              f"{r['peak_mem_gib']:>8.1f}")
    print(json.dumps(dict(benchmark="gpu_step", device=name, torch=torch.__version__, matmul_tflops=matmul,
                          results=results)))


if __name__ == "__main__":
    main()
