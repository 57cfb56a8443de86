"""Collate RawSamples into the batch the trainer consumes, writing each part straight into place.

Where each encoder's hidden states and pooled vector land in `context`/`pooled` is defined by
`data_pipeline.format.assemble_text`, and only there. The collator learns that placement once
by running `assemble_text` on tensors filled with distinct values and locating each block, then
copies every sample's bytes directly into those blocks of preallocated batch tensors (one copy
instead of assemble_text's pad/cat/where chain). A layout that is not a plain placement is
refused, so the fast path can never silently diverge from the format.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from data_pipeline.format import CAPTION_VARIANTS, CLIP_ENCODERS, LATENT_KEY, TEXT_ENCODERS, TextLayout, assemble_text, text_key
from data_pipeline.loader.pool import TensorPool
from data_pipeline.loader.samples import RawSample
from data_pipeline.loader.shared import SharedRing

SLOT_KEY = "_slot"
"""Set in a batch collated into a SharedRing slot; the main process swaps it for the tensors."""

Block = tuple[int, int, int, int]
"""(row0, row1, col0, col1) of a context block."""


@dataclass(frozen=True)
class Placement:
    hidden: dict[str, Block]
    pooled: dict[str, tuple[int, int]]
    zero_blocks: tuple[Block, ...]
    """Context blocks no encoder covers (CLIP's zero padding up to the context width)."""
    seq_len: int
    width: int
    pooled_dim: int


def _rectangle(mask: torch.Tensor, what: str) -> Block:
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if int(mask.sum()) != (r1 - r0) * (c1 - c0):
        raise ValueError(f"assemble_text does not place {what} as one block; the loader's collator needs updating")
    return r0, r1, c0, c1


def _runs(row: list[bool]) -> tuple[tuple[int, int], ...]:
    runs, start = [], None
    for i, v in enumerate(row + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    return tuple(runs)


def probe_placement(layout: TextLayout) -> Placement:
    """Locate every encoder's block in assemble_text's output for this layout."""
    tensors, offsets, next_value = {}, {}, 1.0
    variant = CAPTION_VARIANTS[0]
    for enc in TEXT_ENCODERS:
        width = getattr(layout, enc)
        if width:
            n = layout.tokens * width
            tensors[text_key(variant, enc)] = torch.arange(n, dtype=torch.float32).view(layout.tokens, width) + next_value
            offsets[enc] = next_value
            next_value += n
        pooled = getattr(layout, enc + "_pooled", 0) if enc in CLIP_ENCODERS else 0
        if pooled:
            tensors[text_key(variant, enc, pooled=True)] = torch.arange(pooled, dtype=torch.float32) + next_value
            next_value += pooled
    if next_value >= 2 ** 24:
        raise ValueError("text layout too large to probe exactly in float32")
    context, pooled_vec = assemble_text(tensors, variant, layout)
    hidden, pooled, covered = {}, {}, torch.zeros(context.shape, dtype=torch.bool)
    for enc in TEXT_ENCODERS:
        name = text_key(variant, enc)
        if name not in tensors:
            continue
        src = tensors[name]
        r0, r1, c0, c1 = _rectangle((context >= src.min()) & (context <= src.max()), enc)
        if not torch.equal(context[r0:r1, c0:c1], src):
            raise ValueError(f"assemble_text transforms {enc}'s hidden states; the loader's collator needs updating")
        hidden[enc] = (r0, r1, c0, c1)
        covered[r0:r1, c0:c1] = True
        if enc in CLIP_ENCODERS and text_key(variant, enc, pooled=True) in tensors:
            src = tensors[text_key(variant, enc, pooled=True)]
            hits = ((pooled_vec >= src.min()) & (pooled_vec <= src.max())).nonzero().flatten()
            p0, p1 = int(hits[0]), int(hits[-1]) + 1
            if not torch.equal(pooled_vec[p0:p1], src):
                raise ValueError(f"assemble_text transforms {enc}'s pooled vector; the loader's collator needs updating")
            pooled[enc] = (p0, p1)
    if bool((context[~covered] != 0).any()):
        raise ValueError("assemble_text fills context cells outside the encoder blocks with non-zeros")
    zero_blocks: list[Block] = []
    prev, start = None, 0
    rows = [_runs((~covered[r]).tolist()) for r in range(context.shape[0])] + [None]
    for r, runs in enumerate(rows):
        if runs != prev:
            if prev:
                zero_blocks.extend((start, r, c0, c1) for c0, c1 in prev)
            prev, start = runs, r
    return Placement(hidden=hidden, pooled=pooled, zero_blocks=tuple(zero_blocks), seq_len=context.shape[0],
                     width=context.shape[1], pooled_dim=pooled_vec.shape[0])


class Collator:
    """RawSamples of one bucket -> batch dict of tensors in the shards' storage dtype.

    Copies go through numpy views: one plain memcpy per block, no per-op dispatch cost and no
    intra-op thread pool (whose synchronisation made small copies 20x slower under load)."""

    def __init__(self, layout: TextLayout, dtype: torch.dtype, pool_size: int = 4):
        self.place = probe_placement(layout)
        self.dtype = dtype
        self.raw = {2: torch.int16, 4: torch.int32}[torch.empty((), dtype=dtype).element_size()]
        self.np_raw = {torch.int16: np.int16, torch.int32: np.int32}[self.raw]
        self.pool = TensorPool(pool_size)
        self.ring: Optional[SharedRing] = None
        """Set inside a DataLoader worker: collate into shared slots when one is free."""

    def _array(self, sample: RawSample, name: str) -> np.ndarray:
        offset, shape = sample.parts[name]
        return np.frombuffer(sample.buf, dtype=self.np_raw, count=math.prod(shape), offset=offset).reshape(shape)

    def __call__(self, samples: list[RawSample]) -> dict:
        p, n = self.place, len(samples)
        claimed = self.ring.take(n, samples[0].shape) if self.ring is not None else None
        if claimed is not None:
            slot, (latent, context, pooled) = claimed
            fresh = False  # ring slots start zeroed
        else:
            slot = None
            latent, _ = self.pool.empty((n,) + samples[0].shape, self.dtype)  # (B, C, h, w)
            context, fresh = self.pool.empty((n, p.seq_len, p.width), self.dtype)  # (B, 154, Dt)
            pooled, _ = self.pool.empty((n, p.pooled_dim), self.dtype)  # (B, Pl + Pg)
        lat, ctx, pool = (t.view(self.raw).numpy() for t in (latent, context, pooled))
        if fresh:  # nothing but zeros is ever written to the padding: a reused tensor keeps them
            for r0, r1, c0, c1 in p.zero_blocks:
                ctx[:, r0:r1, c0:c1] = 0
        for i, s in enumerate(samples):
            lat[i] = self._array(s, LATENT_KEY)
            for e, enc in enumerate(TEXT_ENCODERS):
                block = p.hidden.get(enc)
                if block is None:
                    continue
                r0, r1, c0, c1 = block
                span = p.pooled.get(enc)
                if s.keep[e]:
                    ctx[i, r0:r1, c0:c1] = self._array(s, text_key(s.variant, enc))
                    if span is not None:
                        pool[i, span[0]:span[1]] = self._array(s, text_key(s.variant, enc, pooled=True))
                else:
                    ctx[i, r0:r1, c0:c1] = 0
                    if span is not None:
                        pool[i, span[0]:span[1]] = 0
        del lat, ctx, pool  # the pool reuses a tensor only once no view of it is left
        batch = {
            "latent": latent,
            "context": context,
            "pooled": pooled,
            "keys": [s.key for s in samples],
            "caption": [s.caption for s in samples],
            "caption_variant": torch.tensor([CAPTION_VARIANTS.index(s.variant) for s in samples], dtype=torch.long),
            "text_keep": torch.tensor([s.keep for s in samples], dtype=torch.bool),  # (B, 3) in TEXT_ENCODERS order
            "source": torch.tensor([s.source for s in samples], dtype=torch.long),
            "epoch": torch.tensor([s.ref[1] for s in samples], dtype=torch.long),
            "original_size": torch.tensor([s.original_size for s in samples], dtype=torch.long),
            "crop_box": torch.tensor([s.crop_box for s in samples], dtype=torch.long),
        }
        if slot is not None:
            batch[SLOT_KEY] = slot
        return batch
