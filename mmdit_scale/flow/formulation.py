"""The forward process z_t = a_t x0 + b_t eps and the SD3 paper's unified objective, for any schedule.

t in [0, 1]: t = 0 is data, t = 1 is noise. Every formulation's network output is a linear
combination `pred = c_x(t) x0 + c_e(t) eps` (velocity, v, eps or EDM's F), so one 2x2 inversion
turns any prediction back into (x0_hat, eps_hat), hence into eps_hat for the unified loss
    L_w = -1/2 E_t,eps [ w_t lambda'_t ||eps_hat - eps||^2 ],    lambda_t = log(a_t^2 / b_t^2),
and into the ODE velocity dz_t/dt = a'_t x0_hat + b'_t eps_hat, so one Euler sampler serves all.

Each concrete formulation's loss is a *constant* multiple (`loss_scale`) of the plain MSE in its own
prediction space; that is what its weight w_t was chosen to achieve, and computing the loss in that
form stays finite at the endpoints where w_t or lambda'_t are infinite. `unified_loss_scale` is the
same factor derived from w_t and lambda'_t; the tests check the two agree.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

ModelFn = Callable[..., Tensor]
"""`model_fn(z_t, t, **model_kwargs) -> prediction`: z_t (B, ...), t (B,) in [0, 1]; returns z_t's shape."""


def expand_like(c: Tensor, x: Tensor) -> Tensor:
    """Append singleton dims so a per-sample coefficient (B,) (or a scalar) broadcasts against x (B, ...)."""
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


@dataclass(frozen=True)
class FlowLoss:
    """Per-sample training loss and the t it was measured at, so a trainer can log loss per t bin."""

    loss: Tensor
    """(B,), at least float32: loss of each sample, mean over its non-batch dims."""
    t: Tensor
    """(B,): the t the model saw (after the formulation's endpoint clamp or quantisation)."""


class Formulation(ABC):
    """A forward process (a_t, b_t), a prediction target and the loss weighting of the unified objective."""

    name: ClassVar[str]
    prediction: ClassVar[str]
    """What the network outputs, in words (docs and logs)."""

    @abstractmethod
    def a(self, t: Tensor) -> Tensor:
        """Data coefficient a_t (1 at t=0 for every schedule but eps_linear's discrete one)."""

    @abstractmethod
    def b(self, t: Tensor) -> Tensor:
        """Noise coefficient b_t."""

    @abstractmethod
    def da(self, t: Tensor) -> Tensor:
        """d a_t / dt."""

    @abstractmethod
    def db(self, t: Tensor) -> Tensor:
        """d b_t / dt."""

    @abstractmethod
    def log_snr(self, t: Tensor) -> Tensor:
        """lambda_t = log(a_t^2 / b_t^2); +inf at t=0 and -inf at t=1 where the schedule reaches them."""

    @abstractmethod
    def d_log_snr(self, t: Tensor) -> Tensor:
        """lambda'_t (negative: the SNR falls as t grows)."""

    @abstractmethod
    def weight(self, t: Tensor) -> Tensor:
        """w_t of the unified objective (may be inf or 0 exactly at t=0 or t=1)."""

    @abstractmethod
    def prediction_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_x, c_e) with target = c_x x0 + c_e eps."""

    @property
    @abstractmethod
    def loss_scale(self) -> float:
        """Closed form of -1/2 w_t lambda'_t (d eps_hat / d pred)^2: the loss per unit of prediction MSE."""

    @property
    def t_min(self) -> float:
        """Smallest t at which the model is evaluated; t below it is clamped (see docs/flow.md)."""
        return 0.0

    @property
    def t_max(self) -> float:
        """Largest t at which the model is evaluated; t above it is clamped (see docs/flow.md)."""
        return 1.0

    def model_time(self, t: Tensor) -> Tensor:
        """The t the model sees and the coefficients are evaluated at, in sampling and training alike."""
        if self.t_min <= 0.0 and self.t_max >= 1.0:
            return t
        return t.clamp(self.t_min, self.t_max)

    def training_time(self, t: Tensor) -> Tensor:
        """Map sampled training timesteps to the t that is trained on (eps_linear quantises here)."""
        return self.model_time(t)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """z_t = a_t x0 + b_t eps."""
        return expand_like(self.a(t), x0) * x0 + expand_like(self.b(t), x0) * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network should output for (x0, eps) at t."""
        c_x, c_e = self.prediction_coefficients(t)
        return expand_like(c_x, x0) * x0 + expand_like(c_e, x0) * noise

    def split_prediction(self, z: Tensor, pred: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from a prediction: solves z = a x0 + b eps, pred = c_x x0 + c_e eps."""
        a, b = expand_like(self.a(t), z), expand_like(self.b(t), z)
        c_x, c_e = (expand_like(c, z) for c in self.prediction_coefficients(t))
        det = a * c_e - b * c_x
        return (c_e * z - b * pred) / det, (a * pred - c_x * z) / det

    def velocity(self, z: Tensor, pred: Tensor, t: Tensor) -> Tensor:
        """The ODE velocity dz_t/dt implied by a prediction; pass t through `model_time` first."""
        x0_hat, eps_hat = self.split_prediction(z, pred, t)
        return expand_like(self.da(t), z) * x0_hat + expand_like(self.db(t), z) * eps_hat

    def unified_loss_scale(self, t: Tensor) -> Tensor:
        """-1/2 w_t lambda'_t (a_t / det)^2 evaluated from the schedule; finite only inside (0, 1)."""
        c_x, c_e = self.prediction_coefficients(t)
        deps_dpred = self.a(t) / (self.a(t) * c_e - self.b(t) * c_x)
        return -0.5 * self.weight(t) * self.d_log_snr(t) * deps_dpred**2

    def training_losses(
        self, model_fn: ModelFn, x0: Tensor, t: Tensor, noise: Tensor, contrastive_weight: float = 0.0,
        **model_kwargs: Any
    ) -> FlowLoss:
        """Per-sample unified-objective loss at the given t (B,) and noise (x0's shape).

        `contrastive_weight` > 0 adds contrastive flow matching (Stoica et al., 2025, "ΔFM"): minus
        lambda times the error against another sample's target at this sample's t (the batch's next
        sample: negatives from the same batch), pushing conditional flows apart. A batch of one has
        no negative and gets the plain loss."""
        t = self.training_time(t)
        z_t = self.add_noise(x0, noise, t)
        pred = model_fn(z_t, t, **model_kwargs)
        target = self.target(x0, noise, t)
        if pred.shape != target.shape:
            raise ValueError(f"model_fn returned shape {tuple(pred.shape)}, expected {tuple(target.shape)}")
        # At least float32, so a bf16 model's loss is not rounded before the mean.
        dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
        mse = (pred.to(dtype) - target.to(dtype)).square().flatten(1).mean(dim=1)  # (B,)
        if contrastive_weight > 0 and x0.shape[0] > 1:
            negative = self.target(x0.roll(1, dims=0), noise.roll(1, dims=0), t)  # (B, ...) another sample's
            mse = mse - contrastive_weight * (pred.to(dtype) - negative.to(dtype)).square().flatten(1).mean(dim=1)
        return FlowLoss(loss=self.loss_scale * mse, t=t)
