"""How many tokens one training sample puts through the MM-DiT: the one count that `plan`, the
trainer's logged FLOPs and MFU, and `scaling-report` share.

Image tokens are the latent's patches: an H x W image becomes (H / f) x (W / f) latent cells under
an autoencoder of factor f, and (H / (f p)) x (W / (f p)) tokens with patch size p. Text tokens are
the context's length. Both f and the text length are properties of the data, so they come from the
manifest of data.train when it can be read (the demo's `pixel` autoencoder has f = 2 and short
text), else from SD3's layout: f = 8 and 77 CLIP-L+G positions followed by 77 T5 positions.
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from data_pipeline.layout import TEXT_TOKENS
from data_pipeline.manifest import Provenance
from mmdit_scale.config import RunConfig

SD3_TOKENS = "SD3 default"
"""`TokenLayout.source` when no manifest was read."""


@dataclass(frozen=True)
class TokenLayout:
    """What turns an image of the data into tokens."""

    autoencoder_factor: int
    """Pixels per latent cell (SD3's VAE: 8)."""
    text: int
    """Text tokens T of every sample (SD3: 154)."""
    source: str = SD3_TOKENS
    """Where the layout came from: a manifest's location, or SD3_TOKENS."""

    @classmethod
    def of(cls, provenance: Provenance, source: str) -> "TokenLayout":
        return cls(autoencoder_factor=provenance.latent.factor, text=provenance.text_layout().seq_len, source=source)


SD3_LAYOUT = TokenLayout(autoencoder_factor=8, text=2 * TEXT_TOKENS)


@dataclass(frozen=True)
class Tokens:
    """Sequence lengths of one sample."""

    image: int
    """Image tokens N = (H / (f p)) * (W / (f p))."""
    text: int
    """Text tokens T (154 for SD3)."""

    @property
    def total(self) -> int:
        """S = N + T: the joint attention's sequence length."""
        return self.image + self.text


def token_layout(cfg: RunConfig) -> TokenLayout:
    """The layout of data.train's first manifest (the loader holds every dataset to its
    provenance), else SD3's when there is no data or its manifest cannot be read."""
    if cfg.data.train:
        from data_pipeline.locate import first_manifest

        try:
            location, manifest = first_manifest(cfg.data.train)
            return TokenLayout.of(manifest.provenance, location)
        except (ValueError, KeyError, TypeError):
            pass
    return SD3_LAYOUT


def sample_tokens(height: int, width: int, patch_size: int, layout: TokenLayout) -> Tokens:
    """Tokens of one sample of height x width pixels."""
    unit = layout.autoencoder_factor * patch_size
    return Tokens(image=(height // unit) * (width // unit), text=layout.text)


def square_tokens(cfg: RunConfig, layout: TokenLayout, resolution: int | None = None) -> Tokens:
    """Tokens of a `resolution` x `resolution` image (default data.resolution): what FLOPs are quoted for."""
    side = cfg.data.resolution if resolution is None else resolution
    return sample_tokens(side, side, cfg.model.patch_size, layout)


def largest_tokens(cfg: RunConfig, layout: TokenLayout) -> Tokens:
    """Tokens of the largest image the run batches: the biggest aspect bucket, else the square.

    Memory must hold the worst micro-batch, and rounding bucket sides to multiples of 16 makes
    some buckets a little larger than resolution^2.
    """
    sizes = cfg.data.buckets or ((cfg.data.resolution, cfg.data.resolution),)
    return max((sample_tokens(h, w, cfg.model.patch_size, layout) for h, w in sizes), key=lambda t: t.image)
