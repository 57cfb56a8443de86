"""`train.init_from` from a diffusers SD3 transformer directory (how released SD3 weights are
fine-tuned), written by diffusers' own `save_pretrained` and read through its `from_pretrained`;
and the clear errors for sources of no accepted kind. Checkpoint sources: test_train_checkpoint.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdit_scale.config import RunConfig
from mmdit_scale.interop.diffusers_sd3 import read_sd3_transformer, state_dict_from_diffusers
from mmdit_scale.interop.parity import max_rel_diff, randomise_parameters
from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.run import checkpoints, layout
from mmdit_scale.train.init_from import check_init_source, load_initial_weights

diffusers = pytest.importorskip("diffusers")

REL_TOL = 1e-5
"""Forward parity in float32: max|ours - diffusers| <= REL_TOL * max|diffusers|."""
QK_NORMS = ("q_norm.weight", "k_norm.weight")


def make_sd3(seed: int = 0, **overrides) -> "diffusers.SD3Transformer2DModel":
    """A tiny SD3 transformer with every weight random (adaLN-Zero would make outputs 0 otherwise)."""
    kwargs = dict(sample_size=16, patch_size=2, in_channels=8, out_channels=8, num_layers=2, num_attention_heads=2,
                  attention_head_dim=32, joint_attention_dim=40, caption_projection_dim=64,
                  pooled_projection_dim=24, pos_embed_max_size=24)
    model = diffusers.SD3Transformer2DModel(**{**kwargs, **overrides})
    randomise_parameters(model, seed)
    return model.eval()


def recipe_model(**overrides) -> MMDiT:
    """The recipe's model for make_sd3's layout, freshly initialised from another seed."""
    kwargs = dict(depth=2, hidden_size=64, num_heads=2, patch_size=2, in_channels=8, context_dim=40, pooled_dim=24,
                  pos_embed_max_size=24, sample_size=16)
    torch.manual_seed(123)
    return MMDiT(MMDiTConfig(**{**kwargs, **overrides}))


def assert_same_outputs(ours: MMDiT, theirs) -> None:
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 8, 16, 12, generator=gen), torch.rand(2, generator=gen)
    ctx, pooled = torch.randn(2, 7, 40, generator=gen), torch.randn(2, 24, generator=gen)
    with torch.no_grad():
        ref = theirs(x, ctx, pooled, 1000 * t, return_dict=False)[0]
        out = ours(x, t, ctx, pooled)
    assert ref.abs().max() > 0.1
    assert max_rel_diff(out, ref) <= REL_TOL


@pytest.mark.parametrize("layout, save", [
    ("sd3_medium", {}),
    ("sd3_medium", {"max_shard_size": "100KB"}),
    ("sd35_medium", {}),
])
def test_diffusers_dir_gives_the_diffusers_model_outputs(tmp_path, layout, save):
    sd35 = layout == "sd35_medium"
    extra = dict(qk_norm="rms_norm", dual_attention_layers=(0,)) if sd35 else {}
    theirs = make_sd3(**extra)
    theirs.save_pretrained(tmp_path, **save)
    if save:
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("*.safetensors"))) > 1
    ours = recipe_model(qk_norm=True, dual_attention_layers=(0,)) if sd35 else recipe_model()
    lines = load_initial_weights(ours, str(tmp_path))
    assert lines == [f"init_from: {len(ours.state_dict())} tensors from diffusers SD3Transformer2DModel {tmp_path} "
                     "(float32 on disk, copied into float32 weights)"]
    assert_same_outputs(ours, theirs)


def test_bf16_weights_load_as_bf16_and_are_copied_exactly_into_fp32(tmp_path):
    theirs = make_sd3(seed=2).to(torch.bfloat16)
    theirs.save_pretrained(tmp_path)
    # No fp32 upcast of the whole source on the way (a billion-parameter model would pay it in memory).
    _, loaded = read_sd3_transformer(tmp_path)
    assert {v.dtype for v in loaded.values()} == {torch.bfloat16}

    ours = recipe_model()
    lines = load_initial_weights(ours, str(tmp_path))
    assert "(bfloat16 on disk, copied into float32 weights)" in lines[0]
    assert {p.dtype for p in ours.parameters()} == {torch.float32}
    expected = state_dict_from_diffusers({k: v.float() for k, v in theirs.state_dict().items()}, ours.cfg)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # diffusers in fp32 with the same weights; its position table is the exact one, as ours always is
    # (the bf16 file stores a rounded table, which the parity check accepts but our model does not use).
    reference = make_sd3(seed=2)
    rounded = {k: v.float() for k, v in theirs.state_dict().items() if k != "pos_embed.pos_embed"}
    assert not reference.load_state_dict(rounded, strict=False).unexpected_keys
    assert_same_outputs(ours, reference)


def test_a_source_without_qk_norm_starts_the_new_scales_at_one(tmp_path):
    """SD3 Medium (no QK-norm) into a QK-norm model: the paper's recipe for high-resolution finetuning."""
    theirs = make_sd3(seed=4)
    theirs.save_pretrained(tmp_path)
    ours = recipe_model(qk_norm=True)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith(QK_NORMS):
                p.fill_(3.0)
    lines = load_initial_weights(ours, str(tmp_path))
    # 2 blocks x 2 streams x (q, k)
    assert lines[1] == f"init_from: {tmp_path} has no QK-norm weights; 8 new QK-norm scales start at one " \
                       "(model.qk_norm=true)"
    converted = state_dict_from_diffusers(theirs.state_dict(), recipe_model().cfg)
    norms = 0
    for key, value in ours.state_dict().items():
        if key.endswith(QK_NORMS):
            norms += 1
            assert torch.equal(value, torch.ones_like(value)), key
        else:
            assert torch.equal(value, converted[key]), key
    assert norms == 8


@pytest.mark.parametrize("source, recipe, messages", [
    ({}, dict(depth=3, context_dim=48),
     ["depth: recipe 3, diffusers 2 (num_layers)", "context_dim: recipe 48, diffusers 40 (joint_attention_dim)"]),
    (dict(qk_norm="rms_norm"), {}, ["qk_norm: recipe False, diffusers True"]),
    ({}, dict(patch_size=4), ["patch_size: recipe 4, diffusers 2"]),
])
def test_a_layout_mismatch_names_each_field_and_changes_nothing(tmp_path, source, recipe, messages):
    make_sd3(**source).save_pretrained(tmp_path)
    ours = recipe_model(**recipe)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_initial_weights(ours, str(tmp_path))
    text = str(err.value)
    for message in messages:
        assert message in text
    assert text.count(": recipe ") == len(messages), text
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())


def test_a_source_with_another_position_table_loads_and_the_table_is_recomputed(tmp_path):
    """As from a checkpoint source: the table is a buffer built from the recipe's config, so a
    fine-tune may enlarge it (here 24 -> 48 per side, sample_size scaled to keep the spacing)."""
    theirs = make_sd3(seed=4)
    theirs.save_pretrained(tmp_path)
    ours = recipe_model(pos_embed_max_size=48, sample_size=32)
    lines = load_initial_weights(ours, str(tmp_path))
    assert lines[-1] == "init_from: the position table is recomputed for pos_embed_max_size 48 (the source's was 24)"
    same = recipe_model()
    load_initial_weights(same, str(tmp_path))
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in ours.state_dict().items() if "pos_embed" not in k)
    assert ours.x_embedder.pos_embed.shape[0] == 48 * 48


def test_a_stored_position_table_other_than_the_configs_is_refused(tmp_path):
    """Ours recomputes the table from the config; a file with another one would change every output."""
    theirs = make_sd3()
    with torch.no_grad():
        theirs.pos_embed.pos_embed.mul_(0.9)
    theirs.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="position table differs"):
        load_initial_weights(recipe_model(), str(tmp_path))


def test_a_pipeline_root_uses_its_transformer_subfolder(tmp_path):
    theirs = make_sd3(seed=6)
    theirs.save_pretrained(tmp_path / "transformer")
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}))
    ours = recipe_model()
    lines = load_initial_weights(ours, str(tmp_path))
    assert lines[0] == f"init_from: {tmp_path} is a diffusers pipeline; using its transformer/ subfolder"
    assert f"from diffusers SD3Transformer2DModel {tmp_path / 'transformer'} " in lines[1]
    assert_same_outputs(ours, theirs)


def config_with(init_from: str) -> RunConfig:
    cfg = RunConfig()
    cfg.train.init_from = init_from
    return cfg


def flux_dir(path: Path) -> Path:
    (path / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "does not exist; expected a run dir"),
    (lambda p: p, "is none of the accepted kinds: a run dir"),
    (flux_dir, "describes a diffusers FluxTransformer2DModel, not an SD3Transformer2DModel"),
])
def test_a_source_of_no_accepted_kind_names_the_path_and_the_kinds(tmp_path, make, message):
    path = make(tmp_path)
    for call in (lambda: check_init_source(config_with(str(path))),
                 lambda: load_initial_weights(recipe_model(), str(path))):
        with pytest.raises(ValueError) as err:
            call()
        text = str(err.value)
        assert f"train.init_from={path}" in text and message in text
        assert "checkpoint dir" in text and "diffusers SD3Transformer2DModel dir" in text


def test_check_init_source_knows_all_three_kinds_without_torch(tmp_path):
    """The launcher calls it before the ranks start: it must not pay for torch."""
    run = tmp_path / "run"
    ckpt = run / layout.CHECKPOINTS / layout.checkpoint_name(5)
    ckpt.mkdir(parents=True)
    (ckpt / layout.STATE_FILE).write_text(json.dumps({"step": 5}))
    checkpoints.write_latest(ckpt.parent, ckpt.name)
    make_sd3().save_pretrained(tmp_path / "pipe" / "transformer")
    script = f"""
import sys
from pathlib import Path
from mmdit_scale.config import RunConfig
from mmdit_scale.train.init_from import check_init_source
cfg = RunConfig()
for source in ("run", "run/checkpoints/step_0000005", "pipe", "pipe/transformer"):
    cfg.train.init_from = source
    found = check_init_source(cfg, Path({str(tmp_path)!r}))
    print(found.kind, found.path.relative_to({str(tmp_path)!r}))
cfg.train.init_from = ""
print(check_init_source(cfg), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert out[:5] == ["checkpoint run/checkpoints/step_0000005", "checkpoint run/checkpoints/step_0000005",
                       "diffusers pipe/transformer", "diffusers pipe/transformer", "None False"]
