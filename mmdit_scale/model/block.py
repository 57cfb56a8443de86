"""The joint MM-DiT block: two streams with their own weights meeting in one attention."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmdit_scale.model.attention import QKV, SelfAttention, joint_attention

NORM_EPS = 1e-6


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters: adaLN supplies the scale and shift."""
    return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift as one fused kernel; shift/scale are (B, 1, D)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_add(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual x + gate * y as one fused kernel; gate is (B, 1, D)."""
    return torch.addcmul(x, gate, y)


class MLP(nn.Module):
    """Linear -> tanh-GELU -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, N, D)


class StreamBlock(nn.Module):
    """One stream's (image or text) weights of a joint block, with adaLN-Zero modulation.

    Modulation chunks, in order: (shift, scale, gate) for attention, (shift, scale, gate) for the MLP, and
    with dual attention (shift, scale, gate) for attn2. A pre-only stream (the text stream of the last
    block) only feeds keys and values to the joint attention: 2 chunks (shift, scale) and no output.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool,
                 pre_only: bool = False, dual_attention: bool = False):
        super().__init__()
        if pre_only and dual_attention:
            raise ValueError("a pre-only stream cannot have dual attention")
        self.pre_only = pre_only
        self.num_chunks = 2 if pre_only else (9 if dual_attention else 6)
        self.adaLN = nn.Linear(dim, self.num_chunks * dim)
        self.attn = QKV(dim, num_heads, qk_norm)
        if not pre_only:
            self.proj = nn.Linear(dim, dim)
            self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.attn2 = SelfAttention(dim, num_heads, qk_norm) if dual_attention else None

    def pre_attention(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple]:
        """q, k, v of this stream for the joint attention, plus what post_attention needs."""
        mod = self.adaLN(cond).unsqueeze(1).chunk(self.num_chunks, dim=-1)  # chunks of (B, 1, D)
        x_norm = layer_norm(x)  # (B, N, D)
        qkv = self.attn(modulate(x_norm, mod[0], mod[1]))  # 3 x (B, N, H, hd)
        return qkv, (x_norm, mod)

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor, state: tuple) -> torch.Tensor:
        x_norm, mod = state
        x = gated_add(x, mod[2], self.proj(attn_out))  # (B, N, D)
        if self.attn2 is not None:
            # attn2 sees the block input (normalised once) with its own modulation, as in SD3.5.
            x = gated_add(x, mod[8], self.attn2(modulate(x_norm, mod[6], mod[7])))  # (B, N, D)
        return gated_add(x, mod[5], self.mlp(modulate(layer_norm(x), mod[3], mod[4])))  # (B, N, D)


class JointBlock(nn.Module):
    """Image stream x and text stream c, each with its own weights, attending jointly."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool,
                 context_pre_only: bool = False, dual_attention: bool = False):
        super().__init__()
        self.x = StreamBlock(dim, num_heads, mlp_ratio, qk_norm, dual_attention=dual_attention)
        self.context = StreamBlock(dim, num_heads, mlp_ratio, qk_norm, pre_only=context_pre_only)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x (B, N, D), c (B, T, D), cond = SiLU(t_emb + y_emb) (B, D); c comes back None if pre-only."""
        x_qkv, x_state = self.x.pre_attention(x, cond)
        c_qkv, c_state = self.context.pre_attention(c, cond)
        x_attn, c_attn = joint_attention(x_qkv, c_qkv)  # (B, N, D), (B, T, D)
        x = self.x.post_attention(x, x_attn, x_state)  # (B, N, D)
        if self.context.pre_only:
            return x, None
        return x, self.context.post_attention(c, c_attn, c_state)  # (B, N, D), (B, T, D)
