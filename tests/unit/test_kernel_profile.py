"""benchmarks/kernel_profile.py names the SDPA backend the GPU run's attention took from the
profiled op names: the figure docs/benchmarks.md reports as `sdpa_backend`."""
from __future__ import annotations

from benchmarks import kernel_profile


def test_each_cuda_sdpa_op_names_its_backend_and_cpu_or_no_attention_gives_none():
    ops = ["aten::mm", "aten::scaled_dot_product_attention"]
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_flash_attention"]) == "flash"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_efficient_attention"]) == "efficient"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_attention_math",
                                              "aten::_scaled_dot_product_flash_attention"]) == "flash+math"
    assert kernel_profile.sdpa_backend(ops + ["aten::_scaled_dot_product_flash_attention_for_cpu"]) is None
    assert kernel_profile.sdpa_backend(["aten::mm"]) is None
