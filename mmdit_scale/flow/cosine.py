"""The variance-preserving cosine schedule a_t = cos(pi t / 2), b_t = sin(pi t / 2), with v- or eps-prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdit_scale.flow.formulation import Formulation


class _CosineSchedule(Formulation):
    """Shared schedule; a_t is written as sin(pi (1 - t) / 2) so that it is exactly 0 at t = 1 in float32."""

    def a(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * (1.0 - t))

    def b(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def da(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * self.b(t)

    def db(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * self.a(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return 2.0 * (torch.log(self.a(t)) - torch.log(self.b(t)))

    def d_log_snr(self, t: Tensor) -> Tensor:
        return -math.pi / (self.a(t) * self.b(t))


@dataclass(frozen=True)
class VCosine(_CosineSchedule):
    """v-prediction (v = a_t eps - b_t x0) with w_t = exp(-lambda_t / 2): a constant-weight v-MSE.

    The v-parameterisation stays invertible at both endpoints, so no clamping is needed.
    """

    name = "v_cos"
    prediction = "v = a_t eps - b_t x0"

    def weight(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.log_snr(t))

    def prediction_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return -self.b(t), self.a(t)

    @property
    def loss_scale(self) -> float:
        return 0.5 * math.pi


@dataclass(frozen=True)
class EpsCosine(_CosineSchedule):
    """eps-prediction with w_t = sech(lambda_t / 2): a constant-weight eps-MSE.

    x0_hat = (z - b eps_hat) / a is undefined at t = 1 (a = 0), so the model is evaluated on
    [0, 1 - t_eps] only (t_eps is this package's choice, not the paper's).
    """

    name = "eps_cos"
    prediction = "noise eps"
    t_eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.t_eps < 0.5:
            raise ValueError(f"eps_cos t_eps must lie in (0, 0.5), got {self.t_eps}")

    @property
    def t_max(self) -> float:
        return 1.0 - self.t_eps

    def weight(self, t: Tensor) -> Tensor:
        return 1.0 / torch.cosh(0.5 * self.log_snr(t))

    def prediction_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    @property
    def loss_scale(self) -> float:
        return math.pi
