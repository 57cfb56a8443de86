"""Every subcommand works with only the runtime dependencies, as after `pip install .` without extras.

A throwaway venv sees only the distributions that mmdit-scale's runtime requirements pull in
(symlinks into this venv's site-packages: no pytest, no accelerate, nothing of the dev extra) plus
the repo's three packages, and each subcommand's smallest real path runs there, ranks included.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mmdit_scale", "launcher", "data_pipeline")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions() -> set[str]:
    """mmdit-scale's runtime requirements and everything they require, markers evaluated, no extras."""
    wanted, seen = [Requirement(r) for r in metadata.requires("mmdit-scale") or []], set()
    while wanted:
        req = wanted.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _canonical(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional platform package that is not installed
        seen.add(name)
        wanted += [Requirement(r) for r in dist.requires or []]
    return seen


def _top_levels(dist: metadata.Distribution) -> set[str]:
    return {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    """The interpreter of a venv holding only the runtime distributions and the repo's packages."""
    root = tmp_path_factory.mktemp("runtime-only")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    site = Path(sysconfig.get_paths("venv", vars={"base": str(root / "venv")})["purelib"])
    keep = runtime_distributions()
    assert {"torch", "deepspeed", "scipy", "transformers"} <= keep and not {"pytest", "accelerate"} & keep
    allowed, blocked = set(), set()
    for dist in metadata.distributions():
        name = _canonical(dist.metadata["Name"])
        if name == "mmdit-scale":
            continue
        (allowed if name in keep else blocked).update(_top_levels(dist))
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name in allowed and entry.name not in PACKAGES:
            (site / entry.name).symlink_to(entry)
    for package in PACKAGES:
        (site / package).symlink_to(REPO / package)
    python = root / "venv" / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print([m for m in ('pytest', 'accelerate', 'scipy', 'torch') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "['scipy', 'torch']", check.stderr
    return python


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runtime-work")


def cli(python: Path, work: Path, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           # The venv's own JIT cache: the comm op's build flags name its include paths.
           "TORCH_EXTENSIONS_DIR": os.path.join(sys.prefix, "torch_extensions-runtime-only")}
    done = subprocess.run([str(python), "-m", "launcher.cli", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode in ok, f"{args[0]} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def test_every_subcommand_runs_with_only_the_runtime_dependencies(python: Path, work: Path) -> None:
    cli(python, work, "make-demo-data", "--out", "images", "--n", "16")
    cli(python, work, "prepare", "--input", "images", "--output", "shards", "--encoders", "demo",
        "--resolution", "32", "--no-progress")
    assert json.loads((work / "shards" / "manifest.json").read_text())["shards"]
    cli(python, work, "config", "tiny")
    cli(python, work, "plan", "tiny", "data.train=shards", "--gpus", "1")
    run = ("tiny", "data.train=shards", "data.val=shards", "train.steps=2", "train.global_batch=4",
           "train.micro_batch=4", "checkpoint.every=2", "eval.every=2", "eval.val_batches=1")
    cli(python, work, "train", *run, "--nproc", "1", "--run-dir", "run")
    # The run was started with relative paths: status, sample and export work from anywhere.
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    cli(python, elsewhere, "status", str(work / "run"))
    cli(python, elsewhere, "sample", str(work / "run"), "--prompt", "a red circle", "--steps", "2", "--out", "grid.png")
    cli(python, elsewhere, "export", str(work / "run"), "--format", "diffusers", "--out", "exported")
    cli(python, work, "export", "run", "--format", "safetensors", "--out", "exported.safetensors")
    cli(python, work, "submit", *run, "--cpu", "--nodes", "1", "--gpus-per-node", "1", "--dry-run")
    cli(python, work, "submit-prepare", "images", "shards2", "--parts", "2", "--dry-run")
    _scaling_runs(work)
    cli(python, work, "scaling-report", *(f"runs/d{d}" for d in (1, 2, 3, 4)), "--out", "report")
    assert (work / "report" / "scaling_fit.json").is_file()
    # 2 steps cannot meet the demo's targets: it runs every stage and says so with its exit code 3.
    cli(python, work, "demo", "--workdir", "demo", "--steps", "2", "--images", "32", "--per-prompt", "1",
        "--sample-steps", "1", ok=(0, 3))
    assert (work / "demo" / "summary.json").is_file()


def _scaling_runs(work: Path) -> None:
    """Four run dirs of the micro-ladder's shape whose validation loss falls as a power law of compute."""
    from mmdit_scale.config import load_config
    from mmdit_scale.run.layout import CONFIG_FILE, METRICS_FILE, write_config

    for depth in (1, 2, 3, 4):
        run = work / "runs" / f"d{depth}"
        run.mkdir(parents=True)
        cfg = load_config(REPO / "recipes" / "tiny.yaml",
                          ["model.in_channels=12", "model.context_dim=64", "model.pooled_dim=64", "data.resolution=32",
                           f"model.depth={depth}", f"model.hidden_size={32 * depth}", f"model.num_heads={depth}"])
        write_config(cfg, run / CONFIG_FILE)
        lines = [{"kind": "val", "step": step, "val_loss": 0.1 + (depth * step) ** -0.5} for step in (10, 20, 40, 80)]
        (run / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
