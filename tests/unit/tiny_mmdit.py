"""A tiny MM-DiT with every weight random, and inputs for it: what the routing and REPA tests share."""
from __future__ import annotations

import torch

from mmdit_scale.model import MMDiT, MMDiTConfig

CFG = MMDiTConfig(depth=4, hidden_size=64, num_heads=2, patch_size=2, in_channels=4, context_dim=32, pooled_dim=16,
                  qk_norm=True, pos_embed_max_size=16, sample_size=8)
"""16 image tokens (8x8 latents, patch 2) and 7 text tokens in `inputs`."""


def inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x (3, 4, 8, 8), t (3,), context (3, 7, 32), pooled (3, 16)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 4, 8, 8, generator=g), torch.rand(3, generator=g), torch.randn(3, 7, 32, generator=g),
            torch.randn(3, 16, generator=g))


def randomised(cfg: MMDiTConfig = CFG, seed: int = 1) -> MMDiT:
    torch.manual_seed(seed)
    model = MMDiT(cfg)
    with torch.no_grad():  # adaLN-Zero would make every block the identity otherwise
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
