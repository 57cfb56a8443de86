"""`mmdit-scale scaling-report` on synthetic run dirs whose losses follow a known law."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from launcher import cli
from mmdit_scale.config import load_config
from mmdit_scale.run.layout import write_config
from mmdit_scale.eval.comparable import select_comparable
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


def make_run(root: Path, depth: int, rng: np.random.Generator, noise: float = 0.001, name: str = "",
             overrides: tuple[str, ...] = (), scale: float = 1.0, steps: range = STEPS) -> Path:
    """A tiny-recipe run of `depth` blocks (width 64 d) with validation points every 1000 steps,
    its losses `scale` times the law's."""
    run = root / (name or f"d{depth}")
    cfg = load_config(REPO / "recipes" / "tiny.yaml", [f"model.depth={depth}", "model.hidden_size=null",
                                                       "model.num_heads=null", *TINY_INPUTS, *overrides])
    write_config(cfg, run / "config.yaml")
    params = count_parameters(cfg.model).total
    lines = []
    for step in steps:
        samples = step * cfg.train.global_batch
        flops = 6.0 * params * samples
        loss = scale * float(law(flops)) * (1 + noise * rng.standard_normal())
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
    assert corr["spearman"] == pytest.approx(-1.0) and corr["pearson_p"] < 1e-6 and corr["spearman_p"] < 1e-6
    assert f"| geneval | {corr['points']} | -1.000 | {corr['pearson_p']:.2g} |" in (out / "scaling_report.md").read_text()
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


def test_only_comparable_runs_from_scratch_are_fitted_and_every_other_run_is_named(runs: list[Path], tmp_path: Path,
                                                                                  capsys) -> None:
    """Runs on other validation data, at another resolution, with another formulation, fine-tunes
    and runs that stopped early all lose far less than the law says (half of it): fitted, any of
    them would move the frontier. They are left out, each named with its reason."""
    rng, root = np.random.default_rng(1), tmp_path / "others"
    odd = {"other_val": ("data.val=/data/val-b",), "px128": ("data.resolution=128",),
           "eps": ("flow.formulation=eps_cos",), "finetune": ("train.init_from=/runs/base",)}
    others = [make_run(root, 4, rng, name=name, overrides=extra, scale=0.5) for name, extra in odd.items()]
    others.append(make_run(root, 4, rng, name="short", scale=0.5, steps=range(1000, 3001, 1000)))
    out = tmp_path / "report"
    assert cli.main(["scaling-report", *map(str, [others[0], *runs, *others[1:]]), "--out", str(out),
                     "--min-steps", "4000"]) == 0
    reasons = {
        "other_val": "data.val='/data/val-b', the fitted runs' is ''",
        "px128": "data.resolution=128, the fitted runs' is 64",
        "eps": "flow.formulation='eps_cos', the fitted runs' is 'rf'",
        "finetune": "a fine-tune (train.init_from=/runs/base)",
        "short": "fewer than --min-steps 4000 steps (last validation at step 3000)",
    }
    err = capsys.readouterr().err
    assert all(f"left out: {root / name}: {reason}\n" in err for name, reason in reasons.items())
    fits = json.loads((out / "scaling_fit.json").read_text())
    assert [r["name"] for r in fits["runs"]] == [r.name for r in runs]
    assert {e["run"]: e["reason"] for e in fits["excluded"]} == reasons
    assert fits["setting"] == {"data.val": "", "data.resolution": 64, "flow.formulation": "rf"}
    assert fits["compute_fit"]["b"] == pytest.approx(B, rel=0.05)
    table = (out / "scaling_report.md").read_text()
    assert "## Runs left out" in table
    assert all(f"| {name} | {root / name} | {reason} |" in table for name, reason in reasons.items())


def test_the_largest_group_is_fitted_and_a_tie_goes_to_the_first_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a, b, c = (read_run(make_run(tmp_path, 2, rng, name=name, overrides=(f"data.val=/val/{val}",)))
               for name, val in (("a", "x"), ("b", "y"), ("c", "y")))
    assert [r.name for r in select_comparable([a, b, c]).runs] == ["b", "c"]
    assert [(e.run, e.reason) for e in select_comparable([a, b, c]).excluded] == [
        ("a", "data.val='/val/x', the fitted runs' is '/val/y'")]
    assert [r.name for r in select_comparable([a, b]).runs] == ["a"]
    assert [r.name for r in select_comparable([b, a]).runs] == ["b"]


def test_no_run_left_exits_2_naming_each_reason(runs: list[Path], tmp_path: Path, capsys) -> None:
    finetune = make_run(tmp_path, 2, np.random.default_rng(3), name="ft", overrides=("train.init_from=/runs/x",))
    assert cli.main(["scaling-report", str(runs[0]), str(finetune), "--out", str(tmp_path / "out"),
                     "--min-steps", "20000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmdit-scale scaling-report: no run left to fit: ")
    assert f"{runs[0]}: fewer than --min-steps 20000 steps (last validation at step 10000)" in err
    assert f"{finetune}: a fine-tune (train.init_from=/runs/x)" in err
    assert not (tmp_path / "out" / "scaling_fit.json").exists()


def test_correlation_p_values_are_scipys_for_the_same_points(tmp_path):
    from scipy.stats import pearsonr, spearmanr

    from mmdit_scale.eval.scaling import Run, ValPoint, eval_correlations

    losses, scores = [0.9, 0.7, 0.8, 0.5, 0.6], [0.1, 0.35, 0.2, 0.4, 0.5]
    points = [ValPoint(step=i + 1, samples=i + 1, flops=i + 1, val_loss=l, evals={"clip": v})
              for i, (l, v) in enumerate(zip(losses, scores))]
    run = Run(name="r", path=tmp_path, depth=1, hidden_size=64, params=1, flops_per_sample=1.0, points=points)
    (corr,) = eval_correlations([run])
    assert (corr.pearson, corr.pearson_p) == pytest.approx(tuple(pearsonr(losses, scores)))
    assert (corr.spearman, corr.spearman_p) == pytest.approx(tuple(spearmanr(losses, scores)))
    assert 0.01 < corr.pearson_p < 0.2 and corr.points == 5   # a real p-value, neither 0 nor 1
