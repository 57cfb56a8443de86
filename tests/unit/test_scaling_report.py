"""`mmdit-scale scaling-report` on synthetic run dirs whose losses follow a known law."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from launcher import cli
from mmdit_scale.config import load_config
from mmdit_scale.run.layout import write_config
from mmdit_scale.eval.scaling import compute_frontier, fit_power_law, read_run
from mmdit_scale.plan.flops import training_flops
from mmdit_scale.plan.params import count_parameters
from mmdit_scale.plan.tokens import SD3_LAYOUT, square_tokens

REPO = Path(__file__).resolve().parents[2]
A, B, C = 0.2, 0.3, 0.25
"""The law the synthetic runs follow: L = A * (C / 1e12)^-B + C0 with C = 6 N D training FLOPs."""
DEPTHS = (2, 3, 4, 5, 6)
STEPS = range(1000, 10_001, 1000)


def law(flops: np.ndarray | float) -> np.ndarray | float:
    return A * (np.asarray(flops) / 1e12) ** -B + C


TINY_INPUTS = ("model.in_channels=16", "model.context_dim=64", "model.pooled_dim=64", "data.resolution=64")
"""recipes/tiny.yaml leaves its input dims and resolution to the shard manifest; these run dirs have none."""


def make_run(root: Path, depth: int, rng: np.random.Generator, noise: float = 0.001) -> Path:
    """A tiny-recipe run of `depth` blocks (width 64 d) with validation points every 1000 steps."""
    run = root / f"d{depth}"
    cfg = load_config(REPO / "recipes" / "tiny.yaml",
                      [f"model.depth={depth}", "model.hidden_size=null", "model.num_heads=null", *TINY_INPUTS])
    write_config(cfg, run / "config.yaml")
    params = count_parameters(cfg.model).total
    lines = []
    for step in STEPS:
        samples = step * cfg.train.global_batch
        flops = 6.0 * params * samples
        loss = float(law(flops)) * (1 + noise * rng.standard_normal())
        lines.append({"step": step, "loss": loss * 1.1, "lr": 1e-3})  # a training line: not a validation point
        lines.append({"step": step, "samples": samples, "flops": flops, "val_loss": loss})
        lines.append({"step": step, "eval/geneval": 1.0 - loss})  # an eval metric, on its own line
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + '\n{"step": 10001, "val_')
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root, depth, rng) for depth in DEPTHS]


def test_power_law_fit_recovers_exact_parameters() -> None:
    x = np.geomspace(1e15, 1e20, 12)
    fit = fit_power_law(x, law(x))
    assert (fit.b, fit.c) == (pytest.approx(B, rel=1e-4), pytest.approx(C, rel=1e-4))
    assert fit(3e17) == pytest.approx(law(3e17), rel=1e-6)
    pure = fit_power_law(x, 2.0 * x**-0.5, saturating=False)
    assert (pure.a, pure.b, pure.c) == (pytest.approx(2.0), pytest.approx(0.5), 0.0)


def test_run_dir_reading(runs: list[Path]) -> None:
    run = read_run(runs[0])
    assert [p.step for p in run.points] == list(STEPS)
    assert run.skipped_lines == 1  # the line a kill cut short
    assert run.points[0].evals == {"geneval": pytest.approx(1.0 - run.points[0].val_loss)}
    assert run.params == count_parameters(load_config(runs[0] / "config.yaml").model).total


def test_compute_and_samples_default_from_the_config(tmp_path: Path) -> None:
    cfg = load_config(REPO / "recipes" / "tiny.yaml", list(TINY_INPUTS))
    write_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "metrics.jsonl").write_text('{"step": 5, "val_loss": 1.5}\n'
                                            '{"step": 7, "samples": 100, "val_loss": 1.4}\n')
    per_sample = training_flops(cfg.model, square_tokens(cfg, SD3_LAYOUT)).training
    points = read_run(tmp_path).points
    first = 5 * cfg.train.global_batch
    assert [(p.samples, p.flops) for p in points] == [(first, first * per_sample), (100, 100 * per_sample)]


def test_report_recovers_the_known_exponents(runs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert cli.main(["scaling-report", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    fits = json.loads((out / "scaling_fit.json").read_text())
    compute = fits["compute_fit"]
    assert compute["b"] == pytest.approx(B, rel=0.05)
    assert compute["c"] == pytest.approx(C, rel=0.05)
    assert compute["r2"] > 0.99
    # At a fixed step every run has seen the same samples, so C is proportional to N: same exponent.
    assert len(fits["params_fits"]) == 4 and str(STEPS[-1]) in fits["params_fits"]
    for fit in fits["params_fits"].values():
        assert fit["b"] == pytest.approx(B, rel=0.1) and fit["points"] == len(DEPTHS)
    (corr,) = fits["correlations"]
    assert corr["metric"] == "geneval" and corr["pearson"] == pytest.approx(-1.0, abs=1e-9)
    for name in ("loss_vs_compute.png", "loss_vs_params.png", "eval_correlation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "scaling_report.md").read_text()
    assert all(f"| d{d} | {d} | {64 * d} |" in table for d in DEPTHS)
    assert f"{compute['b']:.4f}" in table and f"{compute['b']:.4f}" in printed


def test_frontier_keeps_only_points_no_cheaper_point_beats(runs: list[Path]) -> None:
    frontier = compute_frontier([read_run(r) for r in runs])
    flops, losses = zip(*frontier)
    assert list(flops) == sorted(flops) and all(b < a for a, b in zip(losses, losses[1:]))


def test_missing_run_files_are_named(tmp_path: Path, capsys) -> None:
    assert cli.main(["scaling-report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_a_step_zero_validation_stays_off_the_compute_frontier(runs: list[Path], tmp_path: Path) -> None:
    """The trainer validates at step 0 of a fresh run (zero compute): that point must not stop the fit."""
    fresh = []
    for run in runs:
        copy = tmp_path / run.name
        copy.mkdir()
        (copy / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
        (copy / "metrics.jsonl").write_text('{"kind": "val", "step": 0, "val_loss": 1.5}\n'
                                            + (run / "metrics.jsonl").read_text())
        fresh.append(read_run(copy))
    assert fresh[0].points[0].flops == 0.0
    frontier = compute_frontier(fresh)
    assert all(flops > 0 for flops, _ in frontier)
    assert fit_power_law(*zip(*frontier)).b == pytest.approx(B, rel=0.05)


def test_tokens_come_from_the_training_manifest(tmp_path: Path) -> None:
    """The demo's pixel autoencoder (factor 2) gives 64 image tokens at 32 px, not SD3's 4."""
    from data_pipeline.manifest import EncoderInfo, LatentInfo, Manifest, Provenance
    from mmdit_scale.plan.tokens import SD3_TOKENS
    from mmdit_scale.plan.tokens import Tokens

    clip = {"hidden": 32, "pooled": 32}
    encoders = {"autoencoder": EncoderInfo("pixel", None, None, "fp32", {"channels": 12, "factor": 2}),
                "clip_l": EncoderInfo("clip", "l", "x", "fp32", clip, tokens=77),
                "clip_g": EncoderInfo("clip", "g", "x", "fp32", clip, tokens=77),
                "t5": EncoderInfo("t5", "t5", "x", "fp32", {"hidden": 64}, tokens=77)}
    shards = tmp_path / "shards"
    shards.mkdir()
    Manifest(Provenance(encoders=encoders, latent=LatentInfo(12, 2, 1.0, 0.0), resolution=32)).save(
        shards / "manifest.json")
    overrides = ["data.resolution=32", "model.in_channels=12", "model.context_dim=64", "model.pooled_dim=64",
                 "model.sample_size=16", "model.pos_embed_max_size=16"]
    for data, tokens, source in ((shards, Tokens(image=64, text=154), str(shards / "manifest.json")),
                                 (tmp_path / "gone", Tokens(image=4, text=154), SD3_TOKENS)):
        run = tmp_path / f"run_{data.name}"
        cfg = load_config(REPO / "recipes" / "tiny.yaml", [*overrides, f"data.train={data}"])
        write_config(cfg, run / "config.yaml")
        (run / "metrics.jsonl").write_text('{"step": 10, "val_loss": 1.0}\n')
        got = read_run(run)
        assert (got.tokens, got.tokens_from) == (tokens, source)
        assert got.flops_per_sample == training_flops(cfg.model, tokens).training
        assert got.points[0].flops == 10 * cfg.train.global_batch * got.flops_per_sample
