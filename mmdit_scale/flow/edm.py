"""EDM (Karras et al. 2022) as the SD3 paper casts it: log-normal noise levels, F-prediction, EDM weighting.

The noise level is sigma_t = exp(P_m + P_s * Phi^-1(t)) (Phi^-1: the standard normal quantile), so a
uniform t gives EDM's log-normal sigma and lambda_t = -2 log sigma_t ~ N(-2 P_m, (2 P_s)^2).

The paper writes the process variance-exploding, z = x0 + sigma eps. Here it is the variance-preserving
equivalent a_t = 1 / sqrt(1 + sigma^2), b_t = sigma / sqrt(1 + sigma^2): the same lambda_t, hence the
same w_t, the same F target and the same loss for every (x0, eps, t); only the network input is divided
by sqrt(1 + sigma^2) (EDM's own c_in for sigma_data = 1). It keeps t = 1 pure noise, which the shared
Euler sampler needs (in VE form z_1 is unbounded). See docs/flow.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdit_scale.flow.formulation import Formulation


@dataclass(frozen=True)
class EDM(Formulation):
    """w_t = N(lambda_t | -2 P_m, (2 P_s)^2) (exp(-lambda_t) + sigma_data^2); the network predicts F.

    F = (sigma x0 - sigma_data eps) / (sigma_data sqrt(sigma^2 + sigma_data^2)), EDM's preconditioned
    target (x0 - c_skip z) / c_out written in (x0, eps). The loss is sigma_data^2 / 2 times the F-MSE.
    Phi^-1 and lambda'_t diverge at both endpoints, so the model is evaluated on [t_eps, 1 - t_eps].
    """

    name = "edm"
    prediction = "EDM's F (preconditioned x0)"
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    t_eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.p_std <= 0 or self.sigma_data <= 0:
            raise ValueError(f"edm needs p_std > 0 and sigma_data > 0, got {self.p_std}, {self.sigma_data}")
        if not 0.0 < self.t_eps < 0.5:
            raise ValueError(f"edm t_eps must lie in (0, 0.5), got {self.t_eps}")

    @property
    def t_min(self) -> float:
        return self.t_eps

    @property
    def t_max(self) -> float:
        return 1.0 - self.t_eps

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * (self.p_mean + self.p_std * torch.special.ndtri(t))

    def d_log_snr(self, t: Tensor) -> Tensor:
        # d Phi^-1(t) / dt = 1 / phi(Phi^-1(t)).
        u = torch.special.ndtri(t)
        return -2.0 * self.p_std * math.sqrt(2.0 * math.pi) * torch.exp(0.5 * u**2)

    def a(self, t: Tensor) -> Tensor:
        # a^2 = 1 / (1 + sigma^2) = sigmoid(lambda): exact at lambda = +-inf.
        return torch.sigmoid(self.log_snr(t)).sqrt()

    def b(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def da(self, t: Tensor) -> Tensor:
        return 0.5 * self.a(t) * self.b(t) ** 2 * self.d_log_snr(t)

    def db(self, t: Tensor) -> Tensor:
        return -0.5 * self.b(t) * self.a(t) ** 2 * self.d_log_snr(t)

    def weight(self, t: Tensor) -> Tensor:
        lam = self.log_snr(t)
        std = 2.0 * self.p_std
        density = torch.exp(-0.5 * ((lam + 2.0 * self.p_mean) / std) ** 2) / (std * math.sqrt(2.0 * math.pi))
        return density * (torch.exp(-lam) + self.sigma_data**2)

    def prediction_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # Written in lambda (sigma^2 = exp(-lambda)) so both are finite at sigma = 0 and sigma = inf.
        lam, sd = self.log_snr(t), self.sigma_data
        c_x = 1.0 / (sd * torch.sqrt(1.0 + sd**2 * torch.exp(lam)))
        c_e = -sd / torch.sqrt(torch.exp(-lam) + sd**2)
        return c_x, c_e

    @property
    def loss_scale(self) -> float:
        return 0.5 * self.sigma_data**2
