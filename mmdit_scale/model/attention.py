"""Attention pieces of the MM-DiT: fused QKV projection with optional QK RMSNorm, joint and self attention."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QK_NORM_EPS = 1e-6


class QKV(nn.Module):
    """One fused Linear(D, 3D) for q, k, v of a stream (one GEMM instead of three).

    With qk_norm, q and k get an RMSNorm over the head dimension with a learnable scale; SD3.5 uses it to
    stop attention-logit growth in bf16.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, N, hd) views of the fused projection (no copy)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)  # (B, N, 3, H, hd)
        # Unbinding dim 2 (not a permuted dim 0) makes backward stack the three grads straight into the
        # (B, N, 3, H, hd) layout of the Linear's output: one copy instead of a stack plus a permute copy.
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # 3 x (B, H, N, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (B, H, N, hd)
        return q, k, v


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(B, H, N, hd) -> (B, N, H*hd): the one copy that makes the out-projection's input contiguous."""
    return out.transpose(1, 2).flatten(2)


def joint_attention(
    x_qkv: tuple[torch.Tensor, ...], c_qkv: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One attention over the image and text tokens together, split back per stream.

    Image tokens go first ([x, c], as diffusers); without masks or positional terms in attention the
    order does not change the result.
    """
    n, t = x_qkv[0].shape[2], c_qkv[0].shape[2]
    # Concatenating head-major views gives SDPA contiguous (B, H, S, hd) inputs, its fastest layout on CPU.
    q, k, v = (torch.cat(pair, dim=2) for pair in zip(x_qkv, c_qkv))  # 3 x (B, H, N+T, hd)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N+T, hd)
    # split (not slicing): its backward is one cat instead of zero-filled buffers that are then added.
    x_out, c_out = out.split([n, t], dim=2)  # (B, H, N, hd), (B, H, T, hd)
    return merge_heads(x_out), merge_heads(c_out)  # (B, N, D), (B, T, D)


class SelfAttention(QKV):
    """Image-only attention of the MM-DiT-X dual-attention layers (`attn2` of SD3.5 Medium): QKV + out proj."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool):
        super().__init__(dim, num_heads, qk_norm)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(*super().forward(x))  # (B, H, N, hd)
        return self.proj(merge_heads(out))  # (B, N, D)
