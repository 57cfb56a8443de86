"""One shard's work: read, decode, crop, encode and write its planned items.

Runs inside a worker process (one per GPU) or in the main process with one worker. A bad image
is skipped here, and named with its reason in the shard's record; the shard is still written
whole with the remaining samples.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from data_pipeline.atomic import write_atomic
from data_pipeline.encoders.encoder_set import EncoderSet
from data_pipeline.format import LATENT_KEY, REPA_KEY, TENSOR_DTYPES, Sample, encode_sample, text_key
from data_pipeline.layout import NULL_TEXT_FILE
from data_pipeline.shard_plan import PlannedItem, ShardPlan
from data_pipeline.skipped import SkippedInput, reasons
from data_pipeline.transforms import BadImage, Placed, decode_image, place
from data_pipeline.writer import ShardWriter

STATE_DIRNAME = ".prepare"
"""Per-shard completion records live here, beside the shards, for reruns to consult."""


@dataclass(frozen=True)
class EncodeSettings:
    resolution: int
    buckets: Optional[tuple[tuple[int, int], ...]]
    tensor_dtype: str


@dataclass
class ShardResult:
    name: str
    samples: int
    bytes: int
    sha256: str
    planned: int
    skipped_inputs: list[dict]
    """The shard's items that did not decode, as SkippedInput fields: kept in the record so that
    a rerun which reuses the shard still names them. (A record without it, from older code, does
    not load, so its shard is encoded again.)"""
    fingerprint: str

    @property
    def skipped(self) -> Counter:
        """Items skipped, by reason."""
        return reasons(self.skipped_list())

    def skipped_list(self) -> list[SkippedInput]:
        return [SkippedInput(**item) for item in self.skipped_inputs]


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1], the autoencoders' input range."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0


def encode_items(items: list[PlannedItem], encoders: EncoderSet,
                 settings: EncodeSettings) -> tuple[list[Sample], list[SkippedInput]]:
    skipped: list[SkippedInput] = []
    placed: list[tuple[PlannedItem, Placed]] = []
    for item in items:
        try:
            img = decode_image(item.image.read())
        except (OSError, BadImage) as err:  # OSError: the file went away or cannot be read since planning
            reason = err.reason if isinstance(err, BadImage) else "unreadable"
            skipped.append(SkippedInput(key=item.key, path=item.image.path, reason=reason))
            continue
        placed.append((item, place(img, settings.resolution, settings.buckets)))
    if not placed:
        return [], skipped
    latents: list[Optional[torch.Tensor]] = [None] * len(placed)
    features: list[Optional[torch.Tensor]] = [None] * len(placed)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (_, p) in enumerate(placed):
        by_size.setdefault(p.size, []).append(i)
    for idx in by_size.values():  # one batch shape per bucket
        batch = torch.stack([pixels_to_tensor(placed[i][1].pixels) for i in idx])  # (B, 3, H, W)
        for i, z in zip(idx, encoders.encode_images(batch), strict=True):
            latents[i] = z  # (C, H/f, W/f)
        if encoders.vision is not None:  # REPA's target: features of the same clean image
            for i, feat in zip(idx, encoders.encode_repa(batch), strict=True):
                features[i] = feat  # (grid^2, D)
    texts = [(i, v, item.captions[v]) for i, (item, _) in enumerate(placed) for v in ("orig", "syn")
             if v in item.captions]
    encoded = encoders.encode_captions([t for _, _, t in texts])
    tensors: list[dict[str, torch.Tensor]] = [{LATENT_KEY: z} for z in latents]
    for i, feat in enumerate(features):
        if feat is not None:
            tensors[i][REPA_KEY] = feat
    for row, (i, variant, _) in enumerate(texts):
        for name, out in encoded.items():
            tensors[i][text_key(variant, name)] = out["hidden"][row]  # (T, D)
            if "pooled" in out:
                tensors[i][text_key(variant, name, pooled=True)] = out["pooled"][row]  # (P,)
    samples = [Sample(key=item.key, tensors=tensors[i], captions=dict(item.captions), original_size=p.original_size,
                      crop_box=p.crop_box, size=p.size) for i, (item, p) in enumerate(placed)]
    return samples, skipped


def state_path(out_dir: Path, shard_name: str) -> Path:
    return out_dir / STATE_DIRNAME / (shard_name + ".json")


def load_state(out_dir: Path, shard_name: str) -> Optional[ShardResult]:
    try:
        return ShardResult(**json.loads(state_path(out_dir, shard_name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_state(out_dir: Path, result: ShardResult) -> None:
    path = state_path(out_dir, result.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(asdict(result), sort_keys=True))


def save_null_text(out_dir: Path, encoders: EncoderSet, tensor_dtype: str) -> None:
    """Write NULL_TEXT_FILE (the encoded empty string) once per output; workers that race write the
    same bytes, atomically."""
    path = out_dir / NULL_TEXT_FILE
    if path.is_file() or not encoders.text:
        return
    from safetensors.torch import save

    dtype = TENSOR_DTYPES[tensor_dtype]
    tensors = {}
    for enc, out in encoders.encode_captions([""]).items():
        tensors[text_key("orig", enc)] = out["hidden"][0].to(dtype).contiguous()  # (T, D)
        if "pooled" in out:
            tensors[text_key("orig", enc, pooled=True)] = out["pooled"][0].to(dtype).contiguous()  # (P,)
    write_atomic(path, save(tensors))


def write_shard(shard: ShardPlan, out_dir: Path, encoders: EncoderSet, settings: EncodeSettings,
                fingerprint: str) -> ShardResult:
    """Encode and write one shard; its completion record is saved BEFORE the tar is renamed
    into place, so a finished tar always has a record (a record without a tar is redone)."""
    save_null_text(out_dir, encoders, settings.tensor_dtype)
    samples, skipped = encode_items(shard.items, encoders, settings)
    result = ShardResult(name=shard.name, samples=0, bytes=0, sha256="", planned=len(shard.items),
                         skipped_inputs=[asdict(item) for item in skipped], fingerprint=fingerprint)
    if not samples:
        _save_state(out_dir, result)
        return result
    with ShardWriter(out_dir / shard.name) as writer:
        for sample in samples:
            writer.write(sample.key, encode_sample(sample, settings.tensor_dtype))
    written = writer.result
    result.samples, result.bytes, result.sha256 = written.samples, written.bytes, written.sha256
    _save_state(out_dir, result)
    writer.commit()
    return result
