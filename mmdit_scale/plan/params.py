"""Exact parameter counts, read off the real MMDiT built on the meta device (no memory, no init cost).

Counting the module itself rather than a formula means a new layer (QK-norm, MM-DiT-X attn2) is
counted the day it is added. The sin-cos position table is a buffer, not a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmdit_scale.model.config import MMDiTConfig


@dataclass(frozen=True)
class ParamCount:
    total: int
    """Trainable parameters (what ZeRO shards and Adam keeps state for)."""
    largest_layer: int
    """Parameters of the largest single module (e.g. an MLP's fc1): ZeRO-3 gathers one at a time."""


def count_parameters(cfg: MMDiTConfig) -> ParamCount:
    import torch

    from mmdit_scale.model import MMDiT

    with torch.device("meta"):
        model = MMDiT(cfg)
    largest = max(sum(p.numel() for p in module.parameters(recurse=False)) for module in model.modules())
    return ParamCount(total=sum(p.numel() for p in model.parameters()), largest_layer=largest)


def sd3_closed_form(depth: int) -> int:
    """The reference card's count for the SD3 ladder without QK-norm:
    4096 d^2 (36 d - 9) + 64 d (30 d + 6526) + 64. A cross-check of the built model, not used to plan."""
    return 4096 * depth**2 * (36 * depth - 9) + 64 * depth * (30 * depth + 6526) + 64
