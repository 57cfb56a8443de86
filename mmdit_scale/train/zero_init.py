"""ZeRO-3 models built already sharded: no rank ever holds the whole model.

Built whole and sharded afterwards, every rank of a d38 run would first hold the full fp32 model
(32 GB), times 8 ranks per node. Here the model is constructed under `deepspeed.zero.Init`, which
shards each submodule's parameters as soon as that submodule exists, and then initialised one
module at a time inside `GatheredParameters`. The weights are the same, bit for bit, as the whole
seeded build (`MMDiT(cfg)` after `torch.manual_seed`), whatever the world size:
- construction draws from the seeded stream exactly as before (each submodule's constructor runs
  whole before it is sharded, and its draws are overwritten by `init_weights` anyway);
- `init_weights` makes the same draws in the same order on every rank, each inside a gather, and
  rank 0's values (equal to every other rank's) become the shards.

Two deliberate choices against DeepSpeed's defaults:
- `tensor_overrides=[]`: zero.Init would otherwise make every float tensor created during
  construction bf16, including the position table (which the trainer keeps in fp32) and the init
  draws (bf16 draws are not the bf16 rounding of fp32 draws). Parameters are built and initialised
  in fp32, as in the whole build.
- under bf16 the fp32 shards are then cast to bf16 (`cast_params`), which is what the engine does
  to a whole model: the fp32 master weights DeepSpeed makes from them are the same in both paths.

And one against glibc's, for the whole engine build (`mapped_allocations`, used by build_engine):
large allocations are mapped. The sharded build allocates each whole parameter, keeps a shard of it
and frees the rest, thousands of times; from glibc's heap the freed holes stay resident, and a
rank's peak memory for a 293M model on 2 ranks was 1.27x the model's fp32 bytes, more than the
whole build's 1.01x. With large allocations mapped it is 0.56x (benchmarks/build_memory.py,
docs/benchmarks.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Sequence

import deepspeed
import torch
from torch import nn

from mmdit_scale.config.schema import RunConfig
from mmdit_scale.model.mmdit import Gathered, MMDiT


def gathered(params: Sequence[nn.Parameter]) -> ContextManager:
    """The `Gathered` of a ZeRO-3 model: rank 0's writes are broadcast, then re-sharded."""
    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=0)


def build_sharded(cfg: RunConfig, ds_config: dict[str, Any],
                  prepare: Callable[[MMDiT, Gathered], None] | None = None) -> MMDiT:
    """The seeded MMDiT as ZeRO-3 shards, in fp32 (call after `torch.manual_seed(cfg.train.seed)`;
    then `cast_params` to the compute dtype).

    `prepare(model, gathered)` runs after initialisation (e.g. `train.init_from`), writing through
    `gathered` as `init_weights` does.
    """
    with deepspeed.zero.Init(config_dict_or_path=ds_config, tensor_overrides=[]):
        model = MMDiT(cfg.model, initialise=False)
    model.init_weights(gathered)
    if prepare is not None:
        prepare(model, gathered)
    return model


_M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the size above which malloc maps memory (glibc malloc.h)."""
_MAPPED_DURING_BUILD = 1 << 20
_MAPPED_AFTER = 32 << 20
"""glibc's own ceiling for its moving threshold (64-bit): where a long run's threshold ends up."""


@contextmanager
def mapped_allocations() -> Iterator[None]:
    """Allocations over 1 MiB are mapped, and unmapped when freed, for the duration (glibc only).

    mallopt fixes the threshold, which glibc otherwise raises after each large free; afterwards it
    is set to the ceiling that rule reaches. Elsewhere than glibc this does nothing.
    """
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None or not mallopt(_M_MMAP_THRESHOLD, _MAPPED_DURING_BUILD):
        yield
        return
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, _MAPPED_AFTER)


def cast_params(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast every parameter to `dtype`: a shard's data (and its empty placeholder), or a whole one's.

    The engine skips its own cast for a model with zero.Init parameters, expecting zero.Init to have
    made them bf16 already; ours are fp32 (see the module docstring). Parameters added after the
    sharded build (REPA's projector) are still whole here; the engine shards them itself.
    """
    for param in module.parameters():
        if hasattr(param, "ds_tensor"):
            param.ds_tensor.data = param.ds_tensor.data.to(dtype)
            param.data = torch.empty(0, dtype=dtype, device=param.data.device)
        else:
            param.data = param.data.to(dtype)
