"""Resolution-dependent timestep shift (SD3 paper, section 5.3.2).

More pixels carry more redundant signal, so the same noise level destroys less of the image; shifting
t towards noise keeps the SNR the model sees comparable: t_m = alpha t_n / (1 + (alpha - 1) t_n) with
alpha = sqrt(m / n) for m and n pixels, which for rf is lambda_m = lambda_n - 2 log alpha. It applies
to sampled training timesteps and to the sampler's time grid alike; 0 and 1 stay fixed.
"""
from __future__ import annotations

import math
from typing import TypeVar

from torch import Tensor

T = TypeVar("T", float, Tensor)


def shift_timesteps(t: T, alpha: float) -> T:
    """alpha t / (1 + (alpha - 1) t); alpha > 1 moves t towards 1 (noise), alpha = 1 is the identity."""
    if alpha <= 0:
        raise ValueError(f"shift alpha must be > 0, got {alpha}")
    if alpha == 1.0:
        return t
    return alpha * t / (1.0 + (alpha - 1.0) * t)


def _pixels(size: int | tuple[int, int]) -> int:
    if isinstance(size, tuple):
        height, width = size
        return height * width
    return size


def shift_for_resolution(target: int | tuple[int, int], base: int | tuple[int, int] = (256, 256)) -> float:
    """alpha = sqrt(target pixels / base pixels); sizes are pixel counts or (height, width) pairs.

    (1024, 1024) over the 256^2 base gives 4.0; SD3 itself trains and samples 1024^2 with 3.0, an
    empirical choice below the formula (docs/flow.md).
    """
    target_px, base_px = _pixels(target), _pixels(base)
    if target_px <= 0 or base_px <= 0:
        raise ValueError(f"pixel counts must be positive, got {target!r} and {base!r}")
    return math.sqrt(target_px / base_px)


def shift_for_size(shift: float, size: tuple[int, int], resolution: int) -> float:
    """The shift of one batch of `size` = (height, width) pixels: `shift` (the recipe's flow.shift)
    at the `resolution` x `resolution` base, times sqrt(size pixels / base pixels) for other sizes
    (the paper's rule, applied to aspect buckets). Training, validation and sampling all use it."""
    return shift * shift_for_resolution(size, (resolution, resolution))
