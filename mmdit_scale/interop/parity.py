"""Helpers for checking a converted model against its reference: random weights, relative error.

Parity at init proves nothing (adaLN-Zero makes every output 0), so checks first fill EVERY
parameter, the zero-initialised ones included, with O(1)-activation random values.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def randomise_parameters(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, deterministic in `seed` on any device.

    Matrices get std 1/sqrt(fan_in) so activations stay O(1); norm scales scatter around 1 and
    biases around 0.
    """
    for i, (name, p) in enumerate(model.named_parameters()):
        gen = torch.Generator(device=p.device).manual_seed(seed + i)
        if p.ndim >= 2:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
        elif "norm" in name:
            p.normal_(1.0, 0.1, generator=gen)
        else:
            p.normal_(0.0, 0.1, generator=gen)


def max_rel_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|, in float32: the parity measure the tests and benchmark use."""
    out, ref = out.float(), ref.float()
    return ((out - ref).abs().max() / ref.abs().max()).item()
