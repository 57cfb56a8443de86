"""MFU and device peaks (the FLOP counts themselves are tested in test_plan_flops.py)."""
import pytest

from mmdit_scale.train.flops import mfu, peak_flops


def test_mfu_and_peaks():
    h100 = peak_flops("NVIDIA H100 80GB HBM3")
    assert h100 == 989e12 and peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", configured_tflops=2.0) == 2e12
    assert mfu(989e12, 2.0, 1, h100) == pytest.approx(0.5)
    assert mfu(4 * 989e12, 1.0, 8, h100) == pytest.approx(0.5)
    assert mfu(1e12, 1.0, 1, None) is None
