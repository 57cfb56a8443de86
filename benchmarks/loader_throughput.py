"""Loader throughput against the raw read speed of the same shard bytes, in one run.

    python benchmarks/loader_throughput.py [--data DIR] [--samples 384] [--workers 2[,4,...]]

Without --data it writes synthetic shards of the real SD3 shapes at 256 px (latent 16x32x32,
CLIP-L 77x768, CLIP-G 77x1280, T5 77x4096, pooled 768+1280, both caption variants, bf16)
through the real sample format. It then measures, on a warm page cache:
- raw: sequential `readinto` of every tar into one reused 4 MiB buffer (the copy ceiling);
- the loader delivering collated batches with 0 workers (one process), then with N reader
  threads and N DataLoader worker processes.
"shard MB/s" counts the shard bytes the delivered samples occupy on disk (what raw reads);
the loader copies only the latent and the kept text tensors of the chosen caption variant, so
the batch bytes it writes are fewer ("batch MB/s"). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
from data_pipeline.manifest import Manifest


def raw_read(paths: list[Path]) -> tuple[float, int]:
    buf = memoryview(bytearray(4 << 20))
    total, start = 0, time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return time.perf_counter() - start, total


def batch_bytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for k, v in batch.items() if k in ("latent", "context", "pooled"))


def run_loader(data: str, cfg: LoaderConfig, samples: int) -> tuple[float, int, int]:
    """Seconds, samples and batch bytes for `samples` samples, after two batches per stream
    (every stream has filled its shuffle buffer and started prefetching)."""
    it = iter(ShardLoader(data, cfg))
    for _ in range(2 * cfg.streams_per_rank):
        next(it)
    n = nbytes = 0
    start = time.perf_counter()
    while n < samples:
        batch = next(it)
        n += batch["latent"].shape[0]
        nbytes += batch_bytes(batch)
    seconds = time.perf_counter() - start
    it.close()
    return seconds, n, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="prepared shard directory (default: write synthetic SD3-shaped shards)")
    ap.add_argument("--samples", type=int, default=384, help="synthetic samples to write / samples to time")
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--buffer", type=int, default=64, help="shuffle buffer (samples per stream)")
    ap.add_argument("--workers", default="2", help="comma-separated worker counts to measure")
    args = ap.parse_args()

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="loader-bench-")
        args.data = tmp.name
        write_synthetic(Path(args.data), SyntheticSpec(shards=-(-args.samples // args.per_shard),
                                                       per_shard=args.per_shard))
    manifest = Manifest.load(args.data)
    paths = [Path(args.data) / s.name for s in manifest.shards]
    per_sample = sum(os.path.getsize(p) for p in paths) / manifest.samples

    raw_read(paths)  # warm the page cache
    raw_s, raw_bytes = min((raw_read(paths) for _ in range(3)), key=lambda r: r[0])
    raw_mb = raw_bytes / raw_s / 1e6
    rows = [("raw readinto", 1, raw_bytes / per_sample / raw_s, raw_mb, float("nan"))]
    base = dict(batch_size=args.batch_size, shuffle_buffer=args.buffer)
    counts = [int(n) for n in args.workers.split(",")]
    runs = [("loader", 1, LoaderConfig(**base))]
    runs += [(f"loader {n} threads", n, LoaderConfig(**base, num_workers=n, worker_type="thread")) for n in counts]
    runs += [(f"loader {n} processes", n, LoaderConfig(**base, num_workers=n, worker_type="process")) for n in counts]
    for name, procs, cfg in runs:
        seconds, n, nbytes = run_loader(args.data, cfg, args.samples)
        rows.append((name, procs, n / seconds, n * per_sample / seconds / 1e6, nbytes / seconds / 1e6))

    print(f"shards: {args.data}  ({manifest.samples} samples, {per_sample / 1e6:.3f} MB each on disk, "
          f"{os.cpu_count()} cores)")
    print(f"{'reader':<22}{'procs':>6}{'samples/s':>11}{'shard MB/s':>12}{'batch MB/s':>12}{'per proc vs raw':>17}")
    for name, procs, sps, mbs, bmb in rows:
        print(f"{name:<22}{procs:>6}{sps:>11.0f}{mbs:>12.0f}{bmb:>12.0f}{mbs / procs / raw_mb:>17.2f}")
    result = {r[0].replace(" ", "_"): {"samples_per_s": round(r[2], 1), "shard_mb_per_s": round(r[3], 1),
                                       "batch_mb_per_s": round(r[4], 1),
                                       "ratio_per_proc_vs_raw": round(r[3] / r[1] / raw_mb, 3)} for r in rows[1:]}
    print(json.dumps({"benchmark": "loader_throughput", "raw_mb_per_s": round(raw_mb, 1),
                      "bytes_per_sample": round(per_sample), "batch_size": args.batch_size, "cores": os.cpu_count(),
                      "ratio_loader_vs_raw": round(rows[1][3] / raw_mb, 3), **result}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
