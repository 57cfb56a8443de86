"""LDM's discrete "scaled linear" schedule with eps-prediction (the Stable Diffusion 1/2 recipe).

beta_i = (sqrt(beta_start) + i / (T - 1) (sqrt(beta_end) - sqrt(beta_start)))^2, i = 0 .. T-1,
a_i^2 = prod_{s <= i} (1 - beta_s), b_i = sqrt(1 - a_i^2). Continuous t maps to the index
s = t (T - 1): t = 0 is the least noisy step, t = 1 the noisiest (a_1 is about 0.068, not 0: LDM's
schedule never reaches pure noise). Between indices log a^2 is interpolated linearly, which gives the
sampler a velocity at any t; training (with `discrete`) only ever uses the T grid points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdit_scale.flow.formulation import Formulation


@dataclass(frozen=True)
class EpsLinear(Formulation):
    """eps-prediction, w_t = -2 / lambda'_t: exactly LDM's unweighted eps-MSE (loss_scale 1).

    No coefficient reaches 0 or infinity on [0, 1], so no clamping is needed.
    """

    name = "eps_linear"
    prediction = "noise eps"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_steps: int = 1000
    discrete: bool = True
    """Train on LDM's T grid points only: index min(floor(T t), T - 1), so uniform t gives uniform indices."""

    def __post_init__(self) -> None:
        if not 0.0 < self.beta_start < self.beta_end < 1.0 or self.num_steps < 2:
            raise ValueError(
                f"eps_linear needs 0 < beta_start < beta_end < 1 and num_steps >= 2, got "
                f"{self.beta_start}, {self.beta_end}, {self.num_steps}"
            )

    def log_alpha_bar(self, device: torch.device | str | None = None) -> Tensor:
        """(T,) float64 log a_i^2 on the discrete grid (built on the fly: 1000 values, no device copy)."""
        sqrt_betas = torch.linspace(
            math.sqrt(self.beta_start), math.sqrt(self.beta_end), self.num_steps, dtype=torch.float64, device=device
        )
        return torch.cumsum(torch.log1p(-(sqrt_betas**2)), dim=0)

    def _log_alpha_bar_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log a_t^2, its t-derivative), piecewise linear in t through the grid points."""
        table = self.log_alpha_bar(t.device)
        last = self.num_steps - 1
        s = t.to(torch.float64) * last
        lo = s.detach().floor().clamp(0, last - 1).long()
        rise = table[lo + 1] - table[lo]
        value = table[lo] + (s - lo) * rise
        return value.to(t.dtype), (rise * last).to(t.dtype)

    def training_time(self, t: Tensor) -> Tensor:
        if not self.discrete:
            return t
        index = (t * self.num_steps).floor().clamp(max=self.num_steps - 1)
        return index / (self.num_steps - 1)

    def a(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._log_alpha_bar_at(t)[0])

    def b(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._log_alpha_bar_at(t)[0]))

    def da(self, t: Tensor) -> Tensor:
        log_ab, slope = self._log_alpha_bar_at(t)
        return 0.5 * torch.exp(0.5 * log_ab) * slope

    def db(self, t: Tensor) -> Tensor:
        log_ab, slope = self._log_alpha_bar_at(t)
        return -0.5 * torch.exp(log_ab) * slope / torch.sqrt(-torch.expm1(log_ab))

    def log_snr(self, t: Tensor) -> Tensor:
        log_ab = self._log_alpha_bar_at(t)[0]
        return log_ab - torch.log(-torch.expm1(log_ab))

    def d_log_snr(self, t: Tensor) -> Tensor:
        log_ab, slope = self._log_alpha_bar_at(t)
        return slope / -torch.expm1(log_ab)

    def weight(self, t: Tensor) -> Tensor:
        return -2.0 / self.d_log_snr(t)

    def prediction_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    @property
    def loss_scale(self) -> float:
        return 1.0
