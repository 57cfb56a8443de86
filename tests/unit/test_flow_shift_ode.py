"""Resolution shift, the Euler sampler on a flow with a known exact solution, and CFG arithmetic."""
from __future__ import annotations

import math

import pytest
import torch

from mmdit_scale.flow import (
    FORMULATIONS,
    euler_sample,
    get_formulation,
    sampling_timesteps,
    shift_for_resolution,
    shift_timesteps,
)

F64 = torch.float64


def test_shift_fixed_points_identity_and_monotonicity():
    t = torch.linspace(0, 1, 101, dtype=F64)
    for alpha in (0.5, 3.0, 4.0):
        shifted = shift_timesteps(t, alpha)
        assert shifted[0].item() == 0.0 and shifted[-1].item() == 1.0
        assert (shifted.diff() > 0).all()
        torch.testing.assert_close(shift_timesteps(shifted, 1 / alpha), t)  # 1/alpha undoes alpha
    assert (shift_timesteps(t, 3.0)[1:-1] > t[1:-1]).all()  # alpha > 1 moves t towards noise
    assert torch.equal(shift_timesteps(t, 1.0), t)
    assert shift_timesteps(0.5, 3.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        shift_timesteps(t, 0.0)


def test_shift_lowers_rf_log_snr_by_log_of_the_pixel_ratio():
    rf = get_formulation("rf")
    t = torch.linspace(0.01, 0.99, 50, dtype=F64)
    alpha = shift_for_resolution((1024, 1024), (256, 256))
    # lambda_m = lambda_n - log(m / n), m / n = alpha^2.
    torch.testing.assert_close(rf.log_snr(shift_timesteps(t, alpha)), rf.log_snr(t) - math.log(16.0))


def test_shift_for_resolution_is_sqrt_of_pixel_ratio():
    assert shift_for_resolution((1024, 1024), (256, 256)) == 4.0
    assert shift_for_resolution(1024 * 1024, 256 * 256) == 4.0
    assert shift_for_resolution((1024, 1024)) == 4.0  # base defaults to 256^2
    assert shift_for_resolution((512, 512)) == 2.0
    assert shift_for_resolution((768, 1344)) == pytest.approx(math.sqrt(768 * 1344 / 256**2))
    assert shift_for_resolution((256, 256)) == 1.0
    with pytest.raises(ValueError):
        shift_for_resolution(0)


def test_sampling_grid_runs_from_noise_to_data_and_is_shifted():
    grid = sampling_timesteps(28, shift=3.0)
    assert grid.shape == (29,) and grid[0].item() == 1.0 and grid[-1].item() == 0.0
    assert (grid.diff() < 0).all()
    torch.testing.assert_close(grid, shift_timesteps(torch.linspace(1, 0, 29, dtype=F64), 3.0))
    with pytest.raises(ValueError):
        sampling_timesteps(0)


class GaussianData:
    """x0 ~ N(mu, diag(s^2)): every formulation's optimal prediction and exact ODE solution are closed-form."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mu = 0.5 * torch.randn(dim, generator=g, dtype=F64)
        self.s = 0.2 + 0.8 * torch.rand(dim, generator=g, dtype=F64)

    def model_fn(self, f):
        def predict(z, t):
            a, b = f.a(t)[:, None], f.b(t)[:, None]
            var = a**2 * self.s**2 + b**2
            centred = z - a * self.mu
            x0_mean = self.mu + a * self.s**2 / var * centred  # E[x0 | z_t]
            eps_mean = b / var * centred  # E[eps | z_t]
            c_x, c_e = f.prediction_coefficients(t)
            return c_x[:, None] * x0_mean + c_e[:, None] * eps_mean
        return predict

    def exact_endpoint(self, f, noise):
        """z_0 of the probability-flow ODE through z_1 = noise: z_t = a_t mu + sqrt(var_t) xi."""
        one, zero = torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64)
        std = lambda t: torch.sqrt(f.a(t) ** 2 * self.s**2 + f.b(t) ** 2)  # noqa: E731
        xi = (noise - f.a(one) * self.mu) / std(one)
        return f.a(zero) * self.mu + std(zero) * xi


def _euler_errors(f, data, noise, steps_list, shift=1.0):
    exact = data.exact_endpoint(f, noise)
    return [(euler_sample(data.model_fn(f), noise, n, formulation=f, shift=shift) - exact).abs().max().item()
            for n in steps_list]


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_rf_euler_converges_at_first_order_to_the_exact_sample(shift):
    data = GaussianData()
    noise = torch.randn(64, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    rf = get_formulation("rf")
    # For rf the exact endpoint is mu + s * noise.
    torch.testing.assert_close(data.exact_endpoint(rf, noise), data.mu + data.s * noise)
    errors = _euler_errors(rf, data, noise, [8, 16, 32, 64, 128], shift=shift)
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors
    for e1, e2 in zip(errors, errors[1:]):
        assert 1.7 < e1 / e2 < 2.3, errors  # halving the step halves the error
    assert errors[-1] < 0.05


@pytest.mark.parametrize("name", [n for n in FORMULATIONS if n != "rf"])
def test_every_formulation_drives_the_same_euler_sampler(name):
    data = GaussianData(seed=2)
    noise = torch.randn(32, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    errors = _euler_errors(get_formulation(name), data, noise, [8, 32, 256])
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05, errors


def test_euler_with_a_constant_velocity_is_exact():
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    v = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    out = euler_sample(lambda z, t: v.expand_as(z), noise, 7, shift=3.0)
    # From t = 1 to t = 0: x = noise - v, whatever the grid.
    torch.testing.assert_close(out, noise - v)
    assert out.dtype == torch.float32


class RecordingModel:
    """v(z, t, y) = scale z + y: depends on the state and the condition; every call is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Size, torch.Tensor]] = []

    def __call__(self, z, t, *, y, scale):
        self.calls.append((z.shape, y.clone()))
        return scale * z + y[:, :, None]


def test_cfg_is_one_batched_call_combining_cond_and_uncond():
    noise = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(6), dtype=F64)
    y_cond = torch.tensor([[1.0, 2.0]] * 3, dtype=F64)
    y_uncond = torch.zeros(3, 2, dtype=F64)
    model = RecordingModel()
    out = euler_sample(model, noise, 1, cfg=4.0, cond={"y": y_cond, "scale": 0.5}, uncond={"y": y_uncond, "scale": 0.5})
    assert len(model.calls) == 1
    shape, y_seen = model.calls[0]
    assert shape == (6, 2, 5)
    assert torch.equal(y_seen, torch.cat([y_cond, y_uncond]))
    # One step from t = 1 to 0: x = noise - (v_u + cfg (v_c - v_u)).
    v_cond, v_uncond = 0.5 * noise + y_cond[:, :, None], 0.5 * noise + y_uncond[:, :, None]
    torch.testing.assert_close(out, noise - (v_uncond + 4.0 * (v_cond - v_uncond)))


def test_cfg_one_runs_the_conditional_batch_only():
    noise = torch.randn(3, 2, 5, dtype=F64)
    y_cond = torch.ones(3, 2, dtype=F64)
    model = RecordingModel()
    out = euler_sample(model, noise, 2, cond={"y": y_cond, "scale": 0.0})
    assert [shape for shape, _ in model.calls] == [(3, 2, 5)] * 2
    torch.testing.assert_close(out, noise - 1.0)


def test_cfg_needs_matching_uncond():
    noise = torch.randn(2, 2, 5, dtype=F64)
    cond = {"y": torch.ones(2, 2, dtype=F64), "scale": 0.5}
    with pytest.raises(ValueError, match="uncond"):
        euler_sample(RecordingModel(), noise, 2, cfg=2.0, cond=cond)
    with pytest.raises(ValueError, match="scale"):
        euler_sample(RecordingModel(), noise, 2, cfg=2.0, cond=cond, uncond={**cond, "scale": 0.1})
