"""benchmarks/kernel_profile.py names the SDPA backend the GPU run's attention took from the
profiled op names: the figure docs/benchmarks.md reports as `sdpa_backend`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("kernel_profile", REPO / "benchmarks" / "kernel_profile.py")
kernel_profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_profile)


def test_each_cuda_sdpa_op_names_its_backend_and_cpu_or_no_attention_gives_none():
    ops = ["aten::mm", "aten::scaled_dot_product_attention"]
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_flash_attention"]) == "flash"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_efficient_attention"]) == "efficient"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_attention_math",
                                              "aten::_scaled_dot_product_flash_attention"]) == "flash+math"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_flash_attention_for_cpu"]) is None
    assert kernel_profile.sdpa_backend(["aten::mm"]) is None
