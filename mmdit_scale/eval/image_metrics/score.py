"""The metrics of one set of generated images against a reference, from features or from images.

The record's keys are what metrics.jsonl and TensorBoard carry under `eval/` (and what
`scaling-report` correlates with validation loss): `fid`, `cmmd` and, with prompts, `clip_score`.
"""
from __future__ import annotations

import numpy as np

from mmdit_scale.eval.image_metrics.distances import clip_score, cmmd, fid, gaussian_stats
from mmdit_scale.eval.image_metrics.extractors import Clip, Inception
from mmdit_scale.eval.image_metrics.reference import Reference

METRICS = ("fid", "cmmd", "clip_score")


def score_features(pool: np.ndarray, clip_images: np.ndarray, reference: Reference,
                   clip_texts: np.ndarray | None = None) -> dict[str, float]:
    """{fid, cmmd[, clip_score]} of generated images' features (rows in a fixed order) against `reference`."""
    mu, sigma = gaussian_stats(pool)
    out = {"fid": fid(mu, sigma, reference.mu, reference.sigma), "cmmd": cmmd(clip_images, reference.clip)}
    if clip_texts is not None:
        out["clip_score"] = clip_score(clip_images, clip_texts)
    return out


def score_images(images: np.ndarray, reference: Reference, inception: Inception, clip: Clip,
                 prompts: list[str] | None = None) -> dict[str, float]:
    """The same from (N, H, W, 3) uint8 images, prompt i belonging to image i."""
    texts = clip.texts(prompts) if prompts is not None else None
    return score_features(inception(images), clip.images(images), reference, texts)
