"""MM-DiT size and layout configuration.

Pure Python (no torch): the run-config schema embeds `MMDiTConfig` as its `model:` section and
loads it from YAML through OmegaConf, so every field is a plain type OmegaConf can validate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

HEAD_DIM = 64
"""Head dimension of the SD3 width ladder: hidden = 64 * depth with depth heads."""


@dataclass(frozen=True)
class InputDims:
    """The model input widths that the data fixes (same names as the MMDiTConfig fields)."""

    in_channels: int
    """Latent channels of the autoencoder."""
    context_dim: int
    """Width of the text context: T5's hidden width when T5 is used, else CLIP-L + CLIP-G hidden."""
    pooled_dim: int
    """CLIP-L pooled + CLIP-G pooled."""


SD3_INPUT_DIMS = InputDims(in_channels=16, context_dim=4096, pooled_dim=2048)
"""SD3's data: the 16-channel VAE, CLIP-L/G (768 + 1280) padded to T5-XXL's 4096, pooled 768 + 1280.
The SD3 ladder (`from_depth`) and `mmdit-scale plan` without shards use it."""

INPUT_DIM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(InputDims))


@dataclass
class MMDiTConfig:
    """Shape of an SD3-style MM-DiT (reference card section 1)."""

    depth: int = 2
    """Number of joint transformer blocks (the `d` of the scaling ladder)."""
    hidden_size: Optional[int] = None
    """Width D of both streams; None means 64 * depth."""
    num_heads: Optional[int] = None
    """Attention heads; None means depth (head dim 64)."""
    patch_size: int = 2
    """Side of the square latent patch that becomes one image token."""
    in_channels: Optional[int] = None
    """Latent channels coming from the autoencoder; None: from the shard manifest (`train` fills it)."""
    out_channels: Optional[int] = None
    """Channels of the predicted velocity; None means in_channels."""
    context_dim: Optional[int] = None
    """Channel width of the text context sequence (CLIP-L/G zero-padded and T5); None: from the manifest."""
    pooled_dim: Optional[int] = None
    """Width of the pooled CLIP-L + CLIP-G text vector; None: from the manifest."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of hidden_size."""
    qk_norm: bool = False
    """RMSNorm on queries and keys per head (SD3.5); stops attention-logit growth in bf16."""
    dual_attention_layers: tuple[int, ...] = ()
    """Block indices that get a second image-only self-attention (MM-DiT-X, SD3.5 Medium)."""
    pos_embed_max_size: int = 192
    """Side of the stored sin-cos position grid (in tokens) that every image centre-crops."""
    sample_size: int = 128
    """Base (training) latent side; positions are scaled by base/max, base = sample_size // patch_size."""

    def __post_init__(self) -> None:
        if isinstance(self.dual_attention_layers, (int, str)):
            raise ValueError(
                f"MMDiTConfig.dual_attention_layers must be a sequence of block indices, got {self.dual_attention_layers!r}")
        # YAML gives lists (or OmegaConf ListConfigs); keep a hashable, immutable tuple.
        self.dual_attention_layers = tuple(int(i) for i in self.dual_attention_layers)
        if self.hidden_size is None:
            self.hidden_size = HEAD_DIM * self.depth
        if self.num_heads is None:
            self.num_heads = self.depth
        if self.out_channels is None:
            self.out_channels = self.in_channels
        self._validate()

    def _validate(self) -> None:
        positive = ("depth", "hidden_size", "num_heads", "patch_size", "in_channels", "out_channels",
                    "context_dim", "pooled_dim", "pos_embed_max_size", "sample_size")
        for name in positive:
            value = getattr(self, name)
            if value is None and name in (*INPUT_DIM_NAMES, "out_channels"):
                continue  # filled from the data before a model is built (out_channels follows in_channels)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MMDiTConfig.{name} must be a positive int, got {value!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"MMDiTConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"MMDiTConfig.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            # 2D sin-cos positions split D into four equal parts: (w, h) x (sin, cos).
            raise ValueError(f"MMDiTConfig.hidden_size {self.hidden_size} must be divisible by 4 (2D sin-cos)")
        bad = [i for i in self.dual_attention_layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(
                f"MMDiTConfig.dual_attention_layers {bad} outside blocks 0..{self.depth - 1}")
        if len(set(self.dual_attention_layers)) != len(self.dual_attention_layers):
            raise ValueError(f"MMDiTConfig.dual_attention_layers has duplicates: {self.dual_attention_layers}")
        if self.sample_size < self.patch_size:
            raise ValueError(
                f"MMDiTConfig.sample_size {self.sample_size} is smaller than patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def base_size(self) -> int:
        """Token-grid side of the training resolution; positions are scaled relative to it."""
        return self.sample_size // self.patch_size

    def missing_input_dims(self) -> tuple[str, ...]:
        """Names of the input dims left unset (None), in InputDims order."""
        return tuple(name for name in INPUT_DIM_NAMES if getattr(self, name) is None)

    def with_input_dims(self, dims: InputDims) -> "MMDiTConfig":
        """A copy whose unset input dims come from `dims`; dims already set are kept, so data that
        does not match them is still refused by the loader."""
        return replace(self, **{name: getattr(dims, name) for name in self.missing_input_dims()})

    @classmethod
    def from_depth(cls, depth: int, **overrides: Any) -> "MMDiTConfig":
        """One rung of the SD3 ladder: hidden 64*depth, depth heads, SD3's input dims and defaults."""
        return cls(depth=depth, **{**asdict(SD3_INPUT_DIMS), **overrides})


def checkpointed_blocks(depth: int, every: int) -> range:
    """The blocks that activation checkpointing recomputes: block i when i % every == 0.

    every = 0: none; 1: all; k: every k-th from block 0 (k >= depth: block 0 only). The one home of
    the rule: the model applies it, and `plan` prices its memory and recompute FLOPs (torch-free).
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"activation checkpointing takes an int >= 0 (0: no block, 1: every block, "
                         f"k: every k-th block), got {every!r}")
    return range(0, depth, every) if every else range(0)


@dataclass
class Routing:
    """TREAD token routing (Krause et al., 2025): in training, a random `ratio` of each sample's
    image tokens skip blocks `start_block`..`end_block` (0-based, inclusive) and rejoin unchanged
    after them; text tokens are never routed and inference uses every token. ratio 0: off."""

    ratio: float = 0.0
    start_block: int = 0
    end_block: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"routing ratio must lie in [0, 1), got {self.ratio}")
        if not 0 <= self.start_block <= self.end_block:
            raise ValueError(f"routing blocks must satisfy 0 <= start_block <= end_block, got "
                             f"{self.start_block}..{self.end_block}")

    @property
    def enabled(self) -> bool:
        return self.ratio > 0

    def kept(self, image_tokens: int) -> int:
        """Image tokens that go through the routed blocks (at least one)."""
        return max(1, image_tokens - round(self.ratio * image_tokens))

    def routes(self, index: int) -> bool:
        """Whether block `index` sees only the kept tokens."""
        return self.enabled and self.start_block <= index <= self.end_block


REPA_PROJECTOR_WIDTH = 2048
"""REPA's projector width (hidden -> 2048 -> 2048 -> encoder width; `mmdit_scale.model.repa`)."""


def projector_width(hidden_size: int) -> int:
    """REPA's 2048, capped at 4 x the model's width so a tiny model does not carry a projector many
    times its own size."""
    return min(REPA_PROJECTOR_WIDTH, 4 * hidden_size)
