"""Closed forms of the flow formulations, the unified objective and the validation loss."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from scipy import stats

from mmdit_scale.flow import (
    FORMULATIONS,
    TIMESTEP_SAMPLERS,
    VALIDATION_TIMESTEPS,
    get_formulation,
    validation_loss,
)
from mmdit_scale.flow.formulation import expand_like
from mmdit_scale.flow.registry import FORMULATION_REGISTRY
from mmdit_scale.flow.timestep_samplers import TIMESTEP_SAMPLER_REGISTRY

F64 = torch.float64
# Interior t; for eps_linear off its 1000-point grid, where its interpolated schedule is differentiable.
T_INTERIOR = torch.tensor([0.0123, 0.1, 0.2504, 0.5, 0.6137, 0.9, 0.985], dtype=F64)


def _batch(n: int = 7, shape: tuple[int, ...] = (3, 4, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=F64), torch.randn(n, *shape, generator=g, dtype=F64)


def _autograd(fn, t: torch.Tensor) -> torch.Tensor:
    t = t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(t).sum(), t)
    return grad


def test_names_equal_registry_keys():
    assert FORMULATIONS == tuple(FORMULATION_REGISTRY)
    assert TIMESTEP_SAMPLERS == tuple(TIMESTEP_SAMPLER_REGISTRY)


def test_package_and_names_import_without_torch():
    code = (
        "import sys; import mmdit_scale.flow as f; from mmdit_scale.flow.names import FORMULATIONS; "
        "assert f.FORMULATIONS == FORMULATIONS; assert 'torch' not in sys.modules, 'torch imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rf_endpoints_and_velocity_sign():
    rf = get_formulation("rf")
    x0, eps = _batch()
    n = x0.shape[0]
    assert torch.equal(rf.add_noise(x0, eps, torch.zeros(n, dtype=F64)), x0)
    assert torch.equal(rf.add_noise(x0, eps, torch.ones(n, dtype=F64)), eps)
    t = torch.full((n,), 0.3, dtype=F64)
    target = rf.target(x0, eps, t)
    torch.testing.assert_close(target, eps - x0)
    # The target is dz_t/dt (towards noise as t grows), checked by a finite difference of the path.
    h = 1e-6
    dz_dt = (rf.add_noise(x0, eps, t + h) - rf.add_noise(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(dz_dt, target)
    assert torch.equal(rf.velocity(rf.add_noise(x0, eps, t), target, t), target)


@pytest.mark.parametrize("name", ["rf", "v_cos", "eps_cos", "edm"])
def test_schedule_reaches_data_and_pure_noise(name):
    f = get_formulation(name)
    x0, eps = _batch()
    n = x0.shape[0]
    torch.testing.assert_close(f.add_noise(x0, eps, torch.zeros(n, dtype=F64)), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(f.add_noise(x0, eps, torch.ones(n, dtype=F64)), eps, rtol=0, atol=1e-12)
    # float32 too: a_t must be exactly 0 at t=1, not cos(float32(pi/2)) = -4e-8.
    assert f.a(torch.ones(1)).item() == 0.0 and f.b(torch.zeros(1)).item() == 0.0


def test_eps_linear_matches_diffusers_scaled_linear_schedule():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    f = get_formulation("eps_linear")
    grid = torch.arange(1000, dtype=F64) / 999
    torch.testing.assert_close(f.a(grid) ** 2, ref.alphas_cumprod.to(F64), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(f.a(grid) ** 2 + f.b(grid) ** 2, torch.ones(1000, dtype=F64))
    assert f.a(torch.ones(1, dtype=F64)).item() == pytest.approx(0.0683, abs=1e-4)  # never pure noise


def _paper_weight(name: str, f, t: torch.Tensor) -> torch.Tensor:
    """w_t as the SD3 paper writes it, computed from lambda_t = log(a^2 / b^2) independently."""
    lam = torch.log(f.a(t) ** 2 / f.b(t) ** 2)
    if name == "rf":
        return t / (1 - t)
    if name == "v_cos":
        return torch.exp(-lam / 2)
    if name == "eps_cos":
        return 2 / (torch.exp(lam / 2) + torch.exp(-lam / 2))
    if name == "edm":
        density = stats.norm.pdf(lam.numpy(), loc=-2 * f.p_mean, scale=2 * f.p_std)
        return torch.from_numpy(density) * (torch.exp(-lam) + 0.5**2)
    if name == "eps_linear":  # LDM's plain eps-MSE: -1/2 w lambda' = 1
        return -2 / _autograd(lambda s: torch.log(f.a(s) ** 2 / f.b(s) ** 2), t)
    raise AssertionError(name)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_weight_matches_paper_formula(name):
    f = get_formulation(name)
    torch.testing.assert_close(f.weight(T_INTERIOR), _paper_weight(name, f, T_INTERIOR), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_log_snr_and_derivatives_match_autograd(name):
    f = get_formulation(name)
    t = T_INTERIOR
    torch.testing.assert_close(f.log_snr(t), torch.log(f.a(t) ** 2 / f.b(t) ** 2), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f.d_log_snr(t), _autograd(lambda s: torch.log(f.a(s) ** 2 / f.b(s) ** 2), t))
    torch.testing.assert_close(f.da(t), _autograd(f.a, t))
    torch.testing.assert_close(f.db(t), _autograd(f.b, t))
    assert (f.d_log_snr(t) < 0).all()


def test_paper_special_cases_of_the_weights():
    t = T_INTERIOR
    cos_v, cos_eps = get_formulation("v_cos"), get_formulation("eps_cos")
    torch.testing.assert_close(cos_v.weight(t), torch.tan(math.pi * t / 2))
    torch.testing.assert_close(cos_eps.weight(t), torch.sin(math.pi * t))  # sech(lambda/2) = 2 a b
    rf = get_formulation("rf")
    torch.testing.assert_close(rf.weight(t), -0.5 * rf.d_log_snr(t) * rf.b(t) ** 2)  # w^RF = L_CFM's weight


@pytest.mark.parametrize("name", FORMULATIONS)
def test_loss_scale_is_the_unified_objective(name):
    f = get_formulation(name)
    expected = {"rf": 1.0, "eps_linear": 1.0, "v_cos": math.pi / 2, "eps_cos": math.pi, "edm": 0.5**2 / 2}
    assert f.loss_scale == pytest.approx(expected[name])
    torch.testing.assert_close(f.unified_loss_scale(T_INTERIOR), torch.full_like(T_INTERIOR, f.loss_scale))


def _random_model(seed: int):
    def model_fn(z, t, **_):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(z.shape, generator=g, dtype=z.dtype) + 0.1 * z
    return model_fn


def test_rf_loss_is_exactly_velocity_mse():
    rf = get_formulation("rf")
    x0, eps = _batch()
    t = T_INTERIOR
    model_fn = _random_model(1)
    out = rf.training_losses(model_fn, x0, t, eps)
    z = rf.add_noise(x0, eps, t)
    v_hat = model_fn(z, t)
    torch.testing.assert_close(out.loss, (v_hat - (eps - x0)).square().flatten(1).mean(1), rtol=1e-12, atol=0)
    # The same number through the paper's eps form: eps_hat = z + (1 - t) v_hat, weight -1/2 w lambda'.
    eps_hat = z + expand_like(1 - t, z) * v_hat
    unified = -0.5 * rf.weight(t) * rf.d_log_snr(t) * (eps_hat - eps).square().flatten(1).mean(1)
    torch.testing.assert_close(out.loss, unified, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_training_loss_equals_unified_objective(name):
    f = get_formulation(name, discrete=False) if name == "eps_linear" else get_formulation(name)
    x0, eps = _batch(seed=3)
    out = f.training_losses(_random_model(2), x0, T_INTERIOR, eps)
    z = f.add_noise(x0, eps, T_INTERIOR)
    _, eps_hat = f.split_prediction(z, _random_model(2)(z, T_INTERIOR), T_INTERIOR)
    unified = -0.5 * f.weight(T_INTERIOR) * f.d_log_snr(T_INTERIOR) * (eps_hat - eps).square().flatten(1).mean(1)
    torch.testing.assert_close(out.loss, unified, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_perfect_prediction_recovers_x0_eps_and_path_velocity(name):
    f = get_formulation(name)
    x0, eps = _batch(seed=4)
    t = T_INTERIOR
    z = f.add_noise(x0, eps, t)
    pred = f.target(x0, eps, t)
    x0_hat, eps_hat = f.split_prediction(z, pred, t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    h = 1e-6
    dz_dt = (f.add_noise(x0, eps, t + h) - f.add_noise(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(f.velocity(z, pred, t), dz_dt, rtol=1e-5, atol=1e-6)
    assert f.training_losses(lambda z_, t_: f.target(x0, eps, t_), x0, t, eps).loss.abs().max() < 1e-20


def test_training_losses_contract():
    rf = get_formulation("rf")
    x0, eps = _batch(n=5)
    seen = {}

    def model_fn(z, t, *, context):
        seen.update(z=z, t=t, context=context)
        return torch.zeros_like(z)

    t = torch.rand(5, dtype=F64)
    out = rf.training_losses(model_fn, x0, t, eps, context="ctx")
    assert out.loss.shape == (5,) and out.t.shape == (5,)
    assert torch.equal(out.t, t) and torch.equal(seen["t"], t) and seen["context"] == "ctx"
    torch.testing.assert_close(seen["z"], rf.add_noise(x0, eps, t))
    torch.testing.assert_close(out.loss, (eps - x0).square().flatten(1).mean(1))
    with pytest.raises(ValueError, match="shape"):
        rf.training_losses(lambda z, t: z[:, :1], x0, t, eps)


def test_eps_linear_quantises_training_time_to_its_grid():
    f = get_formulation("eps_linear")
    t = torch.tensor([0.0, 0.0009, 0.001, 0.5, 0.9995, 1.0])
    torch.testing.assert_close(f.training_time(t), torch.tensor([0, 0, 1, 500, 999, 999]) / 999)
    # Uniform t gives every index the same probability: bin i is [i / 1000, (i + 1) / 1000).
    even = (torch.arange(100_000, dtype=F64) + 0.5) / 100_000
    counts = torch.bincount((f.training_time(even) * 999).round().long(), minlength=1000)
    assert counts.tolist() == [100] * 1000
    assert torch.equal(get_formulation("eps_linear", discrete=False).training_time(t), t)


def test_endpoint_clamps_keep_everything_finite():
    assert get_formulation("rf").t_min == 0.0 and get_formulation("rf").t_max == 1.0
    assert get_formulation("eps_cos").t_max == pytest.approx(1 - 1e-3)
    edm = get_formulation("edm", t_eps=1e-4)
    torch.testing.assert_close(edm.model_time(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([1e-4, 0.5, 1 - 1e-4]))
    x0, eps = _batch(n=2, seed=5)
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    for name in FORMULATIONS:
        f = get_formulation(name)
        loss = f.training_losses(_random_model(6), x0, ends, eps)
        t = f.model_time(ends)
        v = f.velocity(f.add_noise(x0, eps, t), _random_model(6)(x0, t), t)
        assert torch.isfinite(loss.loss).all() and torch.isfinite(v).all(), name


def test_get_formulation_options_and_errors():
    edm = get_formulation("edm", p_mean=-0.5, p_std=1.0)
    # lambda_t ~ N(-2 P_m, (2 P_s)^2) under uniform t: the median t = 1/2 maps to lambda = -2 P_m.
    assert edm.log_snr(torch.tensor([0.5], dtype=F64)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="did you mean 'edm'"):
        get_formulation("edn")
    with pytest.raises(ValueError):
        get_formulation("eps_linear", beta_start=0.02, beta_end=0.01)


def test_validation_timesteps_and_determinism():
    assert VALIDATION_TIMESTEPS == pytest.approx([1 / 16, 3 / 16, 5 / 16, 7 / 16, 9 / 16, 11 / 16, 13 / 16, 15 / 16])
    rf = get_formulation("rf")
    x0, _ = _batch(n=4, seed=7)
    x0 = x0.float()
    zero_model = lambda z, t: torch.zeros_like(z)  # noqa: E731
    mean, per_t = validation_loss(rf, zero_model, x0, 123)
    # A zero velocity costs E||eps - x0||^2 at every t, with the seed's fixed noise.
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(123))
    expected = (eps - x0).square().mean()
    assert per_t.shape == (8,)
    torch.testing.assert_close(per_t, expected.expand(8), rtol=1e-5, atol=0)
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=0)
    assert torch.equal(validation_loss(rf, zero_model, x0, 123).per_t, per_t)
    assert not torch.allclose(validation_loss(rf, zero_model, x0, 124).mean, mean)


def test_validation_loss_is_training_loss_at_each_fixed_t():
    f = get_formulation("v_cos")
    x0, eps = _batch(n=3, seed=8)
    model_fn = _random_model(9)
    result = validation_loss(f, model_fn, x0, eps)
    for i, t in enumerate(VALIDATION_TIMESTEPS):
        direct = f.training_losses(model_fn, x0, torch.full((3,), t), eps).loss.mean()
        torch.testing.assert_close(result.per_t[i], direct)
    torch.testing.assert_close(result.mean, result.per_t.mean())


@pytest.mark.parametrize("name", ["rf", "eps_linear", "v_cos"])
def test_contrastive_flow_matching_subtracts_lambda_times_the_error_against_another_samples_target(name):
    from mmdit_scale.flow import get_formulation

    flow = get_formulation(name)
    g = torch.Generator().manual_seed(3)
    x0, noise, t = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g), torch.rand(4, generator=g)
    pred = torch.randn(4, 2, 3, generator=g)
    model = lambda z, tt: pred  # noqa: E731 -- a fixed prediction makes the closed form checkable
    plain = flow.training_losses(model, x0, t, noise)
    assert torch.equal(flow.training_losses(model, x0, t, noise, 0.0).loss, plain.loss)  # lambda 0: today
    tt = plain.t
    target, negative = flow.target(x0, noise, tt), flow.target(x0.roll(1, 0), noise.roll(1, 0), tt)
    mse = lambda a, b: (a - b).square().flatten(1).mean(1)  # noqa: E731
    expected = flow.loss_scale * (mse(pred, target) - 0.05 * mse(pred, negative))
    torch.testing.assert_close(flow.training_losses(model, x0, t, noise, 0.05).loss, expected)
    first = lambda z, tt: pred[:1]  # noqa: E731
    one = flow.training_losses(first, x0[:1], t[:1], noise[:1], 0.05).loss        # no negative in a batch of 1
    torch.testing.assert_close(one, flow.training_losses(first, x0[:1], t[:1], noise[:1]).loss)
