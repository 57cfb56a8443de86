"""Training-timestep samplers: draws follow their analytic CDFs, pdf = cdf', draws stay inside (0, 1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmdit_scale.flow import get_timestep_sampler

N_DRAWS = 20_000
CASES = [
    ("uniform", {}),
    ("lognorm", {"m": 0.0, "s": 1.0}),
    ("lognorm", {"m": 0.5, "s": 0.6}),
    ("mode", {}),
    ("mode", {"s": 1.75}),
    ("mode", {"s": -0.8}),
    ("cosmap", {}),
]
IDS = [f"{name}{tuple(options.values())}" for name, options in CASES]


def _draws(name: str, options: dict, seed: int = 0) -> torch.Tensor:
    return get_timestep_sampler(name, **options).sample(N_DRAWS, generator=torch.Generator().manual_seed(seed))


def _cdf_fn(sampler):
    return lambda x: sampler.cdf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_draws_follow_the_analytic_cdf(name, options):
    t = _draws(name, options)
    assert t.shape == (N_DRAWS,) and t.dtype == torch.float32
    assert (t > 0).all() and (t < 1).all()
    result = stats.kstest(t.double().numpy(), _cdf_fn(get_timestep_sampler(name, **options)))
    assert result.pvalue > 1e-3, result


@pytest.mark.parametrize(
    ("drawn", "claimed"),
    [
        (("lognorm", {"m": 0.0, "s": 1.0}), ("lognorm", {"m": 0.15, "s": 1.0})),
        (("lognorm", {"m": 0.0, "s": 1.0}), ("lognorm", {"m": 0.0, "s": 1.1})),
        (("mode", {"s": 1.29}), ("mode", {"s": 1.1})),
        (("cosmap", {}), ("uniform", {})),
        (("uniform", {}), ("mode", {"s": 0.2})),
    ],
)
def test_wrong_cdf_is_rejected(drawn, claimed):
    t = _draws(*drawn)
    result = stats.kstest(t.double().numpy(), _cdf_fn(get_timestep_sampler(claimed[0], **claimed[1])))
    assert result.pvalue < 1e-6, result


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_pdf_is_the_derivative_of_the_cdf_and_integrates_to_one(name, options):
    sampler = get_timestep_sampler(name, **options)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-7  # small: mode(1.75)'s density peaks at about 900 over a width of about 2e-5
    numeric = (sampler.cdf(t + h) - sampler.cdf(t - h)) / (2 * h)
    torch.testing.assert_close(sampler.pdf(t), numeric, rtol=1e-4, atol=1e-6)
    fine = torch.linspace(1e-7, 1 - 1e-7, 200_001, dtype=torch.float64)
    assert torch.trapezoid(sampler.pdf(fine), fine).item() == pytest.approx(1.0, abs=1e-3)
    assert sampler.cdf(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == pytest.approx([0.0, 1.0])


def test_densities_match_the_paper():
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    logit = torch.log(t / (1 - t)).numpy()
    lognorm = get_timestep_sampler("lognorm", m=0.3, s=0.8)
    expected = stats.norm.pdf(logit, loc=0.3, scale=0.8) / (t * (1 - t)).numpy()
    np.testing.assert_allclose(lognorm.pdf(t).numpy(), expected, rtol=1e-10)
    cosmap = get_timestep_sampler("cosmap")
    torch.testing.assert_close(cosmap.pdf(t), 2 / (math.pi - 2 * math.pi * t + 2 * math.pi * t**2))
    # mode(s = 0) is f(u) = 1 - u: uniform.
    torch.testing.assert_close(get_timestep_sampler("mode", s=0.0).cdf(t), t)


def test_mode_draws_are_the_paper_map_of_uniform_draws():
    u = torch.rand(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = 1.29
    expected = 1 - u - s * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    t = get_timestep_sampler("mode", s=s).sample(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(t, expected.float())


def test_draws_are_reproducible_and_never_hit_the_endpoints():
    sampler = get_timestep_sampler("lognorm", m=0.0, s=1.0)
    a = sampler.sample(64, generator=torch.Generator().manual_seed(5), device="cpu")
    b = sampler.sample(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # s = 60 saturates the sigmoid to exactly 0.0 and 1.0 in float64; the draws must still lie inside.
    extreme = get_timestep_sampler("lognorm", m=0.0, s=60.0).sample(4096, generator=torch.Generator().manual_seed(0))
    assert (extreme > 0).all() and (extreme < 1).all()
    assert extreme.min().item() == 2.0**-24 and extreme.max().item() == 1 - 2.0**-24


def test_invalid_options_and_names():
    with pytest.raises(ValueError, match="monotone"):
        get_timestep_sampler("mode", s=1.8)
    with pytest.raises(ValueError, match="monotone"):
        get_timestep_sampler("mode", s=-1.01)
    with pytest.raises(ValueError, match="s > 0"):
        get_timestep_sampler("lognorm", s=0.0)
    with pytest.raises(ValueError, match="did you mean 'lognorm'"):
        get_timestep_sampler("lognormal")
