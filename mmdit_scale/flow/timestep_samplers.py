"""Training-timestep distributions on (0, 1) from the SD3 paper (section 3.1), with analytic pdf and cdf.

`get_timestep_sampler("lognorm", m=0.0, s=1.0).sample(n, generator=g)` gives an (n,) tensor strictly
inside (0, 1). Draws happen on the generator's device (CPU by default) and are then moved to `device`,
so a seeded CPU generator gives the same timesteps on any accelerator. Apply the resolution shift
(`shift_timesteps`) to the draws, not here: one sampler serves every resolution.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from mmdit_scale.flow.names import MODE_S_MAX, MODE_S_MIN, lookup

# Draws are clamped to [_EDGE, 1 - _EDGE]: 1 - 2^-24 is the largest float32 below 1, so a float32
# draw never rounds to an endpoint, where rf's weight and the eps formulations blow up.
_EDGE = 2.0**-24



class TimestepSampler(ABC):
    """A distribution of training timesteps t in (0, 1)."""

    name: ClassVar[str]

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(n,) float32 timesteps strictly inside (0, 1)."""
        draw_device = generator.device if generator is not None else torch.device("cpu")
        t = self._draw(n, generator, draw_device)  # (n,) float64
        return t.to(device=device or draw_device, dtype=torch.float32).clamp(_EDGE, 1.0 - _EDGE)

    @abstractmethod
    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """(n,) float64 draws in [0, 1]."""

    @abstractmethod
    def cdf(self, t: Tensor) -> Tensor:
        """P(T <= t)."""

    @abstractmethod
    def pdf(self, t: Tensor) -> Tensor:
        """Density of T at t (inside (0, 1))."""


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64)


@dataclass(frozen=True)
class Uniform(TimestepSampler):
    """t ~ U(0, 1); ranks poorly for rf in the paper (it wastes steps near the easy endpoints)."""

    name = "uniform"

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return _uniform(n, generator, device)

    def cdf(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0)

    def pdf(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@dataclass(frozen=True)
class LogitNormal(TimestepSampler):
    """t = sigmoid(m + s n), n ~ N(0, 1); lognorm(0, 1) is the paper's best rf setting."""

    name = "lognorm"
    m: float = 0.0
    s: float = 1.0

    def __post_init__(self) -> None:
        if self.s <= 0:
            raise ValueError(f"lognorm needs s > 0, got {self.s}")

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        normal = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
        return torch.sigmoid(self.m + self.s * normal)

    def cdf(self, t: Tensor) -> Tensor:
        return torch.special.ndtr((torch.logit(t) - self.m) / self.s)

    def pdf(self, t: Tensor) -> Tensor:
        z = (torch.logit(t) - self.m) / self.s
        return torch.exp(-0.5 * z**2) / (self.s * math.sqrt(2.0 * math.pi) * t * (1.0 - t))


@dataclass(frozen=True)
class ModeHeavyTails(TimestepSampler):
    """t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1): mass near the middle for s > 0,
    yet positive density on all of [0, 1] (unlike lognorm). s = 1.29 is diffusers' default."""

    name = "mode"
    s: float = 1.29

    def __post_init__(self) -> None:
        if not MODE_S_MIN <= self.s <= MODE_S_MAX:
            raise ValueError(f"mode needs s in [{MODE_S_MIN}, {MODE_S_MAX:.4f}] to stay monotone, got {self.s}")

    def _f(self, u: Tensor) -> Tensor:
        return 1.0 - u - self.s * (torch.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return self._f(_uniform(n, generator, device))

    def _f_inverse(self, t: Tensor) -> Tensor:
        # f falls from 1 to 0, so bisection on u: f has no closed-form inverse. 60 halvings reach float64.
        t = t.to(torch.float64)
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self._f(mid) > t
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def cdf(self, t: Tensor) -> Tensor:
        # f decreasing: P(f(u) <= t) = P(u >= f^-1(t)).
        return 1.0 - self._f_inverse(t.clamp(0.0, 1.0))

    def pdf(self, t: Tensor) -> Tensor:
        u = self._f_inverse(t)
        slope = -1.0 - self.s + 0.5 * math.pi * self.s * torch.sin(math.pi * u)  # f'(u) < 0
        return (1.0 / slope.abs()).to(t.dtype)


@dataclass(frozen=True)
class CosMap(TimestepSampler):
    """t = 1 - 1 / (tan(pi u / 2) + 1): rf's log-SNR then matches the cosine schedule's under uniform u."""

    name = "cosmap"

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return 1.0 - 1.0 / (torch.tan(0.5 * math.pi * _uniform(n, generator, device)) + 1.0)

    def cdf(self, t: Tensor) -> Tensor:
        t = t.clamp(0.0, 1.0)
        return torch.atan2(t, 1.0 - t) * (2.0 / math.pi)

    def pdf(self, t: Tensor) -> Tensor:
        return 2.0 / (math.pi - 2.0 * math.pi * t + 2.0 * math.pi * t**2)


TIMESTEP_SAMPLER_REGISTRY: dict[str, type[TimestepSampler]] = {
    cls.name: cls for cls in (Uniform, LogitNormal, ModeHeavyTails, CosMap)
}


def get_timestep_sampler(name: str, **options: Any) -> TimestepSampler:
    """Build a sampler by name; options are its fields (`lognorm`: m, s; `mode`: s)."""
    return lookup(TIMESTEP_SAMPLER_REGISTRY, name, "timestep sampler")(**options)
