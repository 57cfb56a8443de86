"""Host memory per rank while the ZeRO-3 engine is built: sharded build (zero.Init) against whole build.

    python benchmarks/build_memory.py --nproc 2                    # d8 at width 1024: 293M parameters
    python benchmarks/build_memory.py --nproc 2 --depth 12         # 444M

Each build runs in fresh processes (`--nproc` DeepSpeed ranks on gloo, CPU) and calls the trainer's
own `train.engine.build_engine` for ZeRO-3 fp32, once with the default sharded build and once with
`sharded_build=False` (the whole model first, as before): the reference in the same run. Per rank,
the peak resident memory (VmHWM, reset through /proc/self/clear_refs just before the build) minus
the resident memory before it, over the model's full fp32 bytes:
- `peak_rank_over_model`: up to the moment the initialised model exists, before
  `deepspeed.initialize` (read in the `prepare` callback that `train.init_from` uses): what the
  sharded build removes. A whole build is at least 1.0 here; a sharded one is 1/world plus one
  module gathered at a time.
- `engine_peak_rank_over_model`: the whole `build_engine` call, `deepspeed.initialize` included.
  DeepSpeed's ZeRO-3 optimizer allocates its AdamW state (two fp32 moments) and a gradient buffer
  for the rank's partition at construction, so this has a floor of about 3/world whichever build.
- `after_rank_over_model`: what stays resident once the engine is built.
The highest rank is reported. Prints a table and one JSON line. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDTH = 1024
HEADS = 16
INPUTS = ("model.in_channels=16", "model.context_dim=64", "model.pooled_dim=64")
"""No data is read: the input dims the manifest would give are set here."""


def _kib(field: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux clear_refs, value 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def overrides(args: argparse.Namespace, workdir: str) -> list[str]:
    return [f"data.train={workdir}", *INPUTS, f"model.depth={args.depth}", f"model.hidden_size={WIDTH}",
            f"model.num_heads={HEADS}", "parallel.zero_stage=3", "parallel.precision=fp32",
            f"train.global_batch={args.nproc}", "train.micro_batch=1"]


def _rank(rank: int, world: int, port: int, sharded: bool, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed

    from mmdit_scale.config import load_config
    from mmdit_scale.train.engine import build_engine

    deepspeed.init_distributed(dist_backend="gloo")
    cfg = load_config(REPO / "recipes" / "tiny.yaml", overrides(args, str(Path(out).parent)))
    deepspeed.comm.barrier()
    before = _kib("VmRSS")
    _reset_peak()
    seen: dict[str, int] = {}

    def probe(model, gathered) -> None:  # runs once the model is built and initialised
        seen["model_peak"] = _kib("VmHWM")

    build_engine(cfg, world, prepare=probe, sharded_build=sharded)
    result = {"rank": rank, "before_kib": before, "model_peak_kib": seen["model_peak"] - before,
              "engine_peak_kib": _kib("VmHWM") - before, "after_kib": _kib("VmRSS") - before}
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    deepspeed.comm.barrier()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(sharded: bool, args: argparse.Namespace, workdir: Path) -> dict:
    import torch.multiprocessing as mp

    out = workdir / ("sharded" if sharded else "whole")
    mp.spawn(_rank, args=(args.nproc, _free_port(), sharded, args, str(out)), nprocs=args.nproc, join=True)
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(args.nproc)]
    return {key: max(r[key] for r in ranks) for key in ("model_peak_kib", "engine_peak_kib", "after_kib")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="DeepSpeed ranks (gloo, CPU)")
    parser.add_argument("--depth", type=int, default=8, help=f"blocks of width {WIDTH} (8: 293M parameters)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from mmdit_scale.config import load_config
    from mmdit_scale.plan.params import count_parameters

    with tempfile.TemporaryDirectory(prefix="build-memory-") as tmp:
        workdir = Path(tmp)
        params = count_parameters(load_config(REPO / "recipes" / "tiny.yaml", overrides(args, tmp)).model).total
        model_kib = params * 4 / 1024
        rows = {name: measure(sharded, args, workdir) for name, sharded in (("whole", False), ("sharded", True))}
    ratio = {name: {key.removesuffix("_kib"): round(value / model_kib, 3) for key, value in row.items()}
             for name, row in rows.items()}
    print(f"ZeRO-3 fp32 build, {args.nproc} ranks, {params / 1e6:.0f}M parameters "
          f"({model_kib / 2**20:.2f} GiB fp32); per-rank rise over the model's fp32 bytes (highest rank)")
    print(f"{'build':<9}{'model built':>13}{'engine built':>14}{'resident after':>16}")
    for name, r in ratio.items():
        print(f"{name:<9}{r['model_peak']:>13.3f}{r['engine_peak']:>14.3f}{r['after']:>16.3f}")
    print(json.dumps({
        "benchmark": "build_memory", "nproc": args.nproc, "depth": args.depth, "params": params,
        "zero_stage": 3, "precision": "fp32",
        "peak_rank_over_model": ratio["sharded"]["model_peak"],
        "whole_peak_rank_over_model": ratio["whole"]["model_peak"],
        "engine_peak_rank_over_model": ratio["sharded"]["engine_peak"],
        "whole_engine_peak_rank_over_model": ratio["whole"]["engine_peak"],
        "after_rank_over_model": ratio["sharded"]["after"],
        "sharded_over_whole_model_peak": round(ratio["sharded"]["model_peak"] / ratio["whole"]["model_peak"], 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
