"""`manifest.json`: what a prepared dataset holds and how it was made.

The manifest lists every shard (name, samples, bytes, sha256) and the provenance of the tensors
inside them: which encoders (kind, directory, weight hash, dtype, dims, tokens), the latent
normalisation, the resolution or buckets, and the storage dtype. Training refuses to mix
datasets whose provenance differs (`compare_provenance`) and refuses a dataset whose shapes do
not fit the model (`check_against_model`); both name the difference in words.

With `prepare --part I/N` every part writes `manifest.part-IIIII-of-NNNNN.json`; `merge_parts`
joins them into the one `manifest.json` a loader reads.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from data_pipeline.atomic import write_atomic
from data_pipeline.layout import CLIP_ENCODERS, FORMAT_VERSION, TEXT_ENCODERS, TEXT_TOKENS, TextLayout

MANIFEST_NAME = "manifest.json"
AUTOENCODER = "autoencoder"
"""Key of the autoencoder in `Provenance.encoders`; text encoders use their TEXT_ENCODERS names."""
REPA_ENCODER = "repa"
"""Key of the REPA vision encoder in `Provenance.encoders` (absent: the shards hold no REPA features)."""


def part_manifest_name(part: int, parts: int) -> str:
    return f"manifest.part-{part:05d}-of-{parts:05d}.json"


@dataclass
class EncoderInfo:
    """Where one encoder came from and what it produces."""

    kind: str
    """`clip`, `t5` (text); `sd3_vae`, `pixel` (autoencoders); `vision` (REPA's encoder)."""
    model_dir: Optional[str]
    """Directory the weights were loaded from (None for the weightless pixel autoencoder)."""
    weights_sha256: Optional[str]
    """sha256 over the weight files (sorted by name, each as name + bytes); None without weights."""
    dtype: str
    """Compute dtype the encoder ran in (`fp32` on CPU, `bf16`/`fp16` on GPU)."""
    dims: dict[str, int]
    """clip: hidden, pooled; t5: hidden; autoencoder: channels, factor; vision: hidden, grid (side of
    the patch grid), image_size (the side images are resized to)."""
    tokens: Optional[int] = None
    """Text sequence length (77); None for autoencoders."""
    tokenizer_sha256: Optional[str] = None
    """sha256 over the tokenizer files: a different vocabulary is a different encoder."""


@dataclass
class LatentInfo:
    """The model consumes `(z - shift) * scale` of a `channels` x (H/factor) x (W/factor) latent."""

    channels: int
    factor: int
    scale: float
    shift: float


@dataclass
class Provenance:
    encoders: dict[str, EncoderInfo]
    """`autoencoder` plus the text encoders that were used; absent encoders are absent keys."""
    latent: LatentInfo
    resolution: int
    """Target side S: images are S x S, or buckets with H * W about S^2."""
    buckets: Optional[list[list[int]]] = None
    """[[H, W], ...] for aspect-ratio bucketing; None for centre-crop to S x S."""
    tensor_dtype: str = "bf16"
    format_version: int = FORMAT_VERSION

    def text_layout(self, context_dim: Optional[int] = None) -> TextLayout:
        """Widths of the stored text tensors, for `format.assemble_text`."""
        dims: dict[str, int] = {}
        tokens = TEXT_TOKENS
        for name in TEXT_ENCODERS:
            info = self.encoders.get(name)
            if info is None:
                continue
            dims[name] = int(info.dims["hidden"])
            if name in CLIP_ENCODERS:
                dims[name + "_pooled"] = int(info.dims["pooled"])
            tokens = int(info.tokens or TEXT_TOKENS)
        return TextLayout(tokens=tokens, context_dim=context_dim, **dims)

    def repa_features(self) -> Optional[tuple[int, int]]:
        """(grid side, hidden width) of the stored REPA features, each sample's (grid^2, hidden); None
        when the shards hold none."""
        info = self.encoders.get(REPA_ENCODER)
        return None if info is None else (int(info.dims["grid"]), int(info.dims["hidden"]))

    def text_encoders(self) -> tuple[str, ...]:
        return tuple(e for e in TEXT_ENCODERS if e in self.encoders)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        return cls(
            encoders={k: EncoderInfo(**v) for k, v in d["encoders"].items()},
            latent=LatentInfo(**d["latent"]),
            resolution=int(d["resolution"]),
            buckets=[list(b) for b in d["buckets"]] if d.get("buckets") is not None else None,
            tensor_dtype=d["tensor_dtype"],
            format_version=int(d["format_version"]),
        )


@dataclass
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    provenance: Provenance
    shards: list[ShardInfo] = field(default_factory=list)
    part: Optional[list[int]] = None
    """[I, N] for the manifest of part I of N; None for a whole dataset."""

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def to_dict(self) -> dict:
        return {
            "format_version": self.provenance.format_version,
            "samples": self.samples,
            "part": self.part,
            "provenance": self.provenance.to_dict(),
            "shards": [asdict(s) for s in self.shards],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        if int(d.get("format_version", -1)) != FORMAT_VERSION:
            raise ValueError(
                f"manifest format version {d.get('format_version')!r}; this code reads {FORMAT_VERSION}")
        return cls(provenance=Provenance.from_dict(d["provenance"]),
                   shards=[ShardInfo(**s) for s in d["shards"]],
                   part=list(d["part"]) if d.get("part") is not None else None)

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically (temp name + rename): a reader never sees half a manifest."""
        write_atomic(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Manifest":
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return cls.from_dict(json.loads(path.read_text()))


def _diff(prefix: str, a, b, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{prefix}{k}: absent in first, {b[k]!r} in second")
            elif k not in b:
                out.append(f"{prefix}{k}: {a[k]!r} in first, absent in second")
            else:
                _diff(f"{prefix}{k}.", a[k], b[k], out)
    elif a != b:
        out.append(f"{prefix.rstrip('.')}: {a!r} vs {b!r}")


def compare_provenance(a: Provenance, b: Provenance, ignore: Iterable[str] = ()) -> list[str]:
    """Differences between two provenances, one human-readable line each; [] means compatible.

    Model directories are compared only when a side lacks a weight hash: the same weights
    mounted at another path (another machine, another part) are the same encoder.
    `ignore` takes dotted field prefixes, e.g. ("resolution", "buckets") for a loader that
    groups batches by shape anyway.
    """
    da, db = a.to_dict(), b.to_dict()
    for name in set(da["encoders"]) & set(db["encoders"]):
        ea, eb = da["encoders"][name], db["encoders"][name]
        if ea["weights_sha256"] and eb["weights_sha256"]:
            ea.pop("model_dir")
            eb.pop("model_dir")
    out: list[str] = []
    _diff("", da, db, out)
    ignore = tuple(ignore)
    return [line for line in out if not any(line == p or line.startswith((p + ".", p + ":")) for p in ignore)]


def check_against_model(
    provenance: Provenance,
    *,
    in_channels: int,
    context_dim: int,
    pooled_dim: int,
    patch_size: int,
) -> list[str]:
    """Reasons the dataset cannot feed a model of these dims, one line each; [] means it fits."""
    problems: list[str] = []
    lat = provenance.latent
    if lat.channels != in_channels:
        problems.append(f"latent has {lat.channels} channels but the model's in_channels is {in_channels}")
    layout = provenance.text_layout()
    if not layout.present():
        problems.append("dataset has no text encoder")
    if layout.t5 and layout.t5 != context_dim:
        problems.append(f"T5 hidden width {layout.t5} != model context_dim {context_dim}")
    if layout.clip_width > context_dim:
        problems.append(
            f"CLIP-L + CLIP-G width {layout.clip_width} does not fit model context_dim {context_dim}")
    if layout.pooled_dim != pooled_dim:
        problems.append(
            f"pooled CLIP-L + CLIP-G width {layout.pooled_dim} != model pooled_dim {pooled_dim}")
    unit = lat.factor * patch_size
    sizes = provenance.buckets or [[provenance.resolution, provenance.resolution]]
    bad = [s for s in sizes if s[0] % unit or s[1] % unit]
    if bad:
        problems.append(
            f"image sizes {bad} are not multiples of autoencoder factor {lat.factor} x patch {patch_size} = {unit}")
    return problems


def merge_parts(parts: list[Manifest]) -> Manifest:
    """Join the manifests of parts 0..N-1 into one; raises ValueError naming what is missing or
    inconsistent (a part absent, two provenances that differ)."""
    if not parts:
        raise ValueError("no part manifests to merge")
    counts = {p.part[1] for p in parts if p.part}
    if len(counts) != 1 or any(p.part is None for p in parts):
        raise ValueError(f"part manifests disagree on the number of parts: {sorted(counts)}")
    n = counts.pop()
    by_index = {p.part[0]: p for p in parts}
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        raise ValueError(f"parts {missing} of {n} have no manifest yet")
    first = by_index[0]
    for i in range(1, n):
        diff = compare_provenance(first.provenance, by_index[i].provenance)
        if diff:
            raise ValueError(f"part {i} differs from part 0: " + "; ".join(diff))
    shards = [s for i in range(n) for s in by_index[i].shards]
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("part manifests list the same shard name twice")
    return Manifest(provenance=first.provenance, shards=shards, part=None)
