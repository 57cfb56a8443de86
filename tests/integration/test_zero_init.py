"""ZeRO-3 builds the model already sharded (train/zero_init.py), with the weights of the whole build.

Two real DeepSpeed ranks on gloo build the engine the way `train` does. Each test compares the fp32
master weights the engine holds, gathered back, with the whole seeded build of one process: they
must be equal bit for bit (fp32), or be its bf16 rounding (bf16, as when the engine casts a whole
model). `train.init_from` and the EMA are checked the same way.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from mmdit_scale.config import load_config
from mmdit_scale.model import MMDiT
from mmdit_scale.run import checkpoints, layout

pytestmark = pytest.mark.slow

WORLD = 2
MODEL = ("model.in_channels=16", "model.context_dim=64", "model.pooled_dim=64", "model.depth=3",
         "model.dual_attention_layers=[0]", "train.global_batch=8", "train.micro_batch=4", "train.seed=11")
"""recipes/tiny.yaml with its input dims set (no shards here), a dual-attention block, another seed."""


def config(tmp_path: Path, *overrides: str):
    return load_config("recipes/tiny.yaml", [f"data.train={tmp_path}", *MODEL, *overrides])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, overrides: tuple[str, ...], init_from: str, out: str) -> None:
    """One rank: the engine as `train` builds it; rank 0 saves the gathered weights and EMA."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed

    from mmdit_scale.train.ema import ShardedEMA
    from mmdit_scale.train.engine import build_engine, full_fp32_params, param_shapes, trained_model
    from mmdit_scale.train.init_from import load_initial_weights

    deepspeed.init_distributed(dist_backend="gloo")
    cfg = config(Path(out).parent, *overrides)
    prepare = (lambda model, gathered: load_initial_weights(model, init_from, gathered=gathered)) if init_from else None
    engine = build_engine(cfg, WORLD, prepare=prepare, repa_dim=8)  # repa_dim: read only with train.repa on
    sharded = all(hasattr(p, "ds_id") and p.numel() == 0 for p in engine.module.parameters())
    dtypes = {p.dtype for p in engine.module.parameters()}
    weights = {name: full.clone() for name, full in full_fp32_params(engine)}
    ema = ShardedEMA(0.9, 1, rank, WORLD, param_shapes(engine))
    ema.reset(full_fp32_params(engine))
    consolidated = ema.consolidated()
    if rank == 0:
        torch.save({"weights": weights, "ema": consolidated, "sharded": sharded, "dtypes": dtypes,
                    "pos_embed": trained_model(engine).x_embedder.pos_embed.clone()}, out)
    deepspeed.comm.destroy_process_group()


def build_on_two_ranks(tmp_path: Path, *overrides: str, init_from: str = "") -> dict:
    out = tmp_path / "engine.pt"
    mp.spawn(_rank, args=(_free_port(), overrides, init_from, str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


def whole_build(cfg) -> MMDiT:
    torch.manual_seed(cfg.train.seed)
    return MMDiT(cfg.model)


def assert_same(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert found.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(found[k], expected[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("precision, repa", [("fp32", "0"), ("bf16", "0"), ("bf16", "0.5")])
def test_zero3_weights_are_the_whole_seeded_build(tmp_path, precision, repa):
    """With REPA on, the projector joins after the sharded build and the MMDiT's weights are unchanged."""
    overrides = ("parallel.zero_stage=3", f"parallel.precision={precision}", f"train.repa.weight={repa}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    got = build_on_two_ranks(tmp_path, *overrides)
    assert got["sharded"], "the model was not built under zero.Init"
    assert got["dtypes"] == {dtype}  # REPA's projector included
    reference = whole_build(config(tmp_path, *overrides))
    expected = {k: v.to(dtype).float() for k, v in reference.state_dict().items()}
    assert_same(got["weights"], expected)
    assert_same(got["ema"], expected)  # the EMA starts at the initial weights
    # The position table stays fp32 and exact (zero.Init's dtype override would have made it bf16).
    assert got["pos_embed"].dtype == torch.float32
    assert torch.equal(got["pos_embed"], reference.x_embedder.pos_embed)


def test_zero3_init_from_a_checkpoint_loads_into_the_shards(tmp_path):
    """A checkpoint's weights (all non-zero, QK norms included) end up in the shards exactly."""
    overrides = ("parallel.zero_stage=3", "parallel.precision=fp32")
    cfg = config(tmp_path, *overrides)
    source = whole_build(cfg)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ckpt = tmp_path / "src" / "checkpoints" / layout.checkpoint_name(5)
    ckpt.mkdir(parents=True)
    (ckpt / layout.STATE_FILE).write_text('{"step": 5}')
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, ckpt / layout.MODEL_FILE)
    checkpoints.write_latest(ckpt.parent, ckpt.name)
    got = build_on_two_ranks(tmp_path, *overrides, init_from=str(tmp_path / "src"))
    assert got["sharded"]
    assert_same(got["weights"], source.state_dict())
    assert_same(got["ema"], source.state_dict())
