"""`prepare --repa-encoder`: a tiny random DINOv2 saved locally and loaded through from_pretrained;
its features land in the shards, the manifest names it, the loader yields them, mismatches are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import webdataset as wds

from data_pipeline.demo_data import write_demo_data
from data_pipeline.encode_shard import pixels_to_tensor
from data_pipeline.encoders.config import VisionEncoderSpec
from data_pipeline.encoders.vision import VisionEncoder
from data_pipeline.format import REPA_KEY, decode_sample
from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.locate import check_same_provenance, read_manifests
from data_pipeline.manifest import REPA_ENCODER, Manifest
from data_pipeline.prepare import PrepareOptions, run_prepare
from data_pipeline.transforms import decode_image, place


def tiny_dinov2(out: Path, seed: int) -> str:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(image_size=28, patch_size=7, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                          mlp_ratio=2)
    Dinov2Model(config).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def prepared(demo_encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("repa")
    write_demo_data(root / "images", count=12, seed=0)
    encoder = tiny_dinov2(root / "dinov2", seed=0)
    out = root / "shards"
    run_prepare(PrepareOptions(input=root / "images", output=out, encoders=demo_encoders, repa_encoder=encoder,
                               resolution=32, samples_per_shard=8, progress=False))
    return root, encoder, out


def test_features_of_the_clean_image_are_stored_and_the_manifest_names_the_encoder(prepared):
    root, encoder, out = prepared
    info = Manifest.load(out).provenance.encoders[REPA_ENCODER]
    assert (info.kind, info.model_dir, info.dims) == ("vision", encoder, {"hidden": 24, "grid": 4, "image_size": 28})
    assert Manifest.load(out).provenance.repa_features() == (4, 24)
    vision = VisionEncoder(VisionEncoderSpec(encoder), torch.device("cpu"), torch.float32)
    raw = next(iter(wds.WebDataset(str(out / Manifest.load(out).shards[0].name), shardshuffle=False)))
    sample = decode_sample(raw)
    assert sample.tensors[REPA_KEY].shape == (16, 24) and sample.tensors[REPA_KEY].dtype == torch.bfloat16
    image = next(p for p in (root / "images").rglob("*.png") if p.stem == sample.key.split("/")[-1])
    pixels = place(decode_image(image.read_bytes()), 32, None).pixels
    direct = vision.encode(pixels_to_tensor(pixels)[None])[0]  # (16, 24)
    assert torch.equal(sample.tensors[REPA_KEY], direct.to(torch.bfloat16))


def test_the_loader_yields_repa_features_only_when_asked(prepared):
    _, _, out = prepared
    batch = next(iter(ShardLoader(str(out), LoaderConfig(batch_size=4, repa_features=True))))
    assert batch["repa_features"].shape == (4, 16, 24) and batch["repa_features"].abs().sum() > 0
    plain = next(iter(ShardLoader(str(out), LoaderConfig(batch_size=4))))
    assert "repa_features" not in plain and torch.equal(plain["latent"], batch["latent"])
    for workers in (1,):  # worker processes collate into shared slots: the features travel there too
        shared = next(iter(ShardLoader(str(out), LoaderConfig(batch_size=4, repa_features=True, num_workers=workers))))
        assert torch.equal(shared["repa_features"], batch["repa_features"])


def test_datasets_of_different_repa_encoders_or_none_are_refused(prepared, demo_encoders, tmp_path):
    root, _, out = prepared
    other = tmp_path / "other"
    run_prepare(PrepareOptions(input=root / "images", output=other, encoders=demo_encoders,
                               repa_encoder=tiny_dinov2(tmp_path / "dinov2b", seed=1), resolution=32,
                               samples_per_shard=8, progress=False))
    with pytest.raises(ValueError, match=r"encoders\.repa\.weights_sha256"):
        check_same_provenance(read_manifests([str(out), str(other)]))
    plain = tmp_path / "plain"
    run_prepare(PrepareOptions(input=root / "images", output=plain, encoders=demo_encoders, resolution=32,
                               samples_per_shard=8, progress=False))
    with pytest.raises(ValueError, match=r"encoders\.repa"):
        check_same_provenance(read_manifests([str(out), str(plain)]))
    with pytest.raises(ValueError, match="--repa-encoder"):
        ShardLoader(str(plain), LoaderConfig(batch_size=4, repa_features=True))


def test_the_demo_encoder_gives_the_demo_models_token_grid(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "images", count=4, seed=0)
    run_prepare(PrepareOptions(input=tmp_path / "images", output=tmp_path / "shards", encoders=demo_encoders,
                               repa_encoder="demo", resolution=32, samples_per_shard=8, progress=False))
    assert Manifest.load(tmp_path / "shards").provenance.repa_features() == (8, 64)  # 8x8 = the demo's tokens
