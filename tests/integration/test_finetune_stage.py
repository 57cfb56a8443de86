"""The resolution schedule at demo scale: pretrain at 32 px, then fine-tune with
`recipes/stages/finetune_512.yaml` at 64 px on aspect buckets, from the pretrain run's EMA.

What the stage recipe brings is what this checks: `init_from` a run (its checkpoint pinned and its
step recorded), a fresh optimizer and schedule, the buckets and the resolution taken from the
shards' manifest, the shift rule per bucket and a position table grown for the larger grid. The
model is shrunk to the demo's size by overrides; everything else is the recipe's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_pipeline.demo_data import write_demo_data
from data_pipeline.prepare import PrepareOptions, run_prepare
from mmdit_scale.config import load_config
from mmdit_scale.run import checkpoints, layout

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = ("model.depth=2", "model.hidden_size=64", "model.num_heads=2", "model.qk_norm=true",
         # SD3's input dims, as the ladder sets them, left to the demo shards' manifest instead:
         "model.in_channels=null", "model.out_channels=null", "model.context_dim=null", "model.pooled_dim=null",
         "train.global_batch=4", "train.micro_batch=4", "eval.every=0", "data.num_workers=0",
         "parallel.precision=fp32", "parallel.zero_stage=2", "optim.warmup_steps=2")


def train(recipe: str, run: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launcher.cli", "train", recipe, *SMALL, *overrides, "--nproc", "1",
           "--run-dir", str(run)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_pretrain_at_32_then_finetune_at_64_on_buckets(tmp_path, demo_encoders):
    images = tmp_path / "images"
    write_demo_data(images, count=16)
    for i, png in enumerate(sorted(images.glob("*.png"))[:8]):   # half the set wide or tall
        img = Image.open(png)
        img.resize((96, 48) if i % 2 else (48, 96)).save(png)
    run_prepare(PrepareOptions(input=images, output=tmp_path / "pre", encoders=demo_encoders, resolution=32,
                               progress=False))
    run_prepare(PrepareOptions(input=images, output=tmp_path / "ft", encoders=demo_encoders, resolution=64,
                               auto_buckets=True, progress=False))
    buckets = json.loads((tmp_path / "ft" / "manifest.json").read_text())["provenance"]["buckets"]
    assert len(buckets) > 1

    pre = tmp_path / "pretrain"
    train("recipes/stages/pretrain_256.yaml", pre, f"data.train={tmp_path / 'pre'}", "data.resolution=32",
          "model.pos_embed_max_size=8", "model.sample_size=16", "train.steps=4", "checkpoint.every=4",
          "train.ema_every=2", "train.ema_decay=0.5")
    ft = tmp_path / "finetune"
    done = train("recipes/stages/finetune_512.yaml", ft, f"data.train={tmp_path / 'ft'}", "data.resolution=null",
                 "data.buckets=[]", "model.pos_embed_max_size=32", "model.sample_size=32",
                 f"train.init_from={pre}", "train.init_from_ema=true", "train.steps=4", "checkpoint.every=4",
                 "logging.every=1")

    pinned = checkpoints.read_latest(pre / layout.CHECKPOINTS)
    assert f"init_from {pinned} (step 4, EMA)" in done.stdout
    assert "init_from: " in done.stdout and " EMA tensors from " in done.stdout
    cfg = load_config(ft / layout.CONFIG_FILE)
    assert cfg.train.init_from == str(pinned) and cfg.train.init_from_step == 4 and cfg.train.init_from_ema
    assert cfg.data.resolution == 64 and {tuple(b) for b in buckets} == set(cfg.data.buckets)
    assert cfg.flow.shift == 2.0 and cfg.optim.eps == 1e-15          # the stage's own settings
    records = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records[0]["step"] == 1 and all(r["loss"] > 0 for r in train_records)
    assert train_records[0]["lr"] < cfg.optim.lr                     # warm-up restarts: a fresh schedule
    state = checkpoints.read_state(checkpoints.read_latest(ft / layout.CHECKPOINTS))
    assert state["step"] == 4
    # A resume keeps what the run started from on record, whatever the command line says now.
    train("recipes/stages/finetune_512.yaml", ft, f"data.train={tmp_path / 'ft'}", "data.resolution=null",
          "data.buckets=[]", "model.pos_embed_max_size=32", "model.sample_size=32", "train.init_from=elsewhere",
          "train.steps=6", "checkpoint.every=2", "logging.every=1")
    resumed = load_config(ft / layout.CONFIG_FILE)
    assert (resumed.train.init_from, resumed.train.init_from_step, resumed.train.init_from_ema) == (str(pinned), 4, True)
