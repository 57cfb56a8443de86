"""The trainer's log: each train record says how long the run has left, and a message printed
while the progress bar is shown leaves the bar whole."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tqdm import tqdm

from mmdit_scale.run.eta import duration_text
from mmdit_scale.train.metrics import Metrics
from mmdit_scale.train.step import T_BINS, StepResult

SAMPLES = 8
"""Samples per step."""


@pytest.fixture
def one_rank():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _step(loss: float) -> StepResult:
    bins = torch.zeros(T_BINS, dtype=torch.float64)
    return StepResult(applied=True, loss_sum=torch.tensor(loss * SAMPLES, dtype=torch.float64), bin_sum=bins,
                      bin_count=bins, samples=SAMPLES, tokens=100 * SAMPLES, flops=1e9, grad_norm=0.5,
                      nonfinite_keys=[])


def test_every_train_record_and_line_carries_the_time_left(one_rank, tmp_path: Path, capsys) -> None:
    """A resumed run (from step 10, to 110) logging every 4 steps: steps left x the interval's seconds per step."""
    metrics = Metrics(tmp_path, every=4, tensorboard=False, start_step=10, total_steps=110,
                      device=torch.device("cpu"), peak_flops=None)
    for step in range(11, 19):
        metrics.add(_step(0.5), skipped_total=0)
        if metrics.due(step):
            metrics.log_train(step, lr=1e-3)
    metrics.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [12, 16]
    for record, steps in zip(records, (2, 4)):  # the first interval runs from the resumed step 10
        seconds_per_step = SAMPLES * steps / record["samples_per_s"] / steps  # the interval's own clock
        assert record["eta_s"] == pytest.approx((110 - record["step"]) * seconds_per_step)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2
    assert all(line.endswith(f" | ETA {duration_text(r['eta_s'])}") for line, r in zip(printed, records))


def test_a_message_while_the_bar_is_shown_clears_the_bar_and_draws_it_again(capsys) -> None:
    """What the trainer's checkpoint and resume lines go through (Trainer._say)."""
    bar = tqdm(total=10, file=sys.stderr, ascii=True, ncols=40)
    bar.update(3)
    bar.refresh()
    drawn = capsys.readouterr().err.split("\r")[-1]
    Metrics.console("checkpoint runs/x/checkpoints/step_0000003")
    out, err = capsys.readouterr()
    bar.close()
    assert out == "checkpoint runs/x/checkpoints/step_0000003\n"
    wiped, redrawn = f"\r{' ' * len(drawn)}\r", err.split("\r")[-1]
    assert err.startswith(wiped) and "3/10" in drawn and "3/10" in redrawn  # wiped before the line, then drawn again
