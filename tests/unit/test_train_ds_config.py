"""The DeepSpeed JSON generated from a recipe: batch arithmetic, ZeRO stage, precision, AdamW, clipping."""
import json

import pytest

from mmdit_scale.config import load_config
from mmdit_scale.train.ds_config import build_ds_config, grad_accumulation


def cfg(*overrides):
    return load_config("recipes/tiny.yaml", list(overrides))


@pytest.mark.parametrize("global_batch,micro,world,accum", [(8, 4, 2, 1), (64, 4, 2, 8), (4096, 32, 128, 1),
                                                             (96, 4, 3, 8)])
def test_grad_accumulation_is_global_over_micro_times_world(global_batch, micro, world, accum):
    c = cfg(f"train.global_batch={global_batch}", f"train.micro_batch={micro}")
    assert grad_accumulation(c, world) == accum
    ds = build_ds_config(c, world)
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world


def test_a_global_batch_that_does_not_divide_is_an_error_naming_the_numbers():
    with pytest.raises(ValueError, match=r"train.global_batch 8 is not a multiple of .*4 x 3 ranks = 12"):
        grad_accumulation(cfg(), 3)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_stage_and_precision(stage, precision):
    ds = build_ds_config(cfg(f"parallel.zero_stage={stage}", f"parallel.precision={precision}"), 2)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["bf16"] == {"enabled": precision == "bf16"}
    assert "fp16" not in ds
    assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) is False


def test_adamw_clipping_and_the_papers_eps_pass_through_exactly():
    c = cfg("optim.lr=2e-4", "optim.betas=[0.9,0.95]", "optim.eps=1e-15", "optim.weight_decay=0.01",
            "optim.grad_clip=0.5")
    ds = json.loads(json.dumps(build_ds_config(c, 2)))  # what lands in RUN_DIR/deepspeed_config.json
    assert ds["optimizer"] == {"type": "AdamW", "params": {"lr": 2e-4, "betas": [0.9, 0.95], "eps": 1e-15,
                                                           "weight_decay": 0.01, "torch_adam": True}}
    assert ds["gradient_clipping"] == 0.5
    assert "scheduler" not in ds  # the trainer's own LambdaLR (schedule.py), not DeepSpeed's


def test_compile_switch():
    assert "compile" not in build_ds_config(cfg(), 2)
    assert build_ds_config(cfg("train.compile=true"), 2)["compile"] == {"deepcompile": False}
