"""Flow formulations, training-timestep samplers, resolution shift, Euler/CFG sampling, validation loss.

Pure torch and model-agnostic: everything takes a callable `model_fn(z_t, t, **kwargs) -> prediction`.
Importing this package does not import torch (the config schema imports `mmdit_scale.flow.names`);
the public API below is loaded on first attribute access (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmdit_scale.flow.names import FORMULATIONS, TIMESTEP_SAMPLERS

if TYPE_CHECKING:
    from mmdit_scale.flow.formulation import FlowLoss, Formulation
    from mmdit_scale.flow.registry import get_formulation
    from mmdit_scale.flow.ode import euler_sample, sampling_timesteps
    from mmdit_scale.flow.shift import shift_for_resolution, shift_for_size, shift_timesteps
    from mmdit_scale.flow.timestep_samplers import TimestepSampler, get_timestep_sampler
    from mmdit_scale.flow.fixed_t_loss import (VALIDATION_TIMESTEPS, ValidationLoss, validation_loss, validation_noise,
                                              validation_timesteps)

_LAZY = {
    "FlowLoss": "mmdit_scale.flow.formulation",
    "Formulation": "mmdit_scale.flow.formulation",
    "get_formulation": "mmdit_scale.flow.registry",
    "euler_sample": "mmdit_scale.flow.ode",
    "sampling_timesteps": "mmdit_scale.flow.ode",
    "shift_for_resolution": "mmdit_scale.flow.shift",
    "shift_for_size": "mmdit_scale.flow.shift",
    "shift_timesteps": "mmdit_scale.flow.shift",
    "TimestepSampler": "mmdit_scale.flow.timestep_samplers",
    "get_timestep_sampler": "mmdit_scale.flow.timestep_samplers",
    "VALIDATION_TIMESTEPS": "mmdit_scale.flow.fixed_t_loss",
    "validation_timesteps": "mmdit_scale.flow.fixed_t_loss",
    "ValidationLoss": "mmdit_scale.flow.fixed_t_loss",
    "validation_loss": "mmdit_scale.flow.fixed_t_loss",
    "validation_noise": "mmdit_scale.flow.fixed_t_loss",
}

__all__ = ["FORMULATIONS", "TIMESTEP_SAMPLERS", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
