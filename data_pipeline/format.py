"""The on-disk sample format shared by `prepare` (writer) and the training loader (reader).

A shard is a WebDataset tar. Each sample is exactly two tar members:

- `KEY.tensors.safetensors`: one safetensors blob holding
  - `latent` (C, h, w): the normalised latent the model consumes, `(z - shift) * scale`;
  - for each caption variant v in CAPTION_VARIANTS that the sample has, and each text encoder
    that the run used: `{v}.clip_l` (77, Dl), `{v}.clip_l_pooled` (Pl,), `{v}.clip_g` (77, Dg),
    `{v}.clip_g_pooled` (Pg,), `{v}.t5` (77, Dt). An absent encoder's keys are absent.
  Hidden states are stored INCLUDING pad positions, exactly as the reference pipelines feed them
  (reference card section 2): dropping pads would change the conditioning.
- `KEY.json`: `{"key", "captions": {"orig": str, "syn": str?}, "original_size": [h, w],
  "crop_box": [left, top, right, bottom], "size": [H, W]}`.

Text encoders are stored separately (not pre-concatenated) so the loader can drop each one
independently; `assemble_text` builds the model's (context, pooled) from them. Provenance and
manifest helpers live in `data_pipeline.manifest`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

FORMAT_VERSION = 1
"""Bumped whenever a reader of the previous version could misread the new one."""

TEXT_TOKENS = 77
"""Sequence length of every stored text hidden state (CLIP and T5 alike, reference card 2)."""

CAPTION_VARIANTS: tuple[str, ...] = ("orig", "syn")
"""Original (alt-text) and synthetic (captioner) captions; training mixes them 50/50."""

TEXT_ENCODERS: tuple[str, ...] = ("clip_l", "clip_g", "t5")
"""Text encoder names, in the order their hidden states enter the context."""

CLIP_ENCODERS: tuple[str, ...] = ("clip_l", "clip_g")
"""Encoders that also produce a pooled vector; concatenated in this order into `pooled`."""

TENSORS_EXT = "tensors.safetensors"
"""Extension (WebDataset field name) of the tensor member of a sample."""

META_EXT = "json"
"""Extension (WebDataset field name) of the metadata member of a sample."""

LATENT_KEY = "latent"

TENSOR_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Storage dtypes a shard may use; the manifest records which."""

SAFETENSORS_METADATA = {"format": f"mmdit-scale/{FORMAT_VERSION}"}


def text_key(variant: str, encoder: str, pooled: bool = False) -> str:
    """Name of a text tensor inside the safetensors blob, e.g. `syn.clip_g_pooled`."""
    if variant not in CAPTION_VARIANTS:
        raise ValueError(f"unknown caption variant {variant!r}; expected one of {CAPTION_VARIANTS}")
    if encoder not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {encoder!r}; expected one of {TEXT_ENCODERS}")
    if pooled and encoder not in CLIP_ENCODERS:
        raise ValueError(f"encoder {encoder!r} has no pooled output")
    return f"{variant}.{encoder}_pooled" if pooled else f"{variant}.{encoder}"


def shard_name(index: int, part: Optional[int] = None) -> str:
    """`shard-000042.tar` for a single-part run; `shard-00003-000042.tar` for part 3 of a
    multi-part run, so the parts of one dataset never collide in a shared output directory."""
    if part is None:
        return f"shard-{index:06d}.tar"
    return f"shard-{part:05d}-{index:06d}.tar"


def sanitize_key(key: str) -> str:
    """WebDataset splits a member name at the first '.' of its basename, so keys carry no dots;
    other characters outside [A-Za-z0-9_/-] become '_' to keep tar names portable."""
    parts = [p for p in key.split("/") if p not in ("", ".")]
    text = "/".join("".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in p) for p in parts)
    if not text:
        raise ValueError(f"key {key!r} is empty after sanitising")
    return text


@dataclass
class Sample:
    """One decoded sample: tensors as stored plus its metadata."""

    key: str
    tensors: dict[str, torch.Tensor]
    captions: dict[str, str]
    original_size: tuple[int, int]
    """(h, w) of the source image after EXIF orientation, before crop/resize."""
    crop_box: tuple[int, int, int, int]
    """(left, top, right, bottom) in original-image pixels of the region that was resized."""
    size: tuple[int, int]
    """(H, W) of the encoded image; latent is (C, H / f, W / f)."""
    extra: dict = field(default_factory=dict)
    """Other JSON fields a newer writer may add; kept, never interpreted."""

    @property
    def variants(self) -> tuple[str, ...]:
        """Caption variants the sample has tensors or text for, in CAPTION_VARIANTS order."""
        return tuple(v for v in CAPTION_VARIANTS if v in self.captions)


def encode_sample(sample: Sample, dtype: str = "bf16") -> dict[str, bytes]:
    """Serialise a sample into its two tar members: `{TENSORS_EXT: bytes, META_EXT: bytes}`.

    The key is not part of the returned mapping's names (WebDataset's TarWriter takes it as
    `__key__`); it is repeated inside the JSON so a sample stays self-describing.
    Floating tensors are cast to the storage dtype; output bytes depend only on the inputs.
    """
    if dtype not in TENSOR_DTYPES:
        raise ValueError(f"tensor dtype {dtype!r} not in {sorted(TENSOR_DTYPES)}")
    if LATENT_KEY not in sample.tensors:
        raise ValueError(f"sample {sample.key!r} has no {LATENT_KEY!r} tensor")
    target = TENSOR_DTYPES[dtype]
    tensors = {
        name: (t.detach().to("cpu", target) if t.is_floating_point() else t.detach().cpu()).contiguous()
        for name, t in sample.tensors.items()
    }
    meta = {
        "key": sample.key,
        "captions": {v: sample.captions[v] for v in CAPTION_VARIANTS if v in sample.captions},
        "original_size": [int(x) for x in sample.original_size],
        "crop_box": [int(x) for x in sample.crop_box],
        "size": [int(x) for x in sample.size],
        **sample.extra,
    }
    return {
        TENSORS_EXT: _st_save(tensors, metadata=SAFETENSORS_METADATA),
        META_EXT: json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
    }


def decode_sample(entries: Mapping[str, bytes]) -> Sample:
    """Inverse of `encode_sample`. Accepts a WebDataset sample dict (extension -> bytes; other
    fields such as `__key__` and `__url__` are ignored). Raises ValueError on a malformed sample
    so a loader can count it and move on."""
    try:
        raw_tensors = entries[TENSORS_EXT]
        raw_meta = entries[META_EXT]
    except KeyError as err:
        raise ValueError(f"sample lacks member {err.args[0]!r}; has {sorted(entries)}") from None
    try:
        tensors = _st_load(bytes(raw_tensors))
        meta = json.loads(bytes(raw_meta).decode("utf-8"))
        key = meta.pop("key")
        captions = dict(meta.pop("captions"))
        original_size = tuple(int(x) for x in meta.pop("original_size"))
        crop_box = tuple(int(x) for x in meta.pop("crop_box"))
        size = tuple(int(x) for x in meta.pop("size"))
    except Exception as err:  # safetensors raises its own error types; normalise for the caller
        raise ValueError(f"malformed sample: {type(err).__name__}: {err}") from err
    if LATENT_KEY not in tensors:
        raise ValueError(f"sample {key!r} has no {LATENT_KEY!r} tensor")
    return Sample(key=key, tensors=tensors, captions=captions, original_size=original_size,
                  crop_box=crop_box, size=size, extra=meta)


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


Keep = Union[bool, torch.Tensor]
"""Per-encoder keep flag: a bool, or a bool tensor of the batch shape (e.g. (B,))."""


def _masked(x: torch.Tensor, keep: Keep, trailing: int) -> torch.Tensor:
    if isinstance(keep, bool):
        return x if keep else torch.zeros_like(x)
    mask = keep.to(torch.bool).reshape(keep.shape + (1,) * trailing)
    # where(), not multiply: a NaN in a dropped part must not leak through 0 * NaN.
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def assemble_text(
    tensors: Mapping[str, torch.Tensor],
    variant: str,
    layout: TextLayout,
    keep: Optional[Mapping[str, Keep]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the model's text inputs from stored per-encoder tensors of one caption variant.

    context: CLIP-L ‖ CLIP-G on channels (..., 77, Dl + Dg), zero-padded to the context width,
    then T5 (..., 77, Dt) appended on the sequence axis -> (..., 154, Dt).
    pooled: CLIP-L pooled ‖ CLIP-G pooled -> (..., Pl + Pg).
    `keep[encoder]` False zeroes that encoder's part (its hidden states AND its pooled vector),
    the paper's independent text-encoder dropout. Works on one sample or a batch (leading dims).
    """
    keep = dict(keep or {})
    unknown = set(keep) - set(TEXT_ENCODERS)
    if unknown:
        raise ValueError(f"keep names unknown encoders {sorted(unknown)}; expected {TEXT_ENCODERS}")
    present = layout.present()
    if not present:
        raise ValueError("TextLayout has no text encoder")

    def get(name: str, expected_last: int) -> torch.Tensor:
        try:
            t = tensors[name]
        except KeyError:
            raise KeyError(f"sample lacks {name!r}; has {sorted(tensors)}") from None
        if t.shape[-1] != expected_last:
            raise ValueError(f"{name!r} has width {t.shape[-1]}, layout expects {expected_last}")
        return t

    width = layout.width
    parts, pooled = [], []
    clip_hidden = [_masked(get(text_key(variant, e), getattr(layout, e)), keep.get(e, True), 2)
                   for e in CLIP_ENCODERS if getattr(layout, e)]
    for e in CLIP_ENCODERS:
        if getattr(layout, e + "_pooled"):
            pooled.append(_masked(get(text_key(variant, e, pooled=True), getattr(layout, e + "_pooled")),
                                  keep.get(e, True), 1))
    if clip_hidden:
        clip = torch.cat(clip_hidden, dim=-1)  # (..., 77, Dl + Dg)
        parts.append(torch.nn.functional.pad(clip, (0, width - clip.shape[-1])))  # (..., 77, width)
    if layout.t5:
        parts.append(_masked(get(text_key(variant, "t5"), layout.t5), keep.get("t5", True), 2))  # (..., 77, Dt)
    context = torch.cat(parts, dim=-2)  # (..., seq_len, width)
    if pooled:
        pooled_vec = torch.cat(pooled, dim=-1)  # (..., Pl + Pg)
    else:
        pooled_vec = context.new_zeros(context.shape[:-2] + (0,))
    return context, pooled_vec
