"""Memory per GPU of a DeepSpeed ZeRO run: model states, activations and DeepSpeed's buffers.

Model states follow the reference card (section 7). Mixed-precision (bf16) Adam keeps, per
parameter, 2 bytes of bf16 weights, 2 of bf16 gradients and 12 of fp32 optimizer state (master
weights, m, v); ZeRO-1 shards the optimizer state over the N ranks, ZeRO-2 also the gradients,
ZeRO-3 also the weights:

    ZeRO-1: 4 psi + 12 psi / N      ZeRO-2: 2 psi + 14 psi / N      ZeRO-3: 16 psi / N

fp32 training has no master copy: 4 + 4 bytes of weights and gradients, 8 of Adam state.

Activations are what autograd saves for backward, counted from `MMDiT.forward` (in elements of
the compute dtype, per sample) and checked against the tensors the real model saves
(tests/unit/test_plan_memory.py). Flash-style attention is assumed: no S x S matrix is stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmdit_scale.model.config import MMDiTConfig, checkpointed_blocks
from mmdit_scale.plan.tokens import Tokens

GIB = 2**30
"""Memory is reported in GiB (2^30 bytes), the unit nvidia-smi and torch.cuda report in; an "80 GB"
H100 shows about 79.6 of them."""

ZERO_STAGES = (1, 2, 3)

BYTES_PER_ELEMENT = {"bf16": 2, "fp32": 4}

STATE_BYTES = {
    # precision: (weights, gradients, optimizer) bytes per parameter
    "bf16": (2, 2, 12),
    "fp32": (4, 4, 8),
}

# Saved activations per token, in units of the width D, of one stream of one joint block:
# norm input and output, modulated input, q/k/v, their joint concatenation, the attention output,
# proj input and output, the MLP's fc1 and GELU outputs (4 D each), fc2 output, ...
FULL_STREAM = 21
PRE_ONLY_STREAM = 7
"""The last block's text stream: norm, modulation and its share of the joint attention only."""
QK_NORM_EXTRA = 5
"""RMSNorm keeps the raw qkv projection (3 D) for backward, and the normalised q and k (2 D) are new tensors."""
DUAL_ATTENTION = 6
"""MM-DiT-X attn2 on the image tokens: modulated input, q/k/v, output, proj input and output."""
FINAL_LAYER = 3
"""Final layer per image token: norm input, norm output, modulated input of the output linear."""
CHECKPOINTED_BLOCK = 1
"""A checkpointed block keeps only its inputs: the image and text streams (D per token)."""

# DeepSpeed's defaults (deepspeed.runtime.zero.config), in elements.
REDUCE_BUCKET = 500_000_000
ALLGATHER_BUCKET = 500_000_000
PREFETCH_BUCKET = 50_000_000

USABLE_FRACTION = 0.9
"""Share of a card's memory a plan may fill: the CUDA context, cuBLAS/NCCL workspaces and
allocator fragmentation take the rest."""


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one configuration."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float
    ema: float = 0.0
    """The weight EMA: fp32, sharded over the ranks whatever the ZeRO stage (train/ema.py)."""

    PARTS = ("weights", "gradients", "optimizer", "ema", "activations", "buffers")

    @property
    def total(self) -> float:
        return sum(getattr(self, k) for k in self.PARTS)

    def gib(self) -> dict[str, float]:
        parts = {k: getattr(self, k) for k in self.PARTS}
        return {k: v / GIB for k, v in {**parts, "total": self.total}.items()}


def model_states(params: int, gpus: int, stage: int, precision: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per GPU under ZeRO `stage` (0 = plain data parallel)."""
    weights, grads, optim = (b * params for b in STATE_BYTES[precision])
    return (weights / gpus if stage >= 3 else weights,
            grads / gpus if stage >= 2 else grads,
            optim / gpus if stage >= 1 else optim)


def deepspeed_buffers(params: int, largest_layer: int, stage: int, precision: str) -> float:
    """DeepSpeed's communication buffers at its default bucket sizes (capped by the model size).

    ZeRO-1/2: the gradient reduce bucket and the all-gather bucket for updated weights.
    ZeRO-3: the reduce bucket, the prefetch bucket, and the largest layer's gathered weights and
    gradients (DeepSpeed's own estimator counts 4 bytes per parameter of the largest layer).
    """
    element = BYTES_PER_ELEMENT[precision]
    if stage == 0:
        return 0.0
    if stage < 3:
        return element * (min(REDUCE_BUCKET, params) + min(ALLGATHER_BUCKET, params))
    return element * (min(REDUCE_BUCKET, params) + min(PREFETCH_BUCKET, params) + 2 * largest_layer)


def _block_elements(cfg: MMDiTConfig, tokens: Tokens, index: int) -> int:
    """Saved activations of block `index` for one sample, in elements."""
    qk = QK_NORM_EXTRA if cfg.qk_norm else 0
    text = PRE_ONLY_STREAM if index == cfg.depth - 1 else FULL_STREAM
    elements = (FULL_STREAM + qk) * tokens.image + (text + qk) * tokens.text
    if index in cfg.dual_attention_layers:
        elements += (DUAL_ATTENTION + qk) * tokens.image
    return elements * cfg.hidden_size


def activation_elements(cfg: MMDiTConfig, tokens: Tokens, checkpoint_every: int) -> int:
    """Elements autograd keeps for backward, per sample, with every `checkpoint_every`-th block
    checkpointed (0: none, 1: all).

    Outside the blocks: the data inputs of the patch and context embedders (kept for their weight
    gradients) and the final layer. A checkpointed block keeps only its inputs and recomputes the
    rest in backward, one block at a time; any other block keeps everything.
    """
    outside = (cfg.in_channels * cfg.patch_size**2 * tokens.image + cfg.context_dim * tokens.text
               + FINAL_LAYER * cfg.hidden_size * tokens.image)
    checkpointed = set(checkpointed_blocks(cfg.depth, checkpoint_every))
    return outside + sum(CHECKPOINTED_BLOCK * cfg.hidden_size * tokens.total if i in checkpointed
                         else _block_elements(cfg, tokens, i) for i in range(cfg.depth))


def activation_bytes(cfg: MMDiTConfig, tokens: Tokens, micro_batch: int, precision: str,
                     checkpoint_every: int) -> float:
    """Peak activation bytes of one micro-batch: what is saved plus one block's working set.

    The working set is the block being recomputed under checkpointing, and stands for the
    gradient buffers of the block being differentiated without it.
    """
    working = max(_block_elements(cfg, tokens, i) for i in range(cfg.depth))
    per_sample = activation_elements(cfg, tokens, checkpoint_every) + working
    return float(micro_batch * per_sample * BYTES_PER_ELEMENT[precision])


EMA_BYTES = 4
"""The EMA is kept in fp32 (`ShardedEMA`)."""

BUILD_BYTES = 4
"""Models are built and initialised in fp32 (then cast to the compute dtype)."""


def build_host_bytes(params: int, largest_layer: int, ranks: int, stage: int) -> float:
    """Host memory per rank while the model is built, before DeepSpeed's optimizer exists.

    ZeRO-3 builds it sharded (train/zero_init.py): the rank's fp32 shard plus one module gathered
    whole at a time. Other stages build the whole fp32 model on every rank. On 2 CPU ranks a 293M
    model measured 0.556 of its fp32 bytes against this 0.521 (benchmarks/build_memory.py).
    """
    if stage >= 3:
        return BUILD_BYTES * (params / ranks + largest_layer)
    return float(BUILD_BYTES * params)


def memory_per_gpu(params: int, largest_layer: int, cfg: MMDiTConfig, tokens: Tokens, micro_batch: int,
                   gpus: int, stage: int, precision: str, checkpoint_every: int, ema: bool = False) -> Memory:
    """Bytes per GPU; `ema`: the run keeps a weight EMA (train.ema_every > 0)."""
    weights, grads, optim = model_states(params, gpus, stage, precision)
    return Memory(weights=weights, gradients=grads, optimizer=optim,
                  activations=activation_bytes(cfg, tokens, micro_batch, precision, checkpoint_every),
                  buffers=deepspeed_buffers(params, largest_layer, stage, precision),
                  ema=EMA_BYTES * params / gpus if ema else 0.0)


def more_checkpointing(depth: int, checkpoint_every: int) -> list[int]:
    """Intervals that checkpoint more blocks than `checkpoint_every`, fewest blocks first (so the
    first that fits recomputes least); among equal counts the larger interval comes first."""
    have = len(checkpointed_blocks(depth, checkpoint_every))
    return [k for k in range(depth, 0, -1) if len(checkpointed_blocks(depth, k)) > have]


def checkpointing_label(checkpoint_every: int) -> str:
    """How plan names a policy: 'off', 'every block', 'every 3rd block'."""
    if checkpoint_every <= 1:
        return "every block" if checkpoint_every else "off"
    k = checkpoint_every
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix} block"


def fits(memory: Memory, gpu_memory_gib: float) -> bool:
    return memory.total <= USABLE_FRACTION * gpu_memory_gib * GIB
