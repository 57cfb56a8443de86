"""REPA's training-only parts (Yu et al., 2025): the projector from a block's image tokens to a frozen
vision encoder's feature space, the encoder's grid resized to the model's token grid, the alignment
loss, and the module DeepSpeed trains when REPA is on.

The projector exists only in training: `RepaTrainee.mmdit` is the model whose weights are saved as
the model (checkpoint weights, EMA, export, sampling); the projector lives in the optimizer state of
the DeepSpeed checkpoint, which is what an exact resume restores. Pure torch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmdit_scale.model.config import Routing, projector_width
from mmdit_scale.model.mmdit import MMDiT

class Projector(nn.Module):
    """Linear, SiLU, Linear, SiLU, Linear: (..., hidden) -> (..., encoder width), per token."""

    def __init__(self, dim: int, width: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.silu(self.fc2(F.silu(self.fc1(h)))))  # (B, N, De)


class RepaTrainee(nn.Module):
    """The MMDiT plus REPA's projector on block `block`: forward returns the velocity and the projected
    image tokens of that block ((B, N, De), or (B, K, De) for the kept tokens where the block is routed)."""

    def __init__(self, mmdit: MMDiT, block: int, encoder_dim: int):
        super().__init__()
        if not 0 <= block < mmdit.cfg.depth:
            raise ValueError(f"REPA block {block} outside the model's blocks 0..{mmdit.cfg.depth - 1}")
        self.mmdit = mmdit
        self.block = block
        dim = mmdit.cfg.hidden_size
        self.projector = Projector(dim, projector_width(dim), encoder_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                keep: torch.Tensor | None = None, routing: Routing | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        velocity, tokens = self.mmdit(x, t, context, pooled, keep=keep, routing=routing, capture=self.block)
        return velocity, self.projector(tokens)  # (B, C, H, W), (B, N or K, De)


def target_tokens(features: torch.Tensor, height: int, width: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's features (B, grid^2, De) of a square patch grid as targets for a height x width
    token grid: resized bilinearly when the grids differ (the encoder saw the image resized to its
    own square input, so this also undoes a bucket's aspect change), then only the kept tokens (B, K)
    where given."""
    b, n, d = features.shape
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"REPA features hold {n} tokens, not a square patch grid")
    features = features.float()
    if (grid, grid) != (height, width):
        square = features.transpose(1, 2).reshape(b, d, grid, grid)  # (B, De, g, g)
        square = F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False,
                               antialias=height < grid or width < grid)  # (B, De, h, w)
        features = square.flatten(2).transpose(1, 2)  # (B, h*w, De), row-major like the image tokens
    if keep is not None:
        features = features.gather(1, keep.unsqueeze(-1).expand(-1, -1, d))  # (B, K, De)
    return features


def alignment_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean over tokens of 1 - cos(projected, target): (B, N, De) x 2 -> (B,).
    REPA's negative cosine, shifted by 1 so a perfect alignment is 0."""
    cos = F.cosine_similarity(projected.float(), target.float(), dim=-1)  # (B, N)
    return (1 - cos).mean(dim=1)
