"""SD3's MM-DiT as a velocity model: v = MMDiT(cfg)(x, t, context, pooled)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmdit_scale.model.block import JointBlock, layer_norm, modulate
from mmdit_scale.model.config import MMDiTConfig, Routing, checkpointed_blocks
from mmdit_scale.model.embeddings import TIME_FREQ_DIM, MLPEmbedder, PatchEmbed, timestep_features

TIMESTEP_SCALE = 1000.0
"""t in [0, 1] is embedded as 1000 * t, the range SD3's timestep embedding was designed for."""


Gathered = Callable[[Sequence[nn.Parameter]], ContextManager]
"""`gathered(params)`: a context in which those parameters are whole, for a model sharded across
ranks; writes made inside it (identical on every rank) become the shards when it closes."""


def whole(params: Sequence[nn.Parameter]) -> ContextManager:
    """The `Gathered` of a model that is not sharded: its parameters are already whole."""
    return nullcontext()


def _fill(param: torch.Tensor, init: Callable[[torch.Tensor], object]) -> None:
    """`init` drawn into an fp32 CPU tensor of param's shape, then copied (and cast) into param."""
    values = torch.empty(param.shape, dtype=torch.float32)
    init(values)
    param.copy_(values)


class FinalLayer(nn.Module):
    """LayerNorm, adaLN (shift, scale) and a linear map to patch_size^2 * out_channels per token."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(cond).unsqueeze(1).chunk(2, dim=-1)  # 2 x (B, 1, D)
        return self.linear(modulate(layer_norm(x), shift, scale))  # (B, N, p*p*C)


class MMDiT(nn.Module):
    """Multimodal diffusion transformer of Stable Diffusion 3 (rectified-flow velocity prediction).

    Construction initialises the weights; for large models build on the meta device, then
    `to_empty(device=...)` and `init_weights()`, or build sharded with `initialise=False` and
    `init_weights(gathered)` (train/zero_init.py).
    """

    def __init__(self, cfg: MMDiTConfig, initialise: bool = True):
        super().__init__()
        missing = cfg.missing_input_dims()
        if missing:
            keys = ", ".join(f"model.{name}" for name in missing)
            raise ValueError(f"{keys} unset: `mmdit-scale train` fills unset input dims from the manifest of "
                             f"data.train; to build the model elsewhere, set {keys} in the recipe")
        self.cfg = cfg
        dim = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, dim, cfg.patch_size, cfg.pos_embed_max_size, cfg.base_size)
        self.t_embedder = MLPEmbedder(TIME_FREQ_DIM, dim)
        self.y_embedder = MLPEmbedder(cfg.pooled_dim, dim)
        self.context_embedder = nn.Linear(cfg.context_dim, dim)
        self.blocks = nn.ModuleList(
            JointBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm,
                       context_pre_only=i == cfg.depth - 1, dual_attention=i in cfg.dual_attention_layers)
            for i in range(cfg.depth))
        self.final_layer = FinalLayer(dim, cfg.patch_size ** 2 * cfg.out_channels)
        self.checkpointed: tuple[int, ...] = ()
        """Indices of the blocks whose activations are recomputed in backward instead of stored."""
        if initialise:
            self.init_weights()

    def set_activation_checkpointing(self, every: int) -> None:
        """Recompute the activations of every `every`-th block (blocks i with i % every == 0) in backward
        instead of storing them: the same numbers for less memory. 0: none, 1: every block."""
        self.checkpointed = tuple(checkpointed_blocks(self.cfg.depth, every))

    @torch.no_grad()
    def init_weights(self, gathered: Gathered = whole) -> None:
        """DiT-style init; adaLN and the final linear start at zero so the model outputs exactly 0.

        Also recomputes the position table, which is garbage after meta construction + `to_empty`.
        A no-op on the meta device, where there are no values to fill.

        `gathered(params)` makes those parameters whole for the duration of the block, for a model
        whose parameters are sharded across ranks (the default: they already are whole). Every write
        happens inside one, one module at a time, so a sharded model never exists whole on a rank.
        The random draws come in the same order either way (every Linear weight in module order, the
        patchifier, then the embedders' normals), and always from the CPU generator in fp32: the
        seeded weights depend neither on sharding nor on the device or dtype the parameters live in.
        """
        if self.context_embedder.weight.is_meta:
            return
        zero_init = {id(layer) for layer in self._zero_init_layers()}
        for module in self.modules():
            if isinstance(module, nn.Linear):
                with gathered([module.weight, module.bias]):
                    _fill(module.weight, nn.init.xavier_uniform_)  # drawn even when zeroed: keeps the order
                    if id(module) in zero_init:
                        module.weight.zero_()
                    module.bias.zero_()
            elif isinstance(module, nn.RMSNorm):
                with gathered([module.weight]):
                    module.weight.fill_(1.0)
        proj = self.x_embedder.proj
        with gathered([proj.weight, proj.bias]):
            # As a Linear over the patch: the fans of the flattened (out, in * p * p) matrix.
            _fill(proj.weight, lambda w: nn.init.xavier_uniform_(w.view(w.shape[0], -1)))
            proj.bias.zero_()
        for embedder in (self.t_embedder, self.y_embedder):
            for layer in (embedder.fc1, embedder.fc2):
                with gathered([layer.weight]):
                    _fill(layer.weight, lambda w: nn.init.normal_(w, std=0.02))
        self.x_embedder.reset_pos_embed()

    def _zero_init_layers(self) -> list[nn.Linear]:
        """adaLN-Zero: every modulation and the final layer start at zero."""
        streams = [stream.adaLN for block in self.blocks for stream in (block.x, block.context)]
        return streams + [self.final_layer.adaLN, self.final_layer.linear]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                keep: torch.Tensor | None = None, routing: Routing | None = None,
                capture: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Velocity for latents x (B, C, H, W) at times t (B,) in [0, 1], text context (B, T, context_dim)
        and pooled text (B, pooled_dim); returns (B, out_channels, H, W).

        Training with TREAD routing passes `routing` and `keep` (B, K): the indices of the image tokens
        that go through blocks routing.start_block..end_block; the others skip them and rejoin after.

        `capture` (REPA, training only): also return the image tokens block `capture` outputs,
        (B, N, D), or (B, K, D), the kept ones, where that block is routed; returns (velocity, tokens)."""
        b, _, height, width = x.shape
        p = self.cfg.patch_size
        t = t.expand(b) if t.ndim == 0 else t  # (B,)
        t_freq = timestep_features(TIMESTEP_SCALE * t).to(self.t_embedder.fc1.weight.dtype)  # (B, 256)
        # Every adaLN starts with SiLU of the same vector: apply it once here.
        cond = F.silu(self.t_embedder(t_freq) + self.y_embedder(pooled))  # (B, D)
        h = self.x_embedder(x)  # (B, N, D), N = (H/p) * (W/p)
        c = self.context_embedder(context)  # (B, T, D)
        routed = keep is not None and routing is not None and routing.enabled
        full = h
        captured = None
        for index, block in enumerate(self.blocks):
            if routed and index == routing.start_block:
                index_d = keep.unsqueeze(-1).expand(-1, -1, h.shape[-1])  # (B, K, D)
                full, h = h, h.gather(1, index_d)  # (B, N, D) kept aside, (B, K, D) on through the blocks
            if index in self.checkpointed and torch.is_grad_enabled():
                h, c = checkpoint(block, h, c, cond, use_reentrant=False)
            else:
                h, c = block(h, c, cond)  # (B, N or K, D), (B, T, D) or None after the last block
            if index == capture:
                captured = h  # (B, N or K, D): before routed tokens rejoin, so only processed tokens align
            if routed and index == routing.end_block:
                h = full.scatter(1, index_d, h)  # (B, N, D): the routed tokens rejoin
        out = self.final_layer(h, cond)  # (B, N, p*p*C)
        gh, gw, channels = height // p, width // p, self.cfg.out_channels
        out = out.view(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        out = out.reshape(b, channels, gh * p, gw * p)  # (B, C, H, W)
        return out if capture is None else (out, captured)
