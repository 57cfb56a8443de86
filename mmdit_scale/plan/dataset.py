"""Bytes of pre-encoded data a run reads: one sample as `prepare` writes it (data_pipeline/format.py).

A sample stores the latent and, per caption variant, CLIP-L and CLIP-G penultimate hidden states,
their pooled vectors and T5's hidden states, all 77 tokens, in bf16. Text is about 97% of it
(reference card section 6), which is why a run needing both caption variants (0 < caption_mix < 1)
reads almost twice the bytes of a run on one.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmdit_scale.config import RunConfig
from mmdit_scale.plan.tokens import TokenLayout

CONTAINER_BYTES = 3 * 1024
"""Per-sample framing: two tar headers and their padding, the safetensors header, the JSON metadata."""


@dataclass(frozen=True)
class SampleBytes:
    latent: int
    text: int
    variants: int
    """Caption variants stored per sample (text bytes are for all of them)."""

    @property
    def total(self) -> int:
        return self.latent + self.text + CONTAINER_BYTES


def sample_bytes(cfg: RunConfig, layout: TokenLayout, storage_dtype: str = "bf16") -> SampleBytes:
    """Bytes of one stored sample at data.resolution (aspect buckets have about the same area).

    The text widths follow SD3's encoders: T5's hidden width is model.context_dim and each CLIP's
    hidden width equals its pooled width (768 + 1280 = model.pooled_dim); the CLIP and T5 halves of
    the context are equally long (`layout.text` / 2 each).
    """
    import torch

    from data_pipeline.format import TENSOR_DTYPES
    from data_pipeline.layout import CAPTION_VARIANTS

    element = torch.empty((), dtype=TENSOR_DTYPES[storage_dtype]).element_size()
    m = cfg.model
    side = cfg.data.resolution // layout.autoencoder_factor
    variants = len(CAPTION_VARIANTS) if 0.0 < cfg.data.caption_mix < 1.0 else 1
    per_variant = layout.text // 2 * (m.context_dim + m.pooled_dim) + m.pooled_dim
    return SampleBytes(latent=m.in_channels * side * side * element,
                       text=variants * per_variant * element, variants=variants)
