"""The torch-free half of the shard format: its version, the caption variants and text encoders
it stores, their token count, and `TextLayout`, which places stored text tensors in the model's
(context, pooled) inputs.

Kept apart from `data_pipeline.format` (tensor encoding, which needs torch) so that reading a
manifest needs no torch: the launcher fills a recipe's unset model dims from it before any rank
starts, and `mmdit-scale --help` stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FORMAT_VERSION = 1
"""Bumped whenever a reader of the previous version could misread the new one."""

NULL_TEXT_FILE = "null_text.safetensors"
"""Beside a dataset's manifest: every text encoder's encoding of the empty string, in the shards'
storage dtype and tensor names (`orig.<encoder>`, `orig.<clip>_pooled`). What "no prompt" is when a
recipe sets data.null_text=empty (SD3's own inference); prepare writes it."""

TEXT_TOKENS = 77
"""Sequence length of every stored text hidden state (CLIP and T5 alike, reference card 2)."""

CAPTION_VARIANTS: tuple[str, ...] = ("orig", "syn")
"""Original (alt-text) and synthetic (captioner) captions; training mixes them 50/50."""

TEXT_ENCODERS: tuple[str, ...] = ("clip_l", "clip_g", "t5")
"""Text encoder names, in the order their hidden states enter the context."""

CLIP_ENCODERS: tuple[str, ...] = ("clip_l", "clip_g")
"""Encoders that also produce a pooled vector; concatenated in this order into `pooled`."""


Span = tuple[int, int]
"""[start, stop) of an index range."""


@dataclass(frozen=True)
class Placement:
    """Where one encoder's stored tensors go in the assembled text inputs:
    `context[..., rows[0]:rows[1], cols[0]:cols[1]]` holds its (tokens, width) hidden states and
    `pooled[..., pooled[0]:pooled[1]]` its pooled vector (None: the encoder has none)."""

    rows: Span
    cols: Span
    pooled: Optional[Span] = None


@dataclass(frozen=True)
class TextLayout:
    """Widths of the stored text tensors, from the manifest's provenance, that fix the shapes
    of the assembled context. An absent encoder has width 0 and contributes nothing (it is not
    zero-filled: a model for such data is configured without it)."""

    clip_l: int = 0
    clip_l_pooled: int = 0
    clip_g: int = 0
    clip_g_pooled: int = 0
    t5: int = 0
    tokens: int = TEXT_TOKENS
    context_dim: Optional[int] = None
    """Channel width of the assembled context; None means the natural width (T5's when present,
    else CLIP-L + CLIP-G). Larger values zero-pad, as SD3 pads CLIP's 2048 to T5's 4096."""

    def __post_init__(self):
        for e in CLIP_ENCODERS:
            if getattr(self, e + "_pooled") and not getattr(self, e):
                raise ValueError(f"{e} has a pooled width but no hidden width: its pooled vector would have no owner")

    @property
    def clip_width(self) -> int:
        return self.clip_l + self.clip_g

    @property
    def width(self) -> int:
        natural = self.t5 if self.t5 else self.clip_width
        width = natural if self.context_dim is None else self.context_dim
        if width < self.clip_width or (self.t5 and width != self.t5):
            raise ValueError(
                f"context_dim {width} cannot hold CLIP-L+G width {self.clip_width} and T5 width {self.t5}")
        return width

    @property
    def seq_len(self) -> int:
        """154 with CLIP and T5; 77 when only one of the two families is present."""
        return self.tokens * (int(self.clip_width > 0) + int(self.t5 > 0))

    @property
    def pooled_dim(self) -> int:
        return self.clip_l_pooled + self.clip_g_pooled

    def present(self) -> tuple[str, ...]:
        return tuple(e for e in TEXT_ENCODERS if getattr(self, e) > 0)

    def placements(self) -> dict[str, Placement]:
        """Present encoder -> its Placement, in TEXT_ENCODERS order: the one definition of the
        context layout, which `assemble_text` and the loader's collator both write through.

        CLIP-L ‖ CLIP-G side by side on channels in the first `tokens` rows (columns past
        CLIP-L + CLIP-G up to `width` stay zero), then T5 in the next `tokens` rows;
        pooled = CLIP-L pooled ‖ CLIP-G pooled. Every context cell outside the blocks is zero."""
        width, out = self.width, {}  # width: raises if context_dim cannot hold the encoders
        col, pool = 0, 0
        for e in CLIP_ENCODERS:
            hidden, pooled = getattr(self, e), getattr(self, e + "_pooled")
            if hidden:
                out[e] = Placement(rows=(0, self.tokens), cols=(col, col + hidden),
                                   pooled=(pool, pool + pooled) if pooled else None)
                col, pool = col + hidden, pool + pooled
        if self.t5:
            row = self.tokens if self.clip_width else 0
            out["t5"] = Placement(rows=(row, row + self.tokens), cols=(0, self.t5))  # t5 == width
        return out
