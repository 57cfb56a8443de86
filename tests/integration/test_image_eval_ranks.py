"""Image metrics during training give the same numbers on 1 and 2 ranks (real gloo processes).

The trainer's `ImageEvaluator` on synthetic pixel-autoencoder shards, with a fixed velocity function
standing in for the model and the tiny feature models of `demo_models`: 11 prompts in chunks of 4,
so the second rank samples one chunk and one discarded round (ZeRO-3's collective forward).
Each rank runs this file as a script.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TEXT = {"clip_l": (32, 32), "clip_g": (32, 32), "t5": (64, None)}


def write_pixel_shards(out: Path) -> Path:
    from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
    from data_pipeline.manifest import AUTOENCODER, EncoderInfo, LatentInfo

    spec = SyntheticSpec(shards=1, per_shard=16, channels=12, factor=2, latent_sizes=((8, 8),), text=TEXT, seed=3)
    manifest = write_synthetic(out, spec)
    manifest.provenance.encoders[AUTOENCODER] = EncoderInfo(kind="pixel", model_dir=None, weights_sha256=None,
                                                            dtype="fp32", dims={"channels": 12, "factor": 2})
    manifest.provenance.latent = LatentInfo(channels=12, factor=2, scale=1.0, shift=0.0)
    manifest.save(out / "manifest.json")
    return out


def worker(rank: int, world: int, port: int, args: dict) -> None:
    import torch
    import torch.distributed as dist

    from mmdit_scale.config import load_config
    from mmdit_scale.flow import get_formulation
    from mmdit_scale.train.data import val_loader
    from mmdit_scale.train.image_eval import ImageEvaluator
    from mmdit_scale.train.sample_grids import null_condition

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = load_config(REPO / "recipes" / "tiny.yaml", [
        f"data.train={args['shards']}", f"data.val={args['shards']}", "model.in_channels=12", "model.context_dim=64",
        "model.pooled_dim=64", "data.resolution=16", "train.micro_batch=4", "eval.image_every=1", "eval.image_prompts=11",
        f"eval.metrics.inception={args['inception']}", f"eval.metrics.clip={args['clip']}"])
    loader = val_loader(cfg, 0, 1, reference=None)

    def velocity(x, t, context, pooled):  # a fixed function of noise and text, like a model's
        return torch.tanh(0.5 * x + context.mean((1, 2))[:, None, None, None]) * (1 + pooled.mean(1))[:, None, None, None]

    evaluator = ImageEvaluator(cfg, loader, loader.manifest.provenance, get_formulation("rf"), lambda h, w: 1.0,
                               torch.float32, torch.device("cpu"), Path(args["run_dir"]), null_condition(None, loader))
    record, grid = evaluator.run(velocity, 3)
    if rank == 0:
        Path(args["out"]).write_text(json.dumps({**record, "grid": grid.tolist()}))
    dist.barrier()
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world: int, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    port = _port()
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(world), str(port), json.dumps(args)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    return json.loads(Path(args["out"]).read_text())


@pytest.mark.slow
def test_one_and_two_ranks_give_the_same_image_metrics(tmp_path):
    from mmdit_scale.eval.image_metrics.demo_models import build_metric_models
    from mmdit_scale.eval.image_metrics.reference import Reference

    shards = write_pixel_shards(tmp_path / "shards")
    inception, clip = build_metric_models(tmp_path / "models", ["a caption of a sample"], image_size=16)
    results, references = {}, {}
    for world in (1, 2):
        run_dir = tmp_path / f"run{world}"
        run_dir.mkdir()
        args = {"shards": str(shards), "inception": str(inception), "clip": str(clip), "run_dir": str(run_dir),
                "out": str(tmp_path / f"out{world}.json")}
        results[world] = run_ranks(world, args)
        references[world] = Reference.load(run_dir / "image_reference.npz")
    one, two = results[1], results[2]
    keys = ("eval/fid", "eval/cmmd", "eval/clip_score")
    assert {k: two[k] for k in keys} == {k: one[k] for k in keys}, (one, two)
    assert one["images"] == two["images"] == 11 and one["grid"] == two["grid"]
    assert one["eval/fid"] > 0 and one["eval/cmmd"] > 0
    for field in ("mu", "sigma", "clip"):
        np.testing.assert_array_equal(getattr(references[1], field), getattr(references[2], field))
    assert references[1].count == 11


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))
