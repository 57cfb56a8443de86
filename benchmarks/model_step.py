"""Forward + backward time of our MMDiT against diffusers' SD3Transformer2DModel, same config and weights.

    python benchmarks/model_step.py                       # --preset cpu: a tiny and a CPU-sized config
    python benchmarks/model_step.py --preset gpu          # CUDA, bf16 autocast, depth 24 at 256 px and 1024 px

Both models hold the same weights (ours converted from diffusers' through mmdit_scale.interop, all parameters
randomised, the zero-init ones too). The forward outputs are compared first in float32 (max relative
difference, max|ours - theirs| / max|theirs|); then, after warm-up, every iteration times one training step
of each model, alternating which goes first, and the table reports the medians and the median per-iteration
ratio ours/theirs. The last line is the same as JSON. Installs nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmdit_scale.interop import from_diffusers  # noqa: E402
from mmdit_scale.interop.diffusers_sd3 import config_to_diffusers  # noqa: E402
from mmdit_scale.interop.parity import max_rel_diff, randomise_parameters  # noqa: E402
from mmdit_scale.model import MMDiTConfig  # noqa: E402

NUMERICS_TOLERANCE = 1e-4
"""Float32 max relative difference above which the timing is refused (parity tests hold 1e-5)."""


@dataclass
class Case:
    name: str
    cfg: MMDiTConfig
    batch: int
    latent: int
    text_tokens: int

    @property
    def image_tokens(self) -> int:
        return (self.latent // self.cfg.patch_size) ** 2


def presets(name: str) -> list[Case]:
    if name == "cpu":
        return [
            Case("tiny", MMDiTConfig(depth=2, hidden_size=128, num_heads=2, in_channels=16, context_dim=64,
                                     pooled_dim=32, pos_embed_max_size=32, sample_size=32),
                 batch=2, latent=16, text_tokens=16),
            Case("cpu-d4-h256", MMDiTConfig.from_depth(4, hidden_size=256), batch=2, latent=32, text_tokens=154),
        ]
    return [
        Case("d24-256px", MMDiTConfig.from_depth(24), batch=16, latent=32, text_tokens=154),
        Case("d24-1024px", MMDiTConfig.from_depth(24), batch=2, latent=128, text_tokens=154),
    ]


def build(case: Case, device: torch.device):
    from diffusers import SD3Transformer2DModel

    with device:  # built in place: initialising a 2B model on the host first would dominate a GPU run
        theirs = SD3Transformer2DModel(**config_to_diffusers(case.cfg))
    randomise_parameters(theirs, seed=0)
    ours = from_diffusers(theirs)
    return ours, theirs


def make_inputs(case: Case, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cfg = case.cfg
    shapes = dict(x=(case.batch, cfg.in_channels, case.latent, case.latent),
                  context=(case.batch, case.text_tokens, cfg.context_dim), pooled=(case.batch, cfg.pooled_dim),
                  target=(case.batch, cfg.out_channels, case.latent, case.latent))
    inputs = {k: torch.randn(s, generator=gen).to(device) for k, s in shapes.items()}
    inputs["t"] = torch.rand(case.batch, generator=gen).to(device)
    return inputs


def run_ours(model, inp):
    return model(inp["x"], inp["t"], inp["context"], inp["pooled"])


def run_theirs(model, inp):
    return model(inp["x"], inp["context"], inp["pooled"], 1000 * inp["t"], return_dict=False)[0]


@torch.no_grad()
def output_rel_diff(ours, theirs, inp) -> float:
    return max_rel_diff(run_ours(ours, inp), run_theirs(theirs, inp))


def step(run, model, inp, autocast) -> None:
    with autocast():
        out = run(model, inp)
    loss = (out.float() - inp["target"]).square().mean()
    loss.backward()
    for p in model.parameters():
        p.grad = None


class Timer:
    """Milliseconds of one callable: CUDA events on a GPU (after a synchronize), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        start_s = time.perf_counter()
        fn()
        return (time.perf_counter() - start_s) * 1e3


def bench_case(case: Case, device: torch.device, dtype: str, iters: int, warmup: int) -> dict:
    ours, theirs = build(case, device)
    inp = make_inputs(case, device, seed=1)
    rel = output_rel_diff(ours, theirs, inp)
    if not rel <= NUMERICS_TOLERANCE:
        raise SystemExit(f"{case.name}: outputs differ (max rel diff {rel:.3g}); refusing to time")
    if dtype == "bf16":
        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    timer = Timer(device)
    runs = {"ours": lambda: step(run_ours, ours, inp, autocast),
            "theirs": lambda: step(run_theirs, theirs, inp, autocast)}
    for _ in range(warmup):
        runs["ours"]()
        runs["theirs"]()
    times = {"ours": [], "theirs": []}
    for i in range(iters):
        order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
        for name in order:
            times[name].append(timer(runs[name]))
    ratios = [a / b for a, b in zip(times["ours"], times["theirs"])]
    result = dict(case=case.name, depth=case.cfg.depth, hidden=case.cfg.hidden_size, heads=case.cfg.num_heads,
                  params=sum(p.numel() for p in ours.parameters()), batch=case.batch,
                  image_tokens=case.image_tokens, text_tokens=case.text_tokens,
                  ours_ms=statistics.median(times["ours"]), theirs_ms=statistics.median(times["theirs"]),
                  ratio=statistics.median(ratios), max_rel_diff=rel)
    del ours, theirs, inp, runs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--device", default=None, help="default: cpu for --preset cpu, cuda for --preset gpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                        help="bf16 = autocast over float32 weights; default fp32 on cpu, bf16 on gpu")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per model (default 20 cpu, 30 gpu)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    gpu = args.preset == "gpu"
    device = torch.device(args.device or ("cuda" if gpu else "cpu"))
    dtype = args.dtype or ("bf16" if gpu else "fp32")
    iters = args.iters or (30 if gpu else 20)
    torch.manual_seed(0)
    if device.type == "cuda":
        card = torch.cuda.get_device_name(device)
    else:
        card = f"cpu ({torch.get_num_threads()} threads)"
    import diffusers

    print(f"model_step: {card}, torch {torch.__version__}, diffusers {diffusers.__version__}, {dtype}, "
          f"{iters} iters after {args.warmup} warm-up, fwd+bwd per step")
    results = [bench_case(case, device, dtype, iters, args.warmup) for case in presets(args.preset)]
    header = f"{'case':<12} {'params':>14} {'batch':>5} {'img+txt':>9} {'ours ms':>10} {'diffusers ms':>13} " \
             f"{'ours/theirs':>11} {'max rel diff':>12}"
    print(header)
    for r in results:
        print(f"{r['case']:<12} {r['params']:>14,} {r['batch']:>5} {r['image_tokens']:>5}+{r['text_tokens']:<3} "
              f"{r['ours_ms']:>10.2f} {r['theirs_ms']:>13.2f} {r['ratio']:>11.3f} {r['max_rel_diff']:>12.2e}")
    print(json.dumps(dict(benchmark="model_step", device=card, dtype=dtype, torch=torch.__version__,
                          diffusers=diffusers.__version__, iters=iters, results=results)))


if __name__ == "__main__":
    main()
