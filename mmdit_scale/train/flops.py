"""Model FLOPs utilisation (MFU): device peaks and the ratio.

The FLOPs per sample are the reference card's dual-stream formula 72 L D^2 S + 12 L D S^2
(`mmdit_scale.plan.flops.headline_flops`; `mmdit-scale plan` also gives the exact matmul count).
Pure Python: no torch.
"""
from __future__ import annotations

PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
}
"""Dense bf16 tensor-core peak per device (vendor data sheets), matched against the device name."""


def peak_flops(device_name: str, configured_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the configured value, else from the name; None when unknown."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def mfu(flops: float, seconds: float, devices: int, peak_per_device: float | None) -> float | None:
    """Achieved FLOP/s over the peak of all devices; None without a known peak or elapsed time."""
    if peak_per_device is None or seconds <= 0 or devices < 1:
        return None
    return flops / seconds / (devices * peak_per_device)
