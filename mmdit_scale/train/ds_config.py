"""The DeepSpeed JSON of a run, generated from the recipe and the world size (never hand-written).

Pure Python, so it can be unit-tested and printed without torch. What the JSON holds and what
it does not (and why):
- batch sizes: micro batch per rank, gradient accumulation = global / (micro * world), global;
- ZeRO stage 0-3 and bf16 or fp32 (bf16 keeps fp32 master weights in the optimizer);
- gradient clipping;
- AdamW with betas, eps and weight decay, through `torch.optim.AdamW` (`torch_adam`), which needs
  no JIT-compiled kernel on any accelerator;
- `compile` for `train.compile` (the trainer then calls `engine.compile()`).
The learning-rate schedule is not DeepSpeed's: its warm-up schedulers spend the first two updates
at lr 0 and stretch a 1-step warm-up to 2, so the trainer hands DeepSpeed a `LambdaLR` over
`schedule.lr_factor`, whose value at every step is documented and tested. Activation
checkpointing is the model's own switch (`MMDiT.set_activation_checkpointing`): DeepSpeed's
section only configures `deepspeed.checkpointing`, which the model does not call.
"""
from __future__ import annotations

from typing import Any

from mmdit_scale.config.schema import RunConfig

_QUIET = 10**9
"""`steps_per_print`: DeepSpeed's own progress lines would duplicate the trainer's."""


def grad_accumulation(cfg: RunConfig, world_size: int) -> int:
    """Micro-batches per rank per optimizer step: global / (micro * world), which must be whole."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    per_pass = cfg.train.micro_batch * world_size
    if cfg.train.global_batch % per_pass:
        raise ValueError(
            f"train.global_batch {cfg.train.global_batch} is not a multiple of train.micro_batch "
            f"{cfg.train.micro_batch} x {world_size} ranks = {per_pass}; pick a global batch that is, "
            f"or another micro batch or rank count")
    return cfg.train.global_batch // per_pass


def build_ds_config(cfg: RunConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    """The config dict for `deepspeed.initialize(config=...)`; saved as RUN_DIR/deepspeed_config.json.

    `load_universal`: the run resumes from a checkpoint of another world size, through DeepSpeed's
    universal checkpoint format.
    """
    optim = cfg.optim
    ds: dict[str, Any] = {
        "train_batch_size": cfg.train.global_batch,
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch,
        "gradient_accumulation_steps": grad_accumulation(cfg, world_size),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": optim.lr,
                "betas": list(optim.betas),
                "eps": optim.eps,
                "weight_decay": optim.weight_decay,
                "torch_adam": True,
            },
        },
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": _zero_section(cfg.parallel.zero_stage),
        "bf16": {"enabled": cfg.parallel.precision == "bf16"},
        "steps_per_print": _QUIET,
        "wall_clock_breakdown": False,
    }
    if cfg.train.compile:
        ds["compile"] = {"deepcompile": False}
    if load_universal:
        ds["checkpoint"] = {"load_universal": True}
    return ds


def _zero_section(stage: int) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        # The trainer writes its own consolidated fp32 weights; DeepSpeed's 16-bit copy would be a
        # second full-model gather on every save.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return zero
