"""Timing shared by the GPU benchmarks: CUDA events after a synchronise on a GPU, wall clock on CPU,
and the bf16 matmul rate that MFU-style ratios are measured against in the same run."""
from __future__ import annotations

import time


def timed(fn, device, iters: int) -> float:
    """Seconds for `iters` calls of `fn`, with the device's queue drained before and after."""
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - begin


def matmul_flops_per_s(device, dtype) -> float:
    """FLOP/s of a large matmul on this device in `dtype`: the attainable ceiling."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = timed(lambda: a @ b, device, 10)
    return 2 * n**3 * 10 / seconds
