"""The on-disk sample format shared by `prepare` (writer) and the training loader (reader).

A shard is a WebDataset tar. Each sample is exactly two tar members:

- `KEY.tensors.safetensors`: one safetensors blob holding
  - `latent` (C, h, w): the normalised latent the model consumes, `(z - shift) * scale`;
  - for each caption variant v in CAPTION_VARIANTS that the sample has, and each text encoder
    that the run used: `{v}.clip_l` (77, Dl), `{v}.clip_l_pooled` (Pl,), `{v}.clip_g` (77, Dg),
    `{v}.clip_g_pooled` (Pg,), `{v}.t5` (77, Dt). An absent encoder's keys are absent.
  - `repa` (grid^2, D): patch features of the clean image from the REPA vision encoder, only in
    shards prepared with `--repa-encoder` (the manifest's `encoders.repa` says so).
  Hidden states are stored INCLUDING pad positions, exactly as the reference pipelines feed them
  (reference card section 2): dropping pads would change the conditioning.
- `KEY.json`: `{"key", "captions": {"orig": str, "syn": str?}, "original_size": [h, w],
  "crop_box": [left, top, right, bottom], "size": [H, W]}`, read and written only through
  `decode_meta`/`encode_meta`.

Text encoders are stored separately (not pre-concatenated) so the loader can drop each one
independently; `TextLayout.placements()` says where each lands in the model's (context, pooled),
and both `assemble_text` and the loader's collator write through it. The torch-free names
(encoders, caption variants, token count, version) and `TextLayout` live in
`data_pipeline.layout`; provenance and manifest helpers in `data_pipeline.manifest`.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from data_pipeline.layout import CAPTION_VARIANTS, CLIP_ENCODERS, FORMAT_VERSION, TEXT_ENCODERS, TextLayout

TENSORS_EXT = "tensors.safetensors"
"""Extension (WebDataset field name) of the tensor member of a sample."""

META_EXT = "json"
"""Extension (WebDataset field name) of the metadata member of a sample."""

LATENT_KEY = "latent"
REPA_KEY = "repa"

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
class SampleMeta:
    """The JSON member of a sample. `encode_meta`/`decode_meta` are the only code that knows its
    field names, so the writer, `decode_sample` and the training loader cannot drift apart."""

    key: str
    captions: dict[str, str]
    original_size: tuple[int, int]
    """(h, w) of the source image after EXIF orientation, before crop/resize."""
    crop_box: tuple[int, int, int, int]
    """(left, top, right, bottom) in original-image pixels of the region that was resized."""
    size: tuple[int, int]
    """(H, W) of the encoded image; latent is (C, H / f, W / f)."""
    extra: dict = field(default_factory=dict)
    """Other JSON fields a newer writer may add; kept, never interpreted."""


def encode_meta(meta: SampleMeta) -> bytes:
    """The JSON member's bytes; sorted keys, so output bytes depend only on the inputs."""
    obj = {
        "key": meta.key,
        "captions": {v: meta.captions[v] for v in CAPTION_VARIANTS if v in meta.captions},
        "original_size": [int(x) for x in meta.original_size],
        "crop_box": [int(x) for x in meta.crop_box],
        "size": [int(x) for x in meta.size],
        **meta.extra,
    }
    return json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8")


def decode_meta(raw: bytes) -> SampleMeta:
    """Inverse of `encode_meta`; raises ValueError on malformed metadata so a reader can count
    the sample and move on."""
    try:
        obj = json.loads(bytes(raw).decode("utf-8"))
        key = obj.pop("key")
        captions = {str(v): str(text) for v, text in obj.pop("captions").items()}
        original_size = tuple(int(x) for x in obj.pop("original_size"))
        crop_box = tuple(int(x) for x in obj.pop("crop_box"))
        size = tuple(int(x) for x in obj.pop("size"))
    except Exception as err:  # JSON, UTF-8, missing-field and type errors alike
        raise ValueError(f"malformed sample metadata: {type(err).__name__}: {err}") from err
    return SampleMeta(key=key, captions=captions, original_size=original_size, crop_box=crop_box, size=size,
                      extra=obj)


@dataclass
class Sample:
    """One decoded sample: tensors as stored plus its metadata (fields as in `SampleMeta`)."""

    key: str
    tensors: dict[str, torch.Tensor]
    captions: dict[str, str]
    original_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    size: tuple[int, int]
    extra: dict = field(default_factory=dict)

    @property
    def variants(self) -> tuple[str, ...]:
        """Caption variants the sample has tensors or text for, in CAPTION_VARIANTS order."""
        return tuple(v for v in CAPTION_VARIANTS if v in self.captions)

    @property
    def meta(self) -> SampleMeta:
        return SampleMeta(key=self.key, captions=self.captions, original_size=self.original_size,
                          crop_box=self.crop_box, size=self.size, extra=self.extra)


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
    return {TENSORS_EXT: _st_save(tensors, metadata=SAFETENSORS_METADATA), META_EXT: encode_meta(sample.meta)}


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
    except Exception as err:  # safetensors raises its own error types; normalise for the caller
        raise ValueError(f"malformed sample tensors: {type(err).__name__}: {err}") from err
    meta = decode_meta(raw_meta)
    if LATENT_KEY not in tensors:
        raise ValueError(f"sample {meta.key!r} has no {LATENT_KEY!r} tensor")
    return Sample(key=meta.key, tensors=tensors, captions=meta.captions, original_size=meta.original_size,
                  crop_box=meta.crop_box, size=meta.size, extra=meta.extra)


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
    Each block is written where `layout.placements()` says, into zeros.
    `keep[encoder]` False zeroes that encoder's part (its hidden states AND its pooled vector),
    the paper's independent text-encoder dropout. Works on one sample or a batch (leading dims).
    """
    keep = dict(keep or {})
    unknown = set(keep) - set(TEXT_ENCODERS)
    if unknown:
        raise ValueError(f"keep names unknown encoders {sorted(unknown)}; expected {TEXT_ENCODERS}")
    placements = layout.placements()
    if not placements:
        raise ValueError("TextLayout has no text encoder")

    def get(name: str, *expected: int) -> torch.Tensor:
        try:
            t = tensors[name]
        except KeyError:
            raise KeyError(f"sample lacks {name!r}; has {sorted(tensors)}") from None
        if t.dim() < len(expected) or tuple(t.shape[t.dim() - len(expected):]) != expected:
            raise ValueError(f"{name!r} has shape {tuple(t.shape)}, layout expects (..., *{expected})")
        return t

    hidden, pooled = {}, {}  # encoder -> masked (..., tokens, w) / (..., p)
    for enc, at in placements.items():
        k = keep.get(enc, True)
        hidden[enc] = _masked(get(text_key(variant, enc), layout.tokens, at.cols[1] - at.cols[0]), k, 2)
        if at.pooled:
            pooled[enc] = _masked(get(text_key(variant, enc, pooled=True), at.pooled[1] - at.pooled[0]), k, 1)
    first = next(iter(hidden.values()))
    lead = first.shape[:-2]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in hidden.values()])
    context = torch.zeros(lead + (layout.seq_len, layout.width), dtype=dtype, device=first.device)  # (..., S, W)
    pooled_dtype = functools.reduce(torch.promote_types, [t.dtype for t in pooled.values()], dtype)
    pooled_vec = torch.zeros(lead + (layout.pooled_dim,), dtype=pooled_dtype, device=first.device)  # (..., Pl + Pg)
    for enc, at in placements.items():
        context[..., at.rows[0]:at.rows[1], at.cols[0]:at.cols[1]] = hidden[enc]
        if enc in pooled:
            pooled_vec[..., at.pooled[0]:at.pooled[1]] = pooled[enc]
    return context, pooled_vec
