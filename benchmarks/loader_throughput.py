"""Loader throughput against the raw read speed of the same shard bytes, in one run.

    python benchmarks/loader_throughput.py [--data DIR] [--samples 384] [--workers 2[,4,...]] [--repeat 3]

Without --data it writes synthetic shards of the real SD3 shapes at 256 px (latent 16x32x32,
CLIP-L 77x768, CLIP-G 77x1280, T5 77x4096, pooled 768+1280, both caption variants, bf16)
through the real sample format. It then measures, on a warm page cache:
- raw: sequential `readinto` of every tar into one reused 4 MiB buffer (the copy ceiling);
- the loader delivering collated batches with 0 workers (one process), with the shard check a
  first open makes (`verify` sha256, size; none on the other rows), then with N reader threads
  and N DataLoader worker processes.
Each loader window is compared with raw reads made right before and right after it (their mean
rate), so load from other jobs that comes and goes shifts both sides of a ratio alike; with
--repeat the configurations run in turn that many times and the table gives the median ratio
and its range. "shard MB/s" counts the shard bytes the delivered samples occupy on disk (what
raw reads); the loader copies only the latent and the kept text tensors of the chosen caption
variant, so the batch bytes it writes are fewer ("batch MB/s"). On Linux it also counts the CPU
time of the loader's processes: "cores" is how many it kept busy, and "per CPU vs raw" compares
shard bytes per CPU second with raw's, which stays meaningful where processes outnumber free
cores (then "per proc vs raw" only says that they shared them). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
from data_pipeline.manifest import Manifest


def cpu_seconds() -> float:
    """CPU time used so far by this process (all threads) and its live children (DataLoader
    workers), from /proc; NaN where there is none."""
    try:
        pids = {os.getpid()}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        ticks = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")


def raw_read(paths: list[Path]) -> tuple[float, float]:
    """MB/s of one sequential pass over the files, and MB per CPU second."""
    buf = memoryview(bytearray(4 << 20))
    total, start, cpu = 0, time.perf_counter(), time.process_time()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total / (time.perf_counter() - start) / 1e6, total / (time.process_time() - cpu) / 1e6


def batch_bytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for k, v in batch.items() if k in ("latent", "context", "pooled"))


def run_loader(data: str, cfg: LoaderConfig, samples: int, seconds: float) -> tuple[float, float, int, int]:
    """Seconds, CPU seconds, samples and batch bytes for at least `samples` samples and `seconds`
    seconds, after two batches per stream (every stream has filled its shuffle buffer and prefetches)."""
    it = iter(ShardLoader(data, cfg))
    for _ in range(2 * cfg.streams_per_rank):
        next(it)
    # The full collection that start-up allocations (imports) trigger a few hundred samples in
    # walks every object once (0.15-0.25 s here) and then not again for thousands of batches:
    # run it now rather than inside a one-second window.
    gc.collect()
    n = nbytes = 0
    start, cpu = time.perf_counter(), cpu_seconds()
    while n < samples or time.perf_counter() - start < seconds:
        batch = next(it)
        n += batch["latent"].shape[0]
        nbytes += batch_bytes(batch)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    it.close()
    return elapsed, cpu, n, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="prepared shard directory (default: write synthetic SD3-shaped shards)")
    ap.add_argument("--samples", type=int, default=384, help="synthetic samples to write / samples to time")
    ap.add_argument("--seconds", type=float, default=1.0, help="time each loader window at least this long")
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--buffer", type=int, default=64, help="shuffle buffer (samples per stream)")
    ap.add_argument("--workers", default="2", help="comma-separated worker counts to measure")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over all configurations")
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
    # The shard check at first open (LoaderConfig.verify) is timed on its own row: in the window of
    # one epoch every shard is opened for the first time, so that row pays it in full.
    base = dict(batch_size=args.batch_size, shuffle_buffer=args.buffer, verify="none")
    counts = [int(n) for n in args.workers.split(",")]
    runs = [("loader", 1, LoaderConfig(**base)),
            ("loader, sha256 check", 1, LoaderConfig(**{**base, "verify": "sha256"})),
            ("loader, size check", 1, LoaderConfig(**{**base, "verify": "size"}))]
    runs += [(f"loader {n} threads", n, LoaderConfig(**base, num_workers=n, worker_type="thread")) for n in counts]
    runs += [(f"loader {n} processes", n, LoaderConfig(**base, num_workers=n, worker_type="process")) for n in counts]
    # name -> per round (samples/s, shard MB/s, batch MB/s, raw MB/s around the window, cores used,
    # shard MB per CPU s, raw MB per CPU s)
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name, _, _ in runs}
    for _ in range(args.repeat):
        for name, procs, cfg in runs:
            before = raw_read(paths)
            seconds, cpu, n, nbytes = run_loader(args.data, cfg, args.samples, args.seconds)
            after = raw_read(paths)
            shard_mb = n * per_sample / 1e6
            results[name].append((n / seconds, shard_mb / seconds, nbytes / seconds / 1e6,
                                  (before[0] + after[0]) / 2, cpu / seconds, shard_mb / cpu,
                                  (before[1] + after[1]) / 2))

    print(f"shards: {args.data}  ({manifest.samples} samples, {per_sample / 1e6:.3f} MB each on disk, "
          f"{os.cpu_count()} cores, {args.repeat} round(s); medians, ratio range in brackets)")
    print(f"{'reader':<22}{'procs':>6}{'samples/s':>11}{'shard MB/s':>12}{'batch MB/s':>12}{'raw MB/s':>10}"
          f"{'cores':>7}{'per proc vs raw':>24}{'per CPU vs raw':>24}")
    summary = {}

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

    for name, procs, _ in runs:
        rows = results[name]
        ratios = [r[1] / procs / r[3] for r in rows]
        cpu_ratios = [r[5] / r[6] for r in rows]
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        print(f"{name:<22}{procs:>6}{med[0]:>11.0f}{med[1]:>12.0f}{med[2]:>12.0f}{med[3]:>10.0f}{med[4]:>7.2f}"
              f"{spread(ratios):>24}{spread(cpu_ratios):>24}")
        summary[name.replace(" ", "_")] = {
            "procs": procs, "samples_per_s": round(med[0], 1), "shard_mb_per_s": round(med[1], 1),
            "batch_mb_per_s": round(med[2], 1), "raw_mb_per_s": round(med[3], 1), "cores_used": round(med[4], 2),
            "ratio_per_proc_vs_raw": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "ratio_per_cpu_vs_raw": round(statistics.median(cpu_ratios), 3),
            "cpu_ratios": [round(r, 3) for r in cpu_ratios]}
    print(json.dumps({"benchmark": "loader_throughput", "bytes_per_sample": round(per_sample),
                      "batch_size": args.batch_size, "cores": os.cpu_count(), "rounds": args.repeat, **summary}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
