"""Input embeddings of the MM-DiT: patches with cropped sin-cos positions, timestep and pooled text."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIME_FREQ_DIM = 256
"""Width of the sinusoidal timestep features fed to the timestep MLP."""


def timestep_features(t: torch.Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 1e4) -> torch.Tensor:
    """Sinusoidal features of `t` (already scaled, e.g. 1000 * t), cos half first, in float32.

    Frequencies are exp(-ln(max_period) * i / (dim/2)), i = 0 .. dim/2 - 1, as in SD3.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def sincos_2d_table(dim: int, grid: int, base_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos positions of a `grid` x `grid` token grid, row-major, shape (grid*grid, dim), float32.

    Coordinates are scaled by base_size / grid so that every resolution sees the positions of the training
    (base) grid at the same spacing; the first half of the channels encodes the column, the second the row,
    each as [sin of all frequencies, cos of all frequencies].
    """
    # The coordinate step is computed in float32 like the SD3 / diffusers table, the angles in float64.
    coords = torch.arange(grid, dtype=torch.float32, device=device) / (grid / base_size)  # (grid,)
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)  # (D/4,)
    angles = coords.double()[:, None] * omega[None]  # (grid, D/4)
    axis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (grid, D/2)
    cols = axis[None, :, :].expand(grid, grid, dim // 2)  # (rows, cols, D/2): varies along columns
    rows = axis[:, None, :].expand(grid, grid, dim // 2)  # (rows, cols, D/2): varies along rows
    return torch.cat([cols, rows], dim=-1).reshape(grid * grid, dim).float()  # (grid*grid, D)


class PatchEmbed(nn.Module):
    """Conv patchifier plus the centre crop of a fixed position table sized for the largest grid."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, max_grid: int, base_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.max_grid = max_grid
        self.base_size = base_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        # A buffer, not a parameter: recomputed by reset_pos_embed (also after meta-device construction),
        # so it is kept out of checkpoints.
        self.register_buffer("pos_embed", torch.empty(max_grid * max_grid, dim), persistent=False)
        self.reset_pos_embed()

    def reset_pos_embed(self) -> None:
        if self.pos_embed.is_meta:  # nothing to fill; computing on meta would only pay for decompositions
            return
        table = sincos_2d_table(self.pos_embed.shape[1], self.max_grid, self.base_size, self.pos_embed.device)
        with torch.no_grad():
            self.pos_embed.copy_(table)

    def cropped_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Centre crop of the table for an h x w token grid, shape (1, h*w, D)."""
        if h > self.max_grid or w > self.max_grid:
            raise ValueError(
                f"token grid {h}x{w} exceeds pos_embed_max_size {self.max_grid}; raise pos_embed_max_size")
        top, left = (self.max_grid - h) // 2, (self.max_grid - w) // 2
        table = self.pos_embed.view(self.max_grid, self.max_grid, -1)  # (M, M, D)
        return table[top:top + h, left:left + w].reshape(1, h * w, -1)  # (1, h*w, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"latent size {tuple(x.shape[-2:])} is not a multiple of patch_size {p}")
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, h*w, D)
        # Keep the stream in the conv's dtype (bf16 under autocast) although the table is float32.
        return (tokens + self.cropped_pos_embed(h, w)).to(tokens.dtype)  # (B, h*w, D)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear; embeds the timestep features and the pooled text vector."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))  # (B, D)
