"""How many tokens one training sample puts through the MM-DiT, from the recipe's data section.

Pure Python: `mmdit-scale plan` and the tests use it without building anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from data_pipeline.layout import TEXT_TOKENS
from mmdit_scale.config import RunConfig

AUTOENCODER_FACTOR = 8
"""Pixels per latent cell of SD3's autoencoder (data.resolution / 8 is the latent side)."""

TEXT_SEQUENCE = 2 * TEXT_TOKENS
"""Text tokens of the SD3 context: 77 CLIP-L+G positions followed by 77 T5 positions."""


@dataclass(frozen=True)
class Tokens:
    """Sequence lengths of one sample."""

    image: int
    """Image tokens N = (H / 16) * (W / 16) for patch 2 on the 8x latent."""
    text: int
    """Text tokens T (154 for SD3)."""

    @property
    def total(self) -> int:
        """S = N + T: the joint attention's sequence length."""
        return self.image + self.text


def image_tokens(height: int, width: int, patch_size: int) -> int:
    unit = AUTOENCODER_FACTOR * patch_size
    return (height // unit) * (width // unit)


def square_tokens(cfg: RunConfig, resolution: int | None = None) -> Tokens:
    """Tokens of a `resolution` x `resolution` image (default data.resolution): what FLOPs are quoted for."""
    side = cfg.data.resolution if resolution is None else resolution
    return Tokens(image=image_tokens(side, side, cfg.model.patch_size), text=TEXT_SEQUENCE)


def largest_tokens(cfg: RunConfig) -> Tokens:
    """Tokens of the largest image the run batches: the biggest aspect bucket, else the square.

    Memory must hold the worst micro-batch, and rounding bucket sides to multiples of 16 makes
    some buckets a little larger than resolution^2.
    """
    sizes = cfg.data.buckets or ((cfg.data.resolution, cfg.data.resolution),)
    most = max(image_tokens(h, w, cfg.model.patch_size) for h, w in sizes)
    return Tokens(image=most, text=TEXT_SEQUENCE)
