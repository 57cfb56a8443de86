"""Exact conversion between our MMDiT and diffusers' SD3Transformer2DModel (weights and config).

Differences the converter absorbs:
- diffusers has separate q/k/v Linears (to_q/to_k/to_v, add_*_proj for the text stream, attn2.to_*);
  ours are one fused Linear(D, 3D) per stream, rows stacked [q; k; v].
- diffusers' AdaLayerNormContinuous (final layer, pre-only text norm of the last block) chunks its
  modulation as (scale, shift); ours uses the SD3 reference order (shift, scale), so the two row halves swap.
- diffusers stores the sin-cos position table as a persistent buffer; ours recomputes it from the config.
  from_diffusers checks that the stored table is the one the config implies.
diffusers' timestep argument is 1000 * t where ours takes t in [0, 1].
`read_sd3_transformer` reads a saved transformer directory (released SD3 weights) for `train.init_from`.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from mmdit_scale.model import MMDiT, MMDiTConfig

if TYPE_CHECKING:
    from diffusers import SD3Transformer2DModel

DIFFUSERS_MLP_RATIO = 4.0
"""diffusers' FeedForward width is fixed at 4x."""

POS_EMBED_KEY = "pos_embed.pos_embed"

# Conversion ops: how our tensor is made from the listed diffusers tensors and back.
COPY, FUSE_QKV, SWAP_HALVES = "copy", "fuse_qkv", "swap_halves"


def _linear(ours: str, theirs: tuple[str, ...], op: str = COPY) -> list[tuple[str, tuple[str, ...], str]]:
    """Entries for the weight and bias of a Linear (or Conv2d)."""
    return [(f"{ours}.{p}", tuple(f"{t}.{p}" for t in theirs), op) for p in ("weight", "bias")]


def _qkv(ours: str, theirs: str, names: tuple[str, str, str], qk_norm: bool, norms: tuple[str, str]):
    entries = _linear(f"{ours}.qkv", tuple(f"{theirs}.{n}" for n in names), FUSE_QKV)
    if qk_norm:
        entries += [(f"{ours}.q_norm.weight", (f"{theirs}.{norms[0]}.weight",), COPY),
                    (f"{ours}.k_norm.weight", (f"{theirs}.{norms[1]}.weight",), COPY)]
    return entries


def key_map(cfg: MMDiTConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """(our key, diffusers keys, op) for every parameter of a model with this config."""
    entries = _linear("x_embedder.proj", ("pos_embed.proj",))
    entries += _linear("t_embedder.fc1", ("time_text_embed.timestep_embedder.linear_1",))
    entries += _linear("t_embedder.fc2", ("time_text_embed.timestep_embedder.linear_2",))
    entries += _linear("y_embedder.fc1", ("time_text_embed.text_embedder.linear_1",))
    entries += _linear("y_embedder.fc2", ("time_text_embed.text_embedder.linear_2",))
    entries += _linear("context_embedder", ("context_embedder",))
    for i in range(cfg.depth):
        ours, theirs = f"blocks.{i}", f"transformer_blocks.{i}"
        pre_only = i == cfg.depth - 1
        entries += _linear(f"{ours}.x.adaLN", (f"{theirs}.norm1.linear",))
        entries += _qkv(f"{ours}.x.attn", f"{theirs}.attn", ("to_q", "to_k", "to_v"), cfg.qk_norm,
                        ("norm_q", "norm_k"))
        entries += _linear(f"{ours}.x.proj", (f"{theirs}.attn.to_out.0",))
        entries += _linear(f"{ours}.x.mlp.fc1", (f"{theirs}.ff.net.0.proj",))
        entries += _linear(f"{ours}.x.mlp.fc2", (f"{theirs}.ff.net.2",))
        if i in cfg.dual_attention_layers:
            entries += _qkv(f"{ours}.x.attn2", f"{theirs}.attn2", ("to_q", "to_k", "to_v"), cfg.qk_norm,
                            ("norm_q", "norm_k"))
            entries += _linear(f"{ours}.x.attn2.proj", (f"{theirs}.attn2.to_out.0",))
        entries += _linear(f"{ours}.context.adaLN", (f"{theirs}.norm1_context.linear",),
                           SWAP_HALVES if pre_only else COPY)
        entries += _qkv(f"{ours}.context.attn", f"{theirs}.attn", ("add_q_proj", "add_k_proj", "add_v_proj"),
                        cfg.qk_norm, ("norm_added_q", "norm_added_k"))
        if not pre_only:
            entries += _linear(f"{ours}.context.proj", (f"{theirs}.attn.to_add_out",))
            entries += _linear(f"{ours}.context.mlp.fc1", (f"{theirs}.ff_context.net.0.proj",))
            entries += _linear(f"{ours}.context.mlp.fc2", (f"{theirs}.ff_context.net.2",))
    entries += _linear("final_layer.adaLN", ("norm_out.linear",), SWAP_HALVES)
    entries += _linear("final_layer.linear", ("proj_out",))
    return entries


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def config_from_diffusers(config: Any) -> MMDiTConfig:
    """MMDiTConfig equal to a diffusers SD3Transformer2DModel config (a mapping)."""
    c = dict(config)
    inner = c["num_attention_heads"] * c["attention_head_dim"]
    if c["caption_projection_dim"] != inner:
        raise ValueError(f"caption_projection_dim {c['caption_projection_dim']} != inner dim {inner}: the joint "
                         "blocks need both streams at one width")
    if c["pos_embed_max_size"] is None:
        raise ValueError("pos_embed_max_size=None (no cropped position table) is not an SD3 layout")
    if c["qk_norm"] not in (None, "rms_norm"):
        raise ValueError(f"qk_norm={c['qk_norm']!r} is not supported (only None or 'rms_norm')")
    return MMDiTConfig(
        depth=c["num_layers"], hidden_size=inner, num_heads=c["num_attention_heads"], patch_size=c["patch_size"],
        in_channels=c["in_channels"], out_channels=c["out_channels"], context_dim=c["joint_attention_dim"],
        pooled_dim=c["pooled_projection_dim"], mlp_ratio=DIFFUSERS_MLP_RATIO, qk_norm=c["qk_norm"] == "rms_norm",
        dual_attention_layers=tuple(c["dual_attention_layers"]), pos_embed_max_size=c["pos_embed_max_size"],
        sample_size=c["sample_size"])


DIFFUSERS_NAMES = {
    "depth": "num_layers", "hidden_size": "num_attention_heads * attention_head_dim",
    "num_heads": "num_attention_heads", "context_dim": "joint_attention_dim", "pooled_dim": "pooled_projection_dim",
    "mlp_ratio": "fixed in diffusers",
}
"""diffusers' config.json name of an MMDiTConfig field, where it differs (for messages)."""


TABLE_FIELDS = ("pos_embed_max_size", "sample_size")
"""Fields that shape only the sin-cos position table, a buffer our model recomputes from its config:
a source may differ in them (its table is cropped or enlarged), as a checkpoint source may."""


def config_differences(recipe: MMDiTConfig, theirs: MMDiTConfig) -> list[str]:
    """'field: recipe A, diffusers B' for each field where a recipe's model differs from a diffusers
    transformer's layout in a way its weights cannot serve. QK-norm may be added to weights without
    it (the scales start at one), not dropped; the position table's fields may differ (TABLE_FIELDS)."""
    out = []
    for f in fields(MMDiTConfig):
        if f.name in TABLE_FIELDS:
            continue
        ours, other = getattr(recipe, f.name), getattr(theirs, f.name)
        differs = (other and not ours) if f.name == "qk_norm" else ours != other
        if differs:
            alias = f" ({DIFFUSERS_NAMES[f.name]})" if f.name in DIFFUSERS_NAMES else ""
            out.append(f"{f.name}: recipe {ours}, diffusers {other}{alias}")
    return out


def config_to_diffusers(cfg: MMDiTConfig) -> dict[str, Any]:
    """Keyword arguments of SD3Transformer2DModel for an MMDiTConfig."""
    if cfg.mlp_ratio != DIFFUSERS_MLP_RATIO:
        raise ValueError(f"diffusers' SD3 MLP ratio is fixed at {DIFFUSERS_MLP_RATIO}, got {cfg.mlp_ratio}")
    return dict(
        sample_size=cfg.sample_size, patch_size=cfg.patch_size, in_channels=cfg.in_channels, num_layers=cfg.depth,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.num_heads, joint_attention_dim=cfg.context_dim,
        caption_projection_dim=cfg.hidden_size, pooled_projection_dim=cfg.pooled_dim,
        out_channels=cfg.out_channels, pos_embed_max_size=cfg.pos_embed_max_size,
        dual_attention_layers=tuple(cfg.dual_attention_layers), qk_norm="rms_norm" if cfg.qk_norm else None)


def iter_state_from_diffusers(sd: dict[str, torch.Tensor], cfg: MMDiTConfig,
                              release: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(our key, tensor) one at a time from a diffusers SD3 state dict; unknown or missing keys raise
    before the first item. A yielded tensor never aliases one still in `sd`. With `release`, each
    diffusers tensor leaves `sd` as it is used, so a caller that copies each item into a model holds
    the source and one converted tensor at a time, never a second full copy."""
    entries = key_map(cfg)
    needed = {k for _, theirs, _ in entries for k in theirs}
    missing = sorted(needed - set(sd))
    if missing:
        raise KeyError(f"diffusers state dict lacks {missing[:8]}")
    unexpected = sorted(set(sd) - needed - {POS_EMBED_KEY})
    if unexpected:
        raise KeyError(f"diffusers state dict has keys with no counterpart in MMDiT: {unexpected[:8]}")
    for ours, theirs, op in entries:
        tensors = [sd.pop(k) if release else sd[k] for k in theirs]
        if op == FUSE_QKV:
            yield ours, torch.cat(tensors, dim=0)
        elif op == SWAP_HALVES:
            yield ours, _swap_halves(tensors[0])
        else:
            yield ours, tensors[0] if release else tensors[0].clone()


def state_dict_from_diffusers(sd: dict[str, torch.Tensor], cfg: MMDiTConfig) -> dict[str, torch.Tensor]:
    """Our state dict (fresh tensors) from a diffusers SD3 state dict; unknown or missing keys raise."""
    return dict(iter_state_from_diffusers(sd, cfg))


def state_dict_to_diffusers(sd: dict[str, torch.Tensor], cfg: MMDiTConfig) -> dict[str, torch.Tensor]:
    """diffusers SD3 state dict (fresh tensors, without the position table) from ours."""
    out = {}
    for ours, theirs, op in key_map(cfg):
        t = sd[ours]
        if op == FUSE_QKV:
            out.update(zip(theirs, (part.clone() for part in t.chunk(3, dim=0))))
        elif op == SWAP_HALVES:
            out[theirs[0]] = _swap_halves(t)
        else:
            out[theirs[0]] = t.clone()
    return out


def from_diffusers(model: "SD3Transformer2DModel") -> MMDiT:
    """Our MMDiT with the config and weights of a diffusers SD3 transformer (same device and dtype)."""
    cfg = config_from_diffusers(model.config)
    sd = model.state_dict()
    with torch.device("meta"):
        ours = MMDiT(cfg)
    ours.load_state_dict(state_dict_from_diffusers(sd, cfg), strict=True, assign=True)
    ref = sd[POS_EMBED_KEY]
    # The table is not a parameter: materialise ours, then make sure diffusers' stored one is the same.
    ours.x_embedder.pos_embed = torch.empty(ref.shape[1:], device=ref.device, dtype=ref.dtype)
    ours.x_embedder.reset_pos_embed()
    check_pos_table(ours.x_embedder.pos_embed, ref)
    return ours


def to_diffusers(model: MMDiT) -> "SD3Transformer2DModel":
    """A diffusers SD3Transformer2DModel with our model's config and weights (same device and dtype)."""
    from diffusers import SD3Transformer2DModel

    cfg = model.cfg
    sd = state_dict_to_diffusers(model.state_dict(), cfg)
    sd[POS_EMBED_KEY] = model.x_embedder.pos_embed.detach().clone().unsqueeze(0)  # (1, M*M, D)
    with torch.device("meta"):
        theirs = SD3Transformer2DModel(**config_to_diffusers(cfg))
    theirs.load_state_dict(sd, strict=True, assign=True)
    return theirs


POS_TABLE_ATOL = 1e-6
"""How closely a float32 stored position table must match ours. A table stored in a narrower dtype (releases
store bf16 or fp16) may differ by that dtype's rounding; another layout's table differs by O(1) somewhere."""


def check_pos_table(table: torch.Tensor, stored: torch.Tensor) -> None:
    """Raise unless diffusers' stored position table `stored` (1, M*M, D) is our sin-cos `table` (M*M, D).

    Our model recomputes the table from the config instead of loading it, so a stored table that is not
    the config's would silently change every output.
    """
    ours = table.detach().to(stored.device).float()
    ref = stored[0].float()
    atol = max(POS_TABLE_ATOL, torch.finfo(stored.dtype).eps)
    if ours.shape != ref.shape or not torch.allclose(ours, ref, atol=atol, rtol=0):
        raise ValueError("diffusers' position table differs from the sin-cos table its config implies")


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(directory: Path) -> torch.dtype | None:
    """The one dtype of a diffusers model directory's safetensors weights (sharded or not); None when
    the weights mix dtypes or are not safetensors."""
    from diffusers.utils.constants import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME
    from safetensors import safe_open

    index = directory / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / SAFETENSORS_WEIGHTS_NAME).is_file():
        files = [SAFETENSORS_WEIGHTS_NAME]
    else:
        return None
    found = set()
    for name in files:
        with safe_open(str(directory / name), framework="pt") as f:
            found.update(f.get_slice(k).get_dtype() for k in f.keys())
    return _SAFETENSORS_DTYPES.get(found.pop()) if len(found) == 1 else None


def read_sd3_transformer(directory: str | Path) -> tuple[MMDiTConfig, dict[str, torch.Tensor]]:
    """Layout and diffusers state dict of a saved SD3Transformer2DModel, through diffusers' own
    `from_pretrained` (single file or sharded with an index), in the dtype stored on disk.

    Left to itself diffusers would upcast to float32: a needless full fp32 copy of a model of billions of
    parameters, when the caller copies into its own fp32 weights anyway. The returned dict is the only
    owner of the tensors (the module is dropped), so `iter_state_from_diffusers(..., release=True)` frees
    them one by one.
    """
    from diffusers import SD3Transformer2DModel

    directory = Path(directory)
    model = SD3Transformer2DModel.from_pretrained(directory, torch_dtype=stored_dtype(directory))
    cfg = config_from_diffusers(model.config)
    sd = model.state_dict()
    del model
    return cfg, sd
