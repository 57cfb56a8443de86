"""One table of card peaks for plan and the logged MFU (the FLOP counts are tested in test_plan_flops.py)."""
import pytest

from mmdit_scale.plan.peaks import mfu, peak_flops, peak_tflops


def test_mfu_and_peaks():
    h100 = peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert h100 == pytest.approx(989.4e12) and peak_flops("NVIDIA H200", "bf16") == h100
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32") == pytest.approx(h100 / 2)
    assert peak_flops("cpu", "bf16") is None
    assert peak_flops("cpu", "fp32", configured_tflops=2.0) == 2e12
    assert mfu(989.4e12, 2.0, 1, h100) == pytest.approx(0.5)
    assert mfu(4 * 989.4e12, 1.0, 8, h100) == pytest.approx(0.5)
    assert mfu(1e12, 1.0, 1, None) is None


def test_plan_quotes_time_against_the_same_peak_the_trainer_logs(tmp_path):
    from mmdit_scale.config import load_config
    from mmdit_scale.plan.report import Hardware, make_plan

    plan = make_plan(load_config("recipes/ladder/d15.yaml"), Hardware(gpus=8))
    assert plan.peak_tflops == peak_tflops("NVIDIA H100 80GB HBM3", plan.cfg.parallel.precision)
