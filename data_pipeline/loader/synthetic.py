"""Prepared shards of random tensors in the real format, for loader tests and benchmarks.

Written through the same `format.encode_sample`, `writer.ShardWriter` and `manifest.Manifest`
as `prepare`, so a loader that reads these reads real shards; only the encoders are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from data_pipeline.format import LATENT_KEY, Sample, encode_sample, shard_name, text_key
from data_pipeline.layout import CAPTION_VARIANTS, CLIP_ENCODERS, TEXT_TOKENS
from data_pipeline.manifest import AUTOENCODER, MANIFEST_NAME, EncoderInfo, LatentInfo, Manifest, Provenance, ShardInfo
from data_pipeline.writer import ShardWriter

SD3_TEXT = {"clip_l": (768, 768), "clip_g": (1280, 1280), "t5": (4096, None)}
"""Real SD3 text widths: encoder -> (hidden, pooled)."""

TINY_TEXT = {"clip_l": (8, 8), "clip_g": (12, 12), "t5": (32, None)}
"""Small widths with SD3's structure (T5 wider than CLIP-L + CLIP-G, so CLIP is zero-padded)."""


@dataclass
class SyntheticSpec:
    shards: int = 2
    per_shard: int = 8
    channels: int = 16
    latent_sizes: Sequence[tuple[int, int]] = ((32, 32),)
    """Latent (h, w) buckets; sample i of shard s gets size (s + i) % len."""
    text: dict = field(default_factory=lambda: dict(SD3_TEXT))
    """encoder -> (hidden width, pooled width or None); leave an encoder out to make it absent."""
    tokens: int = TEXT_TOKENS
    variants: Sequence[str] = CAPTION_VARIANTS
    dtype: str = "bf16"
    factor: int = 8
    weights_tag: str = "synthetic-0"
    """Stands in for the encoders' weight hash: datasets with different tags differ in provenance."""
    seed: int = 0


def provenance_for(spec: SyntheticSpec) -> Provenance:
    encoders = {AUTOENCODER: EncoderInfo(kind="sd3_vae", model_dir="synthetic/vae", weights_sha256=spec.weights_tag,
                                         dtype="fp32", dims={"channels": spec.channels, "factor": spec.factor})}
    for enc, (hidden, pooled) in spec.text.items():
        dims = {"hidden": hidden} if pooled is None else {"hidden": hidden, "pooled": pooled}
        encoders[enc] = EncoderInfo(kind="t5" if enc == "t5" else "clip", model_dir=f"synthetic/{enc}",
                                    weights_sha256=spec.weights_tag, dtype="fp32", dims=dims, tokens=spec.tokens)
    h, w = spec.latent_sizes[0]
    buckets = [[a * spec.factor, b * spec.factor] for a, b in spec.latent_sizes] if len(spec.latent_sizes) > 1 else None
    return Provenance(encoders=encoders, latent=LatentInfo(channels=spec.channels, factor=spec.factor,
                                                           scale=1.5305, shift=0.0609),
                      resolution=max(h, w) * spec.factor, buckets=buckets, tensor_dtype=spec.dtype)


def make_sample(spec: SyntheticSpec, shard: int, index: int) -> Sample:
    g = torch.Generator().manual_seed(spec.seed * 1_000_003 + shard * 10_007 + index)
    h, w = spec.latent_sizes[(shard + index) % len(spec.latent_sizes)]
    tensors = {LATENT_KEY: torch.randn(spec.channels, h, w, generator=g)}
    for v in spec.variants:
        for enc, (hidden, pooled) in spec.text.items():
            tensors[text_key(v, enc)] = torch.randn(spec.tokens, hidden, generator=g)
            if pooled is not None and enc in CLIP_ENCODERS:
                tensors[text_key(v, enc, pooled=True)] = torch.randn(pooled, generator=g)
    captions = {v: f"{v} caption of sample {index} in shard {shard}" for v in spec.variants}
    return Sample(key=f"s{shard:05d}_{index:06d}", tensors=tensors, captions=captions,
                  original_size=(h * spec.factor, w * spec.factor),
                  crop_box=(0, 0, w * spec.factor, h * spec.factor), size=(h * spec.factor, w * spec.factor))


def write_synthetic(out_dir: Path, spec: SyntheticSpec) -> Manifest:
    """Write `spec.shards` shards and `manifest.json` into `out_dir`; returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(provenance=provenance_for(spec))
    for s in range(spec.shards):
        with ShardWriter(out_dir / shard_name(s)) as writer:
            for i in range(spec.per_shard):
                sample = make_sample(spec, s, i)
                writer.write(sample.key, encode_sample(sample, spec.dtype))
        written = writer.commit()
        manifest.shards.append(ShardInfo(name=shard_name(s), samples=written.samples, bytes=written.bytes,
                                         sha256=written.sha256))
    manifest.save(out_dir / MANIFEST_NAME)
    return manifest
