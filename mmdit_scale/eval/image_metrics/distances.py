"""FID, CMMD and CLIP score from features (float64 numpy arrays, one row per image).

- FID (Heusel et al., 2017): the Frechet distance of Gaussians fitted to Inception-v3 pool features,
  ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The formula is torchmetrics' `_compute_fid`
  (the trace of the matrix square root from the eigenvalues of S1 S2), run in float64.
- CMMD (Jayasumana et al., 2024): the squared maximum mean discrepancy of L2-normalised CLIP image
  embeddings under a Gaussian RBF kernel, with the paper's bandwidth sigma = 10 and scale 1000. The
  estimator keeps the kernel's diagonal (the paper's), so a set against itself gives exactly 0.
- CLIP score (Hessel et al., 2021, torchmetrics' convention): 100 x the mean over images of
  max(cos(image embedding, its prompt's text embedding), 0).
"""
from __future__ import annotations

import numpy as np

CMMD_SIGMA = 10.0
"""Bandwidth of CMMD's Gaussian kernel on unit-norm CLIP embeddings (the CMMD paper's)."""
CMMD_SCALE = 1000.0
"""CMMD is reported x1000, as in the paper, so typical values read as 0.1 to 5."""
CLIP_SCORE_WEIGHT = 100.0
"""torchmetrics' CLIPScore weight (Hessel et al. use 2.5 with a different scale)."""


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) in float64, the unbiased (N - 1) covariance, as torchmetrics'."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"FID needs at least 2 feature rows, got an array of shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance of N(mu1, sigma1) and N(mu2, sigma2)."""
    import torch
    from torchmetrics.image.fid import _compute_fid

    t = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (mu1, sigma1, mu2, sigma2)]
    return float(_compute_fid(*t))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mean_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> float:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T  # (Na, Nb) squared distances
    return float(np.exp(-gamma * np.maximum(sq, 0.0)).mean())


def cmmd(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD of two sets of CLIP image embeddings (N, D) and (M, D); normalised here."""
    x, y = _unit(x), _unit(y)
    gamma = 1.0 / (2.0 * sigma**2)
    return scale * (_mean_kernel(x, x, gamma) + _mean_kernel(y, y, gamma) - 2.0 * _mean_kernel(x, y, gamma))


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> float:
    """CLIP score of images against their own prompts (row i with row i)."""
    if len(image_embeddings) != len(text_embeddings):
        raise ValueError(f"{len(image_embeddings)} images but {len(text_embeddings)} prompts")
    cos = (_unit(image_embeddings) * _unit(text_embeddings)).sum(1)
    return CLIP_SCORE_WEIGHT * float(np.maximum(cos, 0.0).mean())
