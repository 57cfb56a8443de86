"""Training FLOPs of one sample through the MM-DiT, counting every matmul the model runs.

One multiply-add is 2 FLOPs. Each token passes only its own stream's weights, so `6 * params`
per token overcounts about 3x; the count here follows `MMDiT.forward` layer by layer:
embedders, adaLN (once per sample, not per token), the two streams' qkv/proj/MLP, the pre-only
text stream of the last block, the joint attention over all N + T tokens (the pre-only stream's
queries included: SDPA computes them and the block discards the result), MM-DiT-X `attn2` and
the final layer. Element-wise work (norms, modulation, softmax) is not counted, as in MFU.

Backward costs twice the forward (input and weight gradients) except where the input needs no
gradient: the patch embedder, the context embedder and the first layers of the timestep and
pooled-text MLPs see data, so they only compute weight gradients. That is what
`torch.utils.flop_counter.FlopCounterMode` measures; tests/unit/test_plan_flops.py checks it.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmdit_scale.config.schema import RunConfig
from mmdit_scale.model.config import MMDiTConfig, Routing, checkpointed_blocks, projector_width
from mmdit_scale.plan.tokens import Tokens

TIME_FREQ_DIM = 256
"""Width of the sinusoidal timestep features (`mmdit_scale.model.embeddings.TIME_FREQ_DIM`)."""

REPA_PLAN_ENCODER_DIM = 768
"""REPA's encoder width when neither the recipe nor shards give it: DINOv2-B, the REPA paper's encoder."""


@dataclass(frozen=True)
class Flops:
    """FLOPs of one sample; `training` is what MFU and step time are computed from."""

    forward: float
    """One forward pass."""
    training: float
    """Forward plus backward (no recomputation: activation checkpointing adds hardware work, not model
    FLOPs; `recompute_flops` counts it)."""
    attention: float
    """Training FLOPs of the attention score and value matmuls alone (QK^T and PV)."""
    headline: float
    """The reference card's approximation 72 L D^2 S + 12 L D S^2 (blocks only, both streams full)."""

    @property
    def attention_fraction(self) -> float:
        return self.attention / self.training


def headline_flops(depth: int, hidden: int, seq: int) -> float:
    """72 L D^2 S + 12 L D S^2: 24 D^2 per token per block forward (qkv 3, proj 1, MLP 8 multiply-adds
    per D^2), 4 D S^2 per block for attention, times 3 for training."""
    return 72.0 * depth * hidden**2 * seq + 12.0 * depth * hidden * seq**2


def _block_macs(cfg: MMDiTConfig, tokens: Tokens, index: int) -> tuple[int, int]:
    """(weight, attention) multiply-adds of block `index`'s forward for one sample."""
    d, n, t = cfg.hidden_size, tokens.image, tokens.text
    mlp = int(d * cfg.mlp_ratio)
    dual = index in cfg.dual_attention_layers
    macs = (9 if dual else 6) * d * d  # image-stream adaLN, per sample
    macs += n * (4 * d * d + 2 * d * mlp)  # image qkv, proj, MLP
    if index == cfg.depth - 1:  # pre-only text stream: 2 modulation chunks and qkv
        macs += 2 * d * d + t * 3 * d * d
    else:
        macs += 6 * d * d + t * (4 * d * d + 2 * d * mlp)
    attention = 2 * tokens.total**2 * d  # QK^T and PV over all heads
    if dual:
        macs += n * 4 * d * d  # attn2 qkv and proj
        attention += 2 * n * n * d
    return macs, attention


def recompute_flops(cfg: MMDiTConfig, tokens: Tokens, checkpoint_every: int) -> float:
    """FLOPs per sample that activation checkpointing adds: each checkpointed block's forward runs
    again in backward (hardware work, not model FLOPs: MFU leaves it out)."""
    return sum(2.0 * sum(_block_macs(cfg, tokens, i)) for i in checkpointed_blocks(cfg.depth, checkpoint_every))


def repa_projector_macs(hidden: int, tokens: int, encoder_dim: int) -> int:
    """Forward multiply-adds of REPA's projector (hidden -> width -> width -> encoder_dim) on `tokens`
    image tokens of one sample (`mmdit_scale.model.repa.Projector`)."""
    width = projector_width(hidden)
    return tokens * (hidden * width + width * width + width * encoder_dim)


def run_training_flops(cfg: RunConfig, tokens: Tokens) -> Flops:
    """`training_flops` of one sample of run `cfg`: its model, TREAD routing and REPA projector. What
    `plan`, the trainer's logged MFU and `scaling-report` count."""
    repa = cfg.train.repa
    projector = None
    if repa.enabled:
        projector = (repa.block_of(cfg.model.depth), repa.encoder_dim or REPA_PLAN_ENCODER_DIM)
    return training_flops(cfg.model, tokens, cfg.train.routing, projector)


def training_flops(cfg: MMDiTConfig, tokens: Tokens, routing: Routing | None = None,
                   repa: tuple[int, int] | None = None) -> Flops:
    """Exact matmul FLOPs of one training sample of `tokens` through an MM-DiT of shape `cfg`; with
    TREAD `routing`, the routed blocks see only the image tokens it keeps; with `repa` (aligned block,
    encoder width), REPA's projector on that block's image tokens (trained like the model, so its
    backward costs twice its forward)."""
    d, n, t = cfg.hidden_size, tokens.image, tokens.text
    patch_in = cfg.in_channels * cfg.patch_size**2
    patch_out = cfg.out_channels * cfg.patch_size**2

    # Multiply-adds of the layers whose input is data (weight gradient only in backward).
    data_inputs = n * patch_in * d + t * cfg.context_dim * d + TIME_FREQ_DIM * d + cfg.pooled_dim * d
    macs = data_inputs + 2 * d * d  # + second layers of the timestep and pooled MLPs
    attention = 0
    routed = Tokens(image=routing.kept(n), text=t) if routing is not None and routing.enabled else tokens
    for index in range(cfg.depth):
        block, block_attention = _block_macs(cfg, routed if routing is not None and routing.routes(index) else tokens,
                                             index)
        macs += block
        attention += block_attention
    if repa is not None:
        block, encoder_dim = repa
        routed_block = routing is not None and routing.routes(block)  # routes() is False when routing is off
        macs += repa_projector_macs(d, routed.image if routed_block else n, encoder_dim)
    macs += 2 * d * d + n * d * patch_out  # final adaLN and linear
    macs += attention
    forward = 2.0 * macs
    return Flops(
        forward=forward,
        training=3.0 * forward - 2.0 * data_inputs,
        attention=6.0 * attention,
        headline=headline_flops(cfg.depth, d, tokens.total),
    )
