"""REPA (`train.repa`): the block capture, the projector, the target grid and the alignment loss;
the config's range checks; the refusal of shards without features; the encoder width taken from the
manifest; the projector's FLOPs in plan's count."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from data_pipeline.manifest import REPA_ENCODER, EncoderInfo, Manifest
from data_pipeline.loader.synthetic import SyntheticSpec, provenance_for
from mmdit_scale.config import load_config
from mmdit_scale.model import MMDiT
from mmdit_scale.model.config import Routing
from mmdit_scale.model.repa import RepaTrainee, alignment_loss, projector_width, target_tokens
from mmdit_scale.plan.flops import REPA_PLAN_ENCODER_DIM, run_training_flops, training_flops
from mmdit_scale.plan.tokens import Tokens
from mmdit_scale.run.data_dims import check_repa, fill_from_data
from tests.unit.tiny_mmdit import CFG, inputs, randomised

TINY = ["model.in_channels=4", "model.context_dim=32", "model.pooled_dim=16", "data.resolution=64"]


def test_capturing_a_block_leaves_the_velocity_bit_for_bit_and_returns_its_image_tokens() -> None:
    model, args = randomised(), inputs()
    velocity, tokens = model(*args, capture=1)
    assert torch.equal(velocity, model(*args))
    assert tokens.shape == (3, 16, 64)
    keep = torch.arange(0, 16, 2).expand(3, 8)
    routing = Routing(ratio=0.5, start_block=1, end_block=2)
    _, routed = model(*args, keep=keep, routing=routing, capture=2)
    assert routed.shape == (3, 8, 64)  # the kept tokens, before they rejoin


def test_the_projector_and_the_blocks_up_to_block_learn_from_the_alignment_loss_alone() -> None:
    trainee = RepaTrainee(randomised(), block=1, encoder_dim=24)
    assert trainee.projector.fc1.out_features == projector_width(64) == 256  # 4 x a tiny width, not 2048
    _, projected = trainee(*inputs())
    alignment_loss(projected, torch.randn(3, 16, 24)).mean().backward()
    learned = {n for n, p in trainee.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {f"projector.fc{i}.weight" for i in (1, 2, 3)} <= learned
    for block in (0, 1):
        assert any(n.startswith(f"mmdit.blocks.{block}.x.") for n in learned), block
    assert not any(n.startswith(("mmdit.blocks.2.", "mmdit.blocks.3.", "mmdit.final_layer")) for n in learned)


def test_the_alignment_loss_falls_when_the_tiny_model_trains_on_it() -> None:
    torch.manual_seed(0)
    trainee = RepaTrainee(MMDiT(CFG), block=1, encoder_dim=24)
    x, t, ctx, pooled = inputs()
    # A target the image determines: a fixed random map of each token's latent patch.
    patches = x.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(3, 16, 16)  # (B, N, C*p*p)
    target = patches @ torch.randn(16, 24, generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        _, projected = trainee(x, t, ctx, pooled)
        loss = alignment_loss(projected, target).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_encoder_features_are_resized_to_the_token_grid_and_taken_at_the_kept_tokens() -> None:
    features = torch.randn(2, 16, 5)  # a 4x4 encoder grid
    assert torch.equal(target_tokens(features, 4, 4), features)
    assert target_tokens(features, 8, 6).shape == (2, 48, 5)
    const = torch.ones(2, 16, 5)
    assert torch.allclose(target_tokens(const, 2, 2), torch.ones(2, 4, 5))  # downsampling averages
    keep = torch.tensor([[0, 5], [3, 15]])
    assert torch.equal(target_tokens(features, 4, 4, keep), torch.stack([features[0, [0, 5]], features[1, [3, 15]]]))
    with pytest.raises(ValueError, match="square"):
        target_tokens(torch.randn(2, 15, 5), 4, 4)
    same = torch.randn(2, 3, 5)
    assert torch.allclose(alignment_loss(same, 2 * same), torch.zeros(2), atol=1e-6)
    assert torch.allclose(alignment_loss(same, -same), torch.full((2,), 2.0))


def test_repa_config_is_off_by_default_and_its_block_must_lie_in_the_model() -> None:
    cfg = load_config("recipes/tiny.yaml", TINY)
    assert not cfg.train.repa.enabled and cfg.train.repa.weight == 0.0
    on = load_config("recipes/tiny.yaml", TINY + ["train.repa={weight: 0.5}"])
    assert on.train.repa.block_of(on.model.depth) == on.model.depth // 3
    with pytest.raises(Exception, match=r"train\.repa\.block=2 .*0\.\.1"):
        load_config("recipes/tiny.yaml", TINY + ["train.repa={weight: 0.5, block: 2}"])
    with pytest.raises(Exception, match=r"train\.repa\.weight"):
        load_config("recipes/tiny.yaml", TINY + ["train.repa.weight=-0.1"])


def test_repa_on_shards_without_features_is_refused_naming_the_key() -> None:
    provenance = provenance_for(SyntheticSpec())
    cfg = load_config("recipes/tiny.yaml", TINY + ["train.repa={weight: 0.5, block: 0}"])
    with pytest.raises(ValueError, match=r"train\.repa\.weight=0\.5 .*--repa-encoder"):
        check_repa(cfg, [("plain", Manifest(provenance=provenance))])
    provenance.encoders[REPA_ENCODER] = EncoderInfo(kind="vision", model_dir="/enc", weights_sha256="ab",
                                                    dtype="fp32", dims={"hidden": 24, "grid": 4, "image_size": 32})
    check_repa(cfg, [("with features", Manifest(provenance=provenance))])
    check_repa(load_config("recipes/tiny.yaml", TINY), [("plain", Manifest(provenance=provenance_for(SyntheticSpec())))])


@pytest.mark.parametrize("block, routing", [(0, None), (1, Routing(ratio=0.5, start_block=1, end_block=2)),
                                            (3, Routing(ratio=0.5, start_block=1, end_block=2))])
def test_plan_counts_the_projector_as_torch_counts_it(block: int, routing: Routing | None) -> None:
    """The trainee's forward and backward under torch's FLOP counter equal plan's count with the
    projector, routed or not (a routed block's projector sees only the kept tokens)."""
    trainee = RepaTrainee(randomised(), block=block, encoder_dim=24)
    x, t, context, pooled = inputs()
    n = (x.shape[-1] // CFG.patch_size) ** 2  # 16 image tokens
    keep = None
    if routing is not None:
        keep = torch.arange(routing.kept(n)).expand(x.shape[0], -1)  # (B, K)
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        velocity, projected = trainee(x, t, context, pooled, keep=keep, routing=routing)
        (velocity.square().mean() + projected.square().mean()).backward()
    expected = training_flops(CFG, Tokens(image=n, text=context.shape[1]), routing, repa=(block, 24)).training
    assert expected == pytest.approx(counter.get_total_flops() / x.shape[0], rel=0.02)
    without = training_flops(CFG, Tokens(image=n, text=context.shape[1]), routing).training
    assert expected > 1.1 * without  # the projector (64 -> 256 -> 256 -> 24) is a real share of a tiny model


def test_the_encoder_width_comes_from_the_manifest_and_a_wrong_one_is_refused(tmp_path) -> None:
    from tests.unit.test_model_dims import shards

    data = shards(tmp_path, "demo")
    manifest = Manifest.load(data)
    manifest.provenance.encoders[REPA_ENCODER] = EncoderInfo(kind="vision", model_dir="/enc", weights_sha256="ab",
                                                             dtype="fp32", dims={"hidden": 24, "grid": 4,
                                                                                 "image_size": 32})
    manifest.save(data / "manifest.json")
    on = [f"data.train={data}", "train.repa={weight: 0.5, block: 0}"]
    cfg, note = fill_from_data(load_config("recipes/tiny.yaml", on))
    assert cfg.train.repa.encoder_dim == 24 and "train.repa.encoder_dim=24" in note
    tokens = Tokens(image=64, text=10)
    assert run_training_flops(cfg, tokens).training == training_flops(cfg.model, tokens, repa=(0, 24)).training
    with pytest.raises(ValueError, match=r"train\.repa\.encoder_dim=32 disagrees with the manifest .* 24 wide"):
        fill_from_data(load_config("recipes/tiny.yaml", on + ["train.repa.encoder_dim=32"]))
    off, _ = fill_from_data(load_config("recipes/tiny.yaml", [f"data.train={data}"]))
    assert off.train.repa.encoder_dim is None
    assert run_training_flops(off, tokens).training == training_flops(off.model, tokens).training
    # plan without shards: DINOv2-B's width, REPA's encoder
    planned = replace(cfg, train=replace(cfg.train, repa=replace(cfg.train.repa, encoder_dim=None)))
    assert run_training_flops(planned, tokens).training == training_flops(
        cfg.model, tokens, repa=(0, REPA_PLAN_ENCODER_DIM)).training
