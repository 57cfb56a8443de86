"""A few steps under torch.profiler: the top kernels by self device time, a Chrome trace, and
which scaled-dot-product-attention backend ran.

Profiling runs in its own pass after the timed one, because the profiler's hooks slow the host
side of every op: the timed figures stay unprofiled, and the kernels' share of a step is given
against the unprofiled step time.
"""
from __future__ import annotations

from pathlib import Path

SDPA_BACKENDS = {
    # The dispatcher's op names, not kernel names: kernel names change with the card and the
    # library version (flash_fwd..., fmha_cutlassF..., cudnn...), the aten ops SDPA picks do not.
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
}
"""CUDA backends only: on CPU SDPA runs `..._flash_attention_for_cpu`, and the backend is null there."""


def sdpa_backend(op_names) -> str | None:
    """The SDPA backend(s) among profiled op names ("flash", "efficient+math", ...), None if none ran."""
    found = sorted({SDPA_BACKENDS[name] for name in op_names if name in SDPA_BACKENDS})
    return "+".join(found) or None


def profile_steps(step, steps: int, device, out_dir: Path, label: str, step_ms: float, top: int = 15) -> dict:
    """Run `step` `steps` times under the profiler; write `label`.kernels.txt and `label`.trace.json
    (gzipped) into `out_dir`; return the top rows, the trace's path and the SDPA backend.

    On a GPU the rows are device kernels by self device time; on CPU, where there are no kernels,
    they are the ops by self CPU time (what the smoke test checks). `pct_of_step` is a row's time
    over `steps` unprofiled steps of `step_ms` each.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / f"{label}.trace.json.gz"  # gzipped by the profiler: a d24 step holds thousands of events
    prof.export_chrome_trace(str(trace))
    events = prof.key_averages()
    kind = DeviceType.CUDA if cuda else DeviceType.CPU

    def self_us(e) -> float:  # CPU ops also carry their kernels' time as "self device": count kernels only
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    ranked = sorted((e for e in events if e.device_type == kind), key=self_us, reverse=True)
    total_us = sum(self_us(e) for e in ranked)
    step_total_ms = steps * step_ms
    rows = [{"name": e.key, "calls": e.count, "total_ms": self_us(e) / 1000,
             "pct_of_step": 100 * self_us(e) / 1000 / step_total_ms} for e in ranked[:top]]
    backend = sdpa_backend(e.key for e in events) if cuda else None
    what = "kernels by self device time" if cuda else "ops by self CPU time (no kernels on CPU)"
    lines = [f"{label}: top {len(rows)} {what} over {steps} profiled steps; "
             f"{'device' if cuda else 'CPU'} busy {total_us / 1000 / steps:.1f} ms per step, "
             f"unprofiled step {step_ms:.1f} ms; SDPA backend: {backend}",
             f"{'name':<90}{'calls':>8}{'total ms':>11}{'% of step':>11}"]
    lines += [f"{r['name'][:88]:<90}{r['calls']:>8}{r['total_ms']:>11.2f}{r['pct_of_step']:>11.1f}" for r in rows]
    text = "\n".join(lines)
    (out_dir / f"{label}.kernels.txt").write_text(text + "\n")
    print(text)
    return {"steps": steps, "busy_ms_per_step": total_us / 1000 / steps, "trace": str(trace),
            "top": rows, "sdpa_backend": backend}
