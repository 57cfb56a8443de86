"""Reference statistics: what the metrics compare generated images with, computed once and kept.

A `.npz` file with the real images' Inception mean and covariance (FID), their CLIP image
embeddings (CMMD needs the samples, not a summary), the count, where the images came from, and the
fingerprints of both feature models. Loading it with other feature models is refused: an FID
against statistics of another network is a meaningless number that looks like a real one.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.atomic import write_atomic
from mmdit_scale.eval.image_metrics.distances import gaussian_stats
from mmdit_scale.eval.image_metrics.extractors import Clip, Inception

FORMAT = 1


class ReferenceMismatch(ValueError):
    """The statistics were computed with other feature models than the ones given."""


@dataclass
class Reference:
    mu: np.ndarray
    """(D,) mean of the Inception pool features."""
    sigma: np.ndarray
    """(D, D) their covariance."""
    clip: np.ndarray
    """(N, P) CLIP image embeddings."""
    count: int
    source: str
    """The folder or shards the images came from."""
    inception: str
    """sha256 of the Inception network that made mu and sigma."""
    clip_model: str
    """sha256 of the CLIP weights that made `clip`."""

    @classmethod
    def from_images(cls, images: np.ndarray, inception: Inception, clip: Clip, source: str) -> "Reference":
        """From (N, H, W, 3) uint8 images."""
        return cls.from_features(inception(images), clip.images(images), inception, clip, source)

    @classmethod
    def from_features(cls, pool: np.ndarray, clip_emb: np.ndarray, inception: Inception, clip: Clip,
                      source: str) -> "Reference":
        mu, sigma = gaussian_stats(pool)
        return cls(mu=mu, sigma=sigma, clip=np.asarray(clip_emb, np.float64), count=len(pool), source=source,
                   inception=inception.fingerprint, clip_model=clip.fingerprint)

    def save(self, path: str | Path) -> Path:
        meta = {"format": FORMAT, "count": self.count, "source": self.source, "inception": self.inception,
                "clip_model": self.clip_model}
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu, sigma=self.sigma, clip=self.clip, meta=np.array(json.dumps(meta)))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: reference statistics of format {meta.get('format')}, this code reads {FORMAT}")
            return cls(mu=data["mu"], sigma=data["sigma"], clip=data["clip"], count=meta["count"],
                       source=meta["source"], inception=meta["inception"], clip_model=meta["clip_model"])

    def check(self, inception: Inception, clip: Clip, path: str | Path) -> None:
        """ReferenceMismatch unless these statistics were made by these feature models."""
        for name, made_by, given in (("Inception", self.inception, inception.fingerprint),
                                     ("CLIP", self.clip_model, clip.fingerprint)):
            if made_by != given:
                raise ReferenceMismatch(
                    f"{path} was computed with another {name} model (sha256 {made_by[:12]}..., given "
                    f"{given[:12]}...): compute the reference again with these models (delete the file, or "
                    "pass another path)")
