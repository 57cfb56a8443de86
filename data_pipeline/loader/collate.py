"""Collate RawSamples into the batch the trainer consumes, writing each part straight into place.

Where each encoder's hidden states and pooled vector land in `context`/`pooled` is
`TextLayout.placements()`, the same definition `data_pipeline.format.assemble_text` builds from.
The collator copies every sample's bytes directly into those blocks of preallocated batch
tensors (one copy per block instead of assemble_text's zeros/where/assign chain); for samples of
a local shard that copy is the read from the file itself (`ShardFile`).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from data_pipeline.format import LATENT_KEY, REPA_KEY, text_key
from data_pipeline.layout import CAPTION_VARIANTS, TEXT_ENCODERS, Placement, TextLayout
from data_pipeline.loader.pool import TensorPool
from data_pipeline.loader.sample_reader import RawSample
from data_pipeline.loader.shard_file import ShardFile
from data_pipeline.loader.shared import SharedRing

SLOT_KEY = "_slot"
"""Set in a batch collated into a SharedRing slot; the main process swaps it for the tensors."""

Block = tuple[int, int, int, int]
"""(row0, row1, col0, col1) of a context block."""


def padding_blocks(placements: dict[str, Placement], width: int) -> tuple[Block, ...]:
    """Context blocks no encoder covers (CLIP's zero padding up to the context width)."""
    blocks: list[Block] = []
    for rows in sorted({p.rows for p in placements.values()}):
        at = 0
        for c0, c1 in sorted(p.cols for p in placements.values() if p.rows == rows) + [(width, width)]:
            if c0 > at:
                blocks.append((rows[0], rows[1], at, c0))
            at = max(at, c1)
    return tuple(blocks)


def load_null_text(path: str, placements: dict, dtype: torch.dtype) -> dict[str, tuple[np.ndarray, object]]:
    """encoder -> (hidden, pooled) of a NULL_TEXT_FILE, as raw integer views in the batch's dtype,
    checked against the places they fill; ValueError naming the file and the tensor otherwise."""
    from safetensors.torch import load_file

    try:
        stored = load_file(path)
    except OSError as err:
        raise ValueError(f"cannot read the null text {path}: {err}") from None
    raw = {2: torch.int16, 4: torch.int32}[torch.empty((), dtype=dtype).element_size()]
    out = {}
    for enc, at in placements.items():
        name = text_key("orig", enc)
        hidden = stored.get(name)
        (r0, r1), (c0, c1) = at.rows, at.cols
        if hidden is None or tuple(hidden.shape) != (r1 - r0, c1 - c0) or hidden.dtype != dtype:
            raise ValueError(f"{path}: {name} is {None if hidden is None else (tuple(hidden.shape), hidden.dtype)}, "
                             f"the data needs ({r1 - r0}, {c1 - c0}) of {dtype}")
        pooled = None
        if at.pooled is not None:
            pooled = stored[text_key("orig", enc, pooled=True)].view(raw).numpy()
        out[enc] = (hidden.view(raw).numpy(), pooled)
    return out


class Collator:
    """RawSamples of one bucket -> batch dict of tensors in the shards' storage dtype.

    Copies go through numpy views: one plain memcpy per block, no per-op dispatch cost and no
    intra-op thread pool (whose synchronisation made small copies 20x slower under load)."""

    def __init__(self, layout: TextLayout, dtype: torch.dtype, pool_size: int = 4, null_text: Optional[str] = None,
                 repa: Optional[tuple[int, int]] = None):
        """`null_text`: a NULL_TEXT_FILE whose tensors fill a dropped encoder's part (else zeros);
        `repa`: (tokens, width) of the REPA features each sample brings, or None."""
        self.repa = repa
        placements = layout.placements()
        self.seq_len, self.width, self.pooled_dim = layout.seq_len, layout.width, layout.pooled_dim
        self.blocks = [(TEXT_ENCODERS.index(enc), enc, p) for enc, p in placements.items()]
        """(index in a sample's keep flags, encoder, placement) of each present encoder."""
        self.padding = padding_blocks(placements, self.width)
        self.dtype = dtype
        self.raw = {2: torch.int16, 4: torch.int32}[torch.empty((), dtype=dtype).element_size()]
        self.np_raw = {torch.int16: np.int16, torch.int32: np.int32}[self.raw]
        self.pool = TensorPool(pool_size)
        self.ring: Optional[SharedRing] = None
        """Set inside a DataLoader worker: collate into shared slots when one is free."""
        self._scratch = np.empty(0, dtype=self.np_raw)
        self._zeros: dict[int, np.ndarray] = {}
        """Memory address of a context or pooled tensor -> its zero flags (`_zero_flags`):
        dropping an encoder where the memory already holds zeros needs no write."""
        self.null = None if null_text is None else load_null_text(null_text, placements, dtype)
        """encoder -> (hidden (T, D), pooled (P,) or None) raw views, written where it is dropped."""

    def _put(self, sample: RawSample, name: str, dest: np.ndarray) -> None:
        """Copy tensor `name` of `sample` into `dest` (a view of the batch of the same shape)."""
        offset, shape = sample.parts[name]
        data = sample.data
        if isinstance(data, ShardFile):
            if dest.flags.c_contiguous:  # latent, T5 rows, pooled spans
                data.read_into(dest, offset)
                return
            # A CLIP block is 77 short rows of the wide context: one read into a small buffer
            # that stays in cache, then a strided copy, beats 77 reads of a row each.
            n = math.prod(shape)
            if self._scratch.size < n:
                self._scratch = np.empty(n, dtype=self.np_raw)
            src = self._scratch[:n].reshape(shape)
            data.read_into(src, offset)
        else:
            src = np.frombuffer(data, dtype=self.np_raw, count=math.prod(shape), offset=offset).reshape(shape)
        dest[...] = src

    def _zero_flags(self, t: torch.Tensor, n: int, fresh: bool) -> np.ndarray:
        """(rows, blocks) flags of the context or pooled memory of `t`: True where the block
        holds zeros (all False where unknown). Memory handed out again (a pool tensor or ring
        slot) holds what the last collation wrote: the consumer treats batches as read-only."""
        address = t.data_ptr()
        flags = None if fresh else self._zeros.get(address)
        if flags is None or flags.shape[0] < n:
            if len(self._zeros) >= 64:  # addresses of freed tensors; forgetting only costs writes
                self._zeros.clear()
            flags = self._zeros[address] = np.zeros((n, len(self.blocks)), dtype=bool)
        return flags

    def __call__(self, samples: list[RawSample]) -> dict:
        n = len(samples)
        claimed = self.ring.take(n, samples[0].shape) if self.ring is not None else None
        if claimed is not None:
            slot, (latent, context, pooled, features) = claimed
            fresh = fresh_pooled = False  # ring slots start zeroed
        else:
            slot = None
            latent, _ = self.pool.empty((n,) + samples[0].shape, self.dtype)  # (B, C, h, w)
            context, fresh = self.pool.empty((n, self.seq_len, self.width), self.dtype)  # (B, 154, Dt)
            pooled, fresh_pooled = self.pool.empty((n, self.pooled_dim), self.dtype)  # (B, Pl + Pg)
            features = None if self.repa is None else self.pool.empty((n, *self.repa), self.dtype)[0]  # (B, N, De)
        lat, ctx, pool = (t.view(self.raw).numpy() for t in (latent, context, pooled))
        rep = None if features is None else features.view(self.raw).numpy()
        if fresh:  # nothing but zeros is ever written to the padding: a reused tensor keeps them
            for r0, r1, c0, c1 in self.padding:
                ctx[:, r0:r1, c0:c1] = 0
        zeros = self._zero_flags(context, n, fresh)
        pool_zeros = self._zero_flags(pooled, n, fresh_pooled)
        for i, s in enumerate(samples):
            self._put(s, LATENT_KEY, lat[i])
            if rep is not None:
                self._put(s, REPA_KEY, rep[i])
            for b, (e, enc, at) in enumerate(self.blocks):
                (r0, r1), (c0, c1), span = at.rows, at.cols, at.pooled
                if s.keep[e]:
                    self._put(s, text_key(s.variant, enc), ctx[i, r0:r1, c0:c1])
                    if span is not None:
                        self._put(s, text_key(s.variant, enc, pooled=True), pool[i, span[0]:span[1]])
                    zeros[i, b] = pool_zeros[i, b] = False
                    continue
                if self.null is not None:  # "no prompt" is the encoded empty string
                    hidden, null_pooled = self.null[enc]
                    ctx[i, r0:r1, c0:c1] = hidden
                    if span is not None:
                        pool[i, span[0]:span[1]] = null_pooled
                    zeros[i, b] = pool_zeros[i, b] = False
                    continue
                if not zeros[i, b]:  # a dropped encoder was about half the collation's writes
                    ctx[i, r0:r1, c0:c1] = 0
                    zeros[i, b] = True
                if span is not None and not pool_zeros[i, b]:
                    pool[i, span[0]:span[1]] = 0
                    pool_zeros[i, b] = True
        del lat, ctx, pool, rep  # the pool reuses a tensor only once no view of it is left
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
        if features is not None:
            batch["repa_features"] = features  # (B, grid^2, De): REPA's target, the clean image's features
        if slot is not None:
            batch[SLOT_KEY] = slot
        return batch
