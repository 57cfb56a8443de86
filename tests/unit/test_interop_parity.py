"""Our MMDiT computes what diffusers' SD3Transformer2DModel computes, and the weight conversion is exact."""
from __future__ import annotations

import inspect

import pytest
import torch

from mmdit_scale.interop import from_diffusers, to_diffusers
from mmdit_scale.interop.diffusers_sd3 import state_dict_to_diffusers
from mmdit_scale.interop.parity import max_rel_diff, randomise_parameters
from mmdit_scale.model import MMDiT, MMDiTConfig

diffusers = pytest.importorskip("diffusers")
SD3 = diffusers.SD3Transformer2DModel
CONFIG_KEYS = [k for k in inspect.signature(SD3.__init__).parameters if k != "self"]

REL_TOL = 1e-5
"""Forward parity in float32: max|ours - diffusers| <= REL_TOL * max|diffusers|."""

# Tiny SD3 layouts: (diffusers kwargs, latent H, W). Grids are crops of a larger table unless noted.
CASES = {
    "plain": (dict(num_layers=2, num_attention_heads=2, attention_head_dim=32), 16, 16),
    "qk_norm": (dict(num_layers=3, num_attention_heads=3, attention_head_dim=32, qk_norm="rms_norm"), 16, 16),
    "dual_attention": (dict(num_layers=3, num_attention_heads=4, attention_head_dim=32, qk_norm="rms_norm",
                            dual_attention_layers=(0, 1)), 16, 16),
    "dual_no_qk_norm": (dict(num_layers=2, num_attention_heads=2, attention_head_dim=32,
                             dual_attention_layers=(1,)), 16, 16),
    "depth_1": (dict(num_layers=1, num_attention_heads=2, attention_head_dim=32), 16, 16),
    "non_square": (dict(num_layers=2, num_attention_heads=2, attention_head_dim=48), 12, 20),
    "full_table": (dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, pos_embed_max_size=8), 16, 16),
}


def make_diffusers(overrides: dict, seed: int = 0):
    heads, head_dim = overrides["num_attention_heads"], overrides["attention_head_dim"]
    kwargs = dict(sample_size=16, patch_size=2, in_channels=8, out_channels=8, joint_attention_dim=40,
                  caption_projection_dim=heads * head_dim, pooled_projection_dim=24, pos_embed_max_size=24)
    model = SD3(**{**kwargs, **overrides})
    randomise_parameters(model, seed)
    return model


def make_inputs(model, h: int, w: int, batch: int = 2, text: int = 9, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    return (torch.randn(batch, cfg.in_channels, h, w, generator=gen), torch.rand(batch, generator=gen),
            torch.randn(batch, text, cfg.joint_attention_dim, generator=gen),
            torch.randn(batch, cfg.pooled_projection_dim, generator=gen))


def run_diffusers(model, x, t, ctx, pooled):
    return model(x, ctx, pooled, 1000 * t, return_dict=False)[0]


def assert_parity(ours: MMDiT, theirs, x, t, ctx, pooled) -> None:
    with torch.no_grad():
        ref = run_diffusers(theirs, x, t, ctx, pooled)
        out = ours(x, t, ctx, pooled)
    assert out.shape == ref.shape == x.shape
    assert ref.abs().max() > 0.1  # a real signal, not zero-init
    err = max_rel_diff(out, ref)
    assert err <= REL_TOL, f"max rel diff {err:.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_diffusers(case):
    overrides, h, w = CASES[case]
    theirs = make_diffusers(overrides)
    ours = from_diffusers(theirs)
    assert_parity(ours, theirs, *make_inputs(theirs, h, w))


@pytest.mark.parametrize("case", ["plain", "dual_attention", "depth_1"])
def test_round_trip_is_exact(case):
    theirs = make_diffusers(CASES[case][0], seed=3)
    back = to_diffusers(from_diffusers(theirs))
    before, after = theirs.state_dict(), back.state_dict()
    assert list(before) == list(after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert {k: back.config[k] for k in CONFIG_KEYS} == {k: theirs.config[k] for k in CONFIG_KEYS}


def test_gradients_match_diffusers():
    """Training parity: the same loss gives the same parameter gradients (mapped to diffusers' layout)."""
    theirs = make_diffusers(CASES["dual_attention"][0], seed=5)
    ours = from_diffusers(theirs)
    x, t, ctx, pooled = make_inputs(theirs, 16, 12)
    target = torch.randn_like(x)
    (ours(x, t, ctx, pooled) - target).square().mean().backward()
    (run_diffusers(theirs, x, t, ctx, pooled) - target).square().mean().backward()
    ours_grads = state_dict_to_diffusers({n: p.grad for n, p in ours.named_parameters()}, ours.cfg)
    their_grads = {n: p.grad for n, p in theirs.named_parameters()}
    assert ours_grads.keys() == their_grads.keys()
    for name, ref in their_grads.items():
        # Zero grads (the text queries of the pre-only last block feed nothing) must be zero in ours too.
        torch.testing.assert_close(ours_grads[name], ref, rtol=0, atol=1e-4 * ref.abs().max().item(), msg=name)


def test_save_pretrained_round_trip_through_files(tmp_path):
    """The real loading path: diffusers checkpoint on disk -> ours -> diffusers checkpoint on disk."""
    theirs = make_diffusers(CASES["qk_norm"][0], seed=7)
    theirs.save_pretrained(tmp_path / "src")
    loaded = SD3.from_pretrained(tmp_path / "src")
    ours = from_diffusers(loaded)
    inputs = make_inputs(loaded, 20, 16)
    assert_parity(ours, theirs, *inputs)

    to_diffusers(ours).save_pretrained(tmp_path / "out")
    reloaded = SD3.from_pretrained(tmp_path / "out")
    for key, value in theirs.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert_parity(ours, reloaded, *inputs)


def test_from_our_init_to_diffusers_outputs_zero_there_too():
    ours = MMDiT(MMDiTConfig(depth=2, hidden_size=64, num_heads=2, in_channels=4, context_dim=16, pooled_dim=8,
                             pos_embed_max_size=16, sample_size=16, qk_norm=True, dual_attention_layers=(0,)))
    theirs = to_diffusers(ours)
    assert theirs.config.qk_norm == "rms_norm" and tuple(theirs.config.dual_attention_layers) == (0,)
    out = run_diffusers(theirs, torch.randn(1, 4, 8, 8), torch.rand(1), torch.randn(1, 3, 16), torch.randn(1, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_dtype_is_preserved():
    theirs = make_diffusers(CASES["plain"][0]).to(torch.bfloat16)
    ours = from_diffusers(theirs)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert ours.x_embedder.pos_embed.dtype == torch.bfloat16


@pytest.mark.parametrize("overrides, message", [
    (dict(caption_projection_dim=32), "caption_projection_dim"),
    (dict(qk_norm="layer_norm"), "qk_norm"),
])
def test_unsupported_diffusers_layouts_raise(overrides, message):
    theirs = make_diffusers({**CASES["plain"][0], **overrides})
    with pytest.raises(ValueError, match=message):
        from_diffusers(theirs)


def test_mlp_ratio_other_than_4_cannot_be_exported():
    ours = MMDiT(MMDiTConfig(depth=1, hidden_size=64, num_heads=2, in_channels=16, context_dim=16, pooled_dim=8,
                             mlp_ratio=2.0,
                             pos_embed_max_size=8, sample_size=8))
    with pytest.raises(ValueError, match="MLP ratio"):
        to_diffusers(ours)
