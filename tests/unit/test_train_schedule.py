"""Learning rate at every step: linear warm-up, then constant / cosine / linear to min_lr."""
import math

import pytest
import torch

from mmdit_scale.config import load_config
from mmdit_scale.train.schedule import lr_factor, make_scheduler


def optim(*overrides):
    return load_config("recipes/tiny.yaml", list(overrides)).optim


def test_warmup_then_constant_exact_factors():
    o = optim("optim.warmup_steps=4", "optim.schedule=constant")
    assert [lr_factor(k, o, 10) for k in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_no_warmup_starts_at_full_rate():
    o = optim("optim.warmup_steps=0")
    assert lr_factor(0, o, 10) == 1.0


def test_cosine_reaches_min_lr_at_the_last_step():
    o = optim("optim.lr=1e-3", "optim.min_lr=1e-4", "optim.warmup_steps=2", "optim.schedule=cosine")
    r = 0.1
    assert lr_factor(1, o, 12) == 1.0  # last warm-up update at the full rate
    assert lr_factor(2, o, 12) == 1.0  # cosine starts at the top
    assert lr_factor(7, o, 12) == pytest.approx(r + (1 - r) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(12, o, 12) == pytest.approx(r)
    assert lr_factor(50, o, 12) == pytest.approx(r)  # held past train.steps


def test_linear_decay():
    o = optim("optim.lr=1e-3", "optim.min_lr=0.0", "optim.warmup_steps=0", "optim.schedule=linear")
    assert [lr_factor(k, o, 4) for k in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_scheduler_drives_the_optimizer_lr_step_by_step():
    o = optim("optim.lr=1e-3", "optim.warmup_steps=3", "optim.schedule=cosine", "optim.min_lr=0.0")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=o.lr)
    sched = make_scheduler(opt, o, total_steps=9)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])  # the lr the next update uses
        opt.step()
        sched.step()
    assert seen == pytest.approx([o.lr * lr_factor(k, o, 9) for k in range(10)])
    assert seen[:4] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
