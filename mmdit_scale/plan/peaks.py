"""Dense peak FLOP/s of the cards we plan for and measure on, and model FLOPs utilisation (MFU).

One table serves `plan` (time to train on a card) and the trainer's logged MFU (the card it runs
on, matched by name). Pure Python: no torch.
"""
from __future__ import annotations

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp32": 494.7},
    "H100": {"bf16": 989.4, "fp32": 494.7},
    "A100": {"bf16": 312.0, "fp32": 156.0},
    "L40S": {"bf16": 362.0, "fp32": 181.0},
    "A10G": {"bf16": 125.0, "fp32": 62.5},
}
"""Dense tensor-core peak per card (vendor data sheets, SXM parts): bf16, and TF32 for fp32 runs."""

PLAN_GPU = "H100"
"""The card `plan` assumes unless given --peak-tflops."""


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The data-sheet peak of the card whose name contains a key of PEAK_TFLOPS; None when unknown."""
    for key, peaks in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return peaks[precision]
    return None


def peak_flops(device_name: str, precision: str, configured_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the configured value, else the card's; None when unknown (CPU)."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    tflops = peak_tflops(device_name, precision)
    return None if tflops is None else tflops * 1e12


def mfu(flops: float, seconds: float, devices: int, peak_per_device: float | None) -> float | None:
    """Achieved FLOP/s over the peak of all devices; None without a known peak or elapsed time."""
    if peak_per_device is None or seconds <= 0 or devices < 1:
        return None
    return flops / seconds / (devices * peak_per_device)
