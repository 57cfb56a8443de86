"""`recipes/tiny.yaml` and `recipes/demo.yaml` train on `prepare --encoders demo` shards at 32 and
64 px as they are: the input dims they leave unset come from the shards' manifest.

Each case is a real 2-step run through the launcher (1 CPU rank) on shards from the real prepare.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from data_pipeline.demo_data import write_demo_data
from data_pipeline.prepare import PrepareOptions, run_prepare
from mmdit_scale.config import load_config
from mmdit_scale.run import checkpoints, layout

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEMO_DIMS = {"in_channels": 12, "context_dim": 64, "pooled_dim": 64}
"""The pixel autoencoder's 12 channels (3 x 2 x 2); the demo T5's width 64; pooled CLIP-L 32 + CLIP-G 32."""


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory, demo_encoders) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("demo-shards")
    write_demo_data(root / "images", count=8)
    out = {}
    for px in (32, 64):
        out[px] = root / f"shards_{px}"
        run_prepare(PrepareOptions(input=root / "images", output=out[px], resolution=px, progress=False,
                                   encoders=demo_encoders))
    return out


@pytest.mark.parametrize("recipe", ["tiny", "demo"])
@pytest.mark.parametrize("px", [32, 64])
def test_recipe_trains_on_demo_shards_with_no_edits(recipe, px, demo_shards, tmp_path):
    for dim in DEMO_DIMS:  # the premise: the recipe leaves these to the manifest
        assert getattr(load_config(REPO / "recipes" / f"{recipe}.yaml").model, dim) is None
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launcher.cli", "train", f"recipes/{recipe}.yaml",
           f"data.train={demo_shards[px]}", f"data.resolution={px}", "train.steps=2", "train.global_batch=4",
           "train.micro_batch=4", "checkpoint.every=2", "logging.every=1", "eval.every=0",
           "--nproc", "1", "--run-dir", str(run_dir)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    filled = f"model.in_channels=12 model.context_dim=64 model.pooled_dim=64 from the manifest {demo_shards[px]}"
    assert filled in done.stdout, done.stdout[-2000:]

    saved = load_config(run_dir / layout.CONFIG_FILE).model
    assert {dim: getattr(saved, dim) for dim in DEMO_DIMS} == DEMO_DIMS
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    ckpt = checkpoints.read_latest(run_dir / layout.CHECKPOINTS)
    assert ckpt is not None and ckpt.name == "step_0000002"
    weights = load_file(ckpt / layout.MODEL_FILE)
    assert weights["x_embedder.proj.weight"].shape[1] == DEMO_DIMS["in_channels"]
    assert weights["context_embedder.weight"].shape[1] == DEMO_DIMS["context_dim"]


def test_a_pipe_spec_trains_with_dims_and_resolution_from_its_manifest(demo_shards, tmp_path):
    """A remote store stood in for by `pipe:cat`: nothing is read as a local path before the ranks start."""
    shards = demo_shards[32]
    spec = f"pipe:cat {shards}/shard-{{000000..000000}}.tar"
    cmd = [sys.executable, "-m", "launcher.cli", "train", "recipes/tiny.yaml", f"data.train={spec}",
           "train.steps=2", "train.global_batch=4", "train.micro_batch=4", "checkpoint.every=2", "eval.every=0",
           "--nproc", "1", "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (f"model.in_channels=12 model.context_dim=64 model.pooled_dim=64 data.resolution=32 from the manifest "
            f"pipe:cat {shards}/manifest.json") in done.stdout
    saved = load_config(tmp_path / "run" / layout.CONFIG_FILE)
    assert saved.data.train == spec and saved.data.resolution == 32
    assert checkpoints.read_latest(tmp_path / "run" / layout.CHECKPOINTS).name == "step_0000002"
