"""`mmdit-scale plan`: the JSON contract, the nothing-fits answer, batch/time/data numbers, the docs table."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from launcher import cli
from mmdit_scale.plan.memory import GIB

REPO = Path(__file__).resolve().parents[2]
LADDER = [f"recipes/ladder/d{d}.yaml" for d in (15, 18, 21, 24, 30, 38)]


def plan(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def d24_json() -> dict:
    """d24 (with QK-norm, as the ladder trains it) on 64 80-GB GPUs."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(["plan", "recipes/ladder/d24.yaml", "--gpus", "64", "--json"]) == 0
    return json.loads(buffer.getvalue())


def test_json_has_the_contract_keys(d24_json: dict) -> None:
    stages = {"zero1", "zero2", "zero3"}
    assert d24_json["params"] == 2_028_328_000 + 24 * 2 * 2 * 64  # + QK-norm scales
    assert d24_json["flops_per_sample"] == pytest.approx(1.734e12, rel=1e-3)
    assert set(d24_json["memory_per_gpu_gb"]) == set(d24_json["fits_by_stage"]) == stages
    assert d24_json["fits"] is True and all(d24_json["fits_by_stage"].values())
    assert d24_json["suggestions"] == []


def test_json_memory_is_the_zero_formulas_plus_activations_and_buffers(d24_json: dict) -> None:
    psi, n = d24_json["params"], 64
    parts = d24_json["memory_breakdown_gb"]
    formulas = {"zero1": 4 * psi + 12 * psi / n, "zero2": 2 * psi + 14 * psi / n, "zero3": 16 * psi / n}
    for stage, states in formulas.items():
        got = parts[stage]
        assert (got["weights"] + got["gradients"] + got["optimizer"]) * GIB == pytest.approx(states, rel=1e-9)
        assert got["total"] == pytest.approx(d24_json["memory_per_gpu_gb"][stage])
        assert got["activations"] == pytest.approx(d24_json["activations_gb"]["stored"])


def test_json_batch_time_and_data(d24_json: dict) -> None:
    assert (d24_json["grad_accum"], d24_json["samples_per_step"]) == (2, 4096)  # 4096 = 32 x 64 x 2
    step = 4096 * d24_json["flops_per_sample"] / (64 * 989.4e12 * 0.4)
    assert d24_json["step_seconds"] == pytest.approx(step)
    assert d24_json["total_days"] == pytest.approx(500_000 * step / 86400)
    # Two caption variants of CLIP-L/G + T5 hidden states and pooled vectors, a 16x32x32 latent, bf16.
    text = 2 * (77 * (4096 + 2048) + 2048) * 2
    assert d24_json["bytes_per_sample"] == text + 16 * 32 * 32 * 2 + 3 * 1024
    assert d24_json["total_bytes"] == 500_000 * 4096 * d24_json["bytes_per_sample"]


@pytest.mark.parametrize("micro, gpus, expected", [
    (64, 8, {"activation", "micro-batch"}),  # activations are the problem
    (8, 1, {"gpus"}),  # d38's 16 bytes per parameter do not fit one card whatever the batch
])
def test_nothing_fits_exits_nonzero_with_one_json_object_and_what_would_fit(capsys, micro, gpus, expected) -> None:
    args = ("recipes/ladder/d38.yaml", f"train.micro_batch={micro}")
    code, out, _ = plan(capsys, *args, "--gpus", str(gpus), "--json")
    assert code == 1
    report = json.loads(out)  # the whole of stdout is one object
    assert report["fits"] is False and not any(report["fits_by_stage"].values())
    kinds = {"gpus" if s["overrides"][-1].startswith("--gpus") else s["change"].split(" ")[0]
             for s in report["suggestions"]}
    assert kinds == expected
    for suggestion in report["suggestions"]:
        assert suggestion["memory_per_gpu_gb"] <= 0.9 * 80
        flags = [o.split()[1] for o in suggestion["overrides"] if o.startswith("--gpus")]
        overrides = [o for o in suggestion["overrides"] if not o.startswith("--")]
        code, out, _ = plan(capsys, *args, *overrides, "--gpus", flags[0] if flags else str(gpus), "--json")
        assert code == 0 and json.loads(out)["fits_by_stage"][f"zero{suggestion['zero_stage']}"], suggestion
        if flags:  # the fewest: one GPU fewer (one 8-GPU node fewer past a node) does not fit
            fewer = int(flags[0]) - (1 if int(flags[0]) <= 8 else 8)
            code, _, _ = plan(capsys, *args, "--gpus", str(fewer), "--json")
            assert code == 1


def test_human_report_says_what_would_fit(capsys) -> None:
    code, out, _ = plan(capsys, "recipes/ladder/d38.yaml", "train.micro_batch=64", "--gpus", "8")
    assert code == 1
    assert "nothing fits." in out and "parallel.activation_checkpointing=1" in out
    assert "8,056,627,520" in out


def test_suggested_checkpointing_is_the_least_that_fits(capsys) -> None:
    """d38 at micro-batch 32 on 8 GPUs fits with a few of its 38 blocks checkpointed: plan names that
    interval, and no interval that checkpoints fewer blocks fits at any ZeRO stage."""
    args = ("recipes/ladder/d38.yaml", "train.micro_batch=32")
    code, out, _ = plan(capsys, *args, "--gpus", "8", "--json")
    assert code == 1
    [suggestion] = [s for s in json.loads(out)["suggestions"] if s["change"].startswith("activation")]
    [override] = [o for o in suggestion["overrides"] if o.startswith("parallel.activation_checkpointing=")]
    every = int(override.rpartition("=")[2])
    blocks = len(range(0, 38, every))
    assert 1 < every < 38 and f"({blocks} of 38 blocks, " in suggestion["change"]
    code, out, _ = plan(capsys, *args, override, "--gpus", "8", "--json")
    assert code == 0 and json.loads(out)["checkpointed_blocks"] == blocks
    for fewer in range(every + 1, 39):
        code, out, _ = plan(capsys, *args, f"parallel.activation_checkpointing={fewer}", "--gpus", "8", "--json")
        assert code == 1, fewer


def test_recipe_policy_memory_and_recompute_in_json_and_text(capsys) -> None:
    args = ("recipes/ladder/d24.yaml", "parallel.activation_checkpointing=2", "--gpus", "64")
    code, out, _ = plan(capsys, *args, "--json")
    report = json.loads(out)
    assert code == 0 and report["activation_checkpointing"] == 2 and report["checkpointed_blocks"] == 12
    activations = report["activations_gb"]
    assert activations["stored"] > activations["recipe"] > activations["checkpointed"]
    assert report["memory_breakdown_gb"]["zero2"]["activations"] == pytest.approx(activations["recipe"])
    # Blocks 0, 2, ..., 22: half of the 23 full blocks (the pre-only last block is cheaper), about 1/6
    # of the training FLOPs (the forward is a third of them, and nearly all of it is blocks).
    assert report["recompute_flops_per_sample"] == pytest.approx(report["flops_per_sample"] / 6, rel=0.03)
    code, out, _ = plan(capsys, *args)
    assert "activation checkpointing every 2nd block" in out.splitlines()[0]
    assert "every 2nd block (recipe)    12/24 " in out


def test_recipe_stage_that_does_not_fit_points_to_one_that_does(capsys) -> None:
    code, out, _ = plan(capsys, "recipes/ladder/d38.yaml", "parallel.zero_stage=1", "--gpus", "4")
    assert code == 0
    assert "ZeRO-1 does not fit." in out and "ZeRO-2: " in out and "(parallel.zero_stage=2)" in out


def test_bad_recipe_gives_exit_2_and_a_json_error(capsys) -> None:
    code, out, err = plan(capsys, "recipes/ladder/d24.yaml", "train.micro_bach=4", "--gpus", "8", "--json")
    assert code == 2 and "micro_batch" in err
    assert "micro_batch" in json.loads(out)["error"]


def test_docs_ladder_tables_are_what_plan_prints(capsys) -> None:
    docs = (REPO / "docs" / "recipes.md").read_text()
    code, at_1024, _ = plan(capsys, *LADDER, "data.resolution=1024", "train.micro_batch=2", "--gpus", "64",
                            "--markdown")
    assert code == 0 and at_1024 in docs
    code, out, _ = plan(capsys, *LADDER, "--gpus", "64", "--markdown")
    assert code == 0 and out in docs
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [15, 18, 21, 24, 30, 38]
    assert math.isclose(float(rows[-1].split("|")[6]), 88.79, abs_tol=0.01)  # d38 at 1024 px
