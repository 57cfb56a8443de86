"""Euler sampling of the flow ODE from t = 1 (noise) to t = 0 (data), with classifier-free guidance."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmdit_scale.flow.formulation import Formulation, ModelFn
from mmdit_scale.flow.rf import RectifiedFlow
from mmdit_scale.flow.shift import shift_timesteps


def sampling_timesteps(steps: int, shift: float = 1.0) -> Tensor:
    """(steps + 1,) float64 grid from 1 to 0: uniform in t, then shifted (as in training)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def _batch_conditions(cond: dict[str, Any], uncond: dict[str, Any]) -> dict[str, Any]:
    """One kwargs dict for a [cond; uncond] batch: tensors concatenated on dim 0, other values shared."""
    if cond.keys() != uncond.keys():
        raise ValueError(f"cond and uncond need the same keys, got {sorted(cond)} and {sorted(uncond)}")
    batched = {}
    for key, value in cond.items():
        other = uncond[key]
        if isinstance(value, Tensor):
            batched[key] = torch.cat([value, other], dim=0)
        elif value == other:
            batched[key] = value
        else:
            raise ValueError(f"non-tensor condition {key!r} differs between cond and uncond")
    return batched


@torch.no_grad()
def euler_sample(
    model_fn: ModelFn,
    noise: Tensor,
    steps: int,
    *,
    formulation: Formulation | None = None,
    shift: float = 1.0,
    cfg: float = 1.0,
    cond: dict[str, Any] | None = None,
    uncond: dict[str, Any] | None = None,
    progress: bool = False,
) -> Tensor:
    """Integrate dz/dt = v(z, t) with x <- x + (t_next - t) v over `sampling_timesteps(steps, shift)`.

    noise (B, ...) is z at t = 1. v comes from the formulation's prediction-to-velocity conversion
    (rf by default), at t clamped into the formulation's [t_min, t_max]. With cfg != 1 the model runs
    once per step on the concatenated [cond; uncond] batch (2B) and
    v = v_uncond + cfg (v_cond - v_uncond). The state is kept in at least float32; the model gets it
    in noise's dtype. Returns z at t = 0.
    """
    formulation = formulation or RectifiedFlow()
    cond = cond or {}
    guided = cfg != 1.0
    if guided and uncond is None:
        raise ValueError("cfg != 1 needs `uncond` (the null conditioning)")
    model_kwargs = _batch_conditions(cond, uncond) if guided else cond

    grid = sampling_timesteps(steps, shift).tolist()
    state_dtype = torch.promote_types(noise.dtype, torch.float32)
    x = noise.to(state_dtype)
    batch = noise.shape[0]
    pairs = list(zip(grid[:-1], grid[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="euler", unit="step")
    for t_cur, t_next in pairs:
        t = formulation.model_time(torch.full((batch,), t_cur, dtype=state_dtype, device=noise.device))
        if guided:
            z_in, t_in = torch.cat([x, x]), torch.cat([t, t])  # (2B, ...), (2B,)
            pred = model_fn(z_in.to(noise.dtype), t_in, **model_kwargs).to(state_dtype)
            v_cond, v_uncond = formulation.velocity(z_in, pred, t_in).chunk(2)
            v = v_uncond + cfg * (v_cond - v_uncond)
        else:
            pred = model_fn(x.to(noise.dtype), t, **model_kwargs).to(state_dtype)
            v = formulation.velocity(x, pred, t)
        x = x + (t_next - t_cur) * v
    return x
