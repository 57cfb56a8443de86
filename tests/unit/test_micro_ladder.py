"""benchmarks/micro_ladder.py's rungs, resolved without training (`--dry-run`)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def ladder():
    from benchmarks import micro_ladder

    return micro_ladder


def dry_run(ladder, capsys, *argv: str) -> list[dict]:
    assert ladder.main(["--dry-run", "--workdir", "/nonexistent/ml", *argv]) == 0
    return json.loads(capsys.readouterr().out)["rungs"]


def test_rungs_follow_one_width_rule_on_the_same_samples(ladder, capsys) -> None:
    rungs = dry_run(ladder, capsys)
    assert [(r["depth"], r["width"], r["heads"]) for r in rungs] == [(d, 32 * d, d) for d in (1, 2, 3, 4)]
    assert {(r["samples"], r["steps"], r["eval_every"]) for r in rungs} == {(4096, 128, 16)}
    assert [r["params"] for r in rungs] == sorted({r["params"] for r in rungs})
    assert "data.train=/nonexistent/ml/shards/train" in rungs[0]["overrides"]


def test_ranks_split_the_global_batch_and_overrides_reach_every_rung(ladder, capsys) -> None:
    rungs = dry_run(ladder, capsys, "--depths", "2", "3", "4", "6", "--samples", "2048", "--nproc", "2",
                    "--evals", "4", "optim.lr=5e-4")
    assert [r["width"] for r in rungs] == [64, 96, 128, 192]
    for r in rungs:
        assert {"train.micro_batch=16", "train.steps=64", "eval.every=16", "optim.lr=5e-4"} <= set(r["overrides"])


@pytest.mark.parametrize("argv", [["--depths", "1", "2", "3"], ["--samples", "1000"], ["model.depthh=3"]])
def test_bad_ladders_stop_before_anything_runs(ladder, argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        ladder.main(["--dry-run", *argv])
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err
