"""The SD3 autoencoder path: a tiny diffusers AutoencoderKL with SD3's latent layout, saved and
loaded back through an encoders YAML, with T5 absent; and the provenance check that keeps its
shards apart from the demo's."""
from pathlib import Path

import pytest
import torch
import webdataset as wds

from data_pipeline.demo_data import write_demo_data
from data_pipeline.format import decode_sample
from data_pipeline.manifest import Manifest, check_against_model, compare_provenance
from data_pipeline.prepare import PrepareOptions, run_prepare
from data_pipeline.transforms import decode_image, place
from data_pipeline.encode_shard import pixels_to_tensor


@pytest.fixture
def tiny_vae(tmp_path) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(latent_channels=16, block_out_channels=(32,) * 4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=1.5305, shift_factor=0.0609)
    vae.save_pretrained(tmp_path / "models" / "vae")
    return tmp_path / "models" / "vae"


def test_sd3_vae_through_encoders_yaml_without_t5(demo_encoders, tiny_vae, tmp_path):
    from diffusers import AutoencoderKL

    demo_dir = Path(demo_encoders).parent
    yaml_path = tmp_path / "models" / "encoders.yaml"
    yaml_path.write_text(
        "autoencoder: {kind: sd3_vae, path: vae}\n"  # relative to this YAML
        f"clip_l: {{path: {demo_dir / 'clip_l'}}}\n"
        f"clip_g: {{path: {demo_dir / 'clip_g'}}}\n"
        "t5: null\n"
        "batch_size: 2\n")
    write_demo_data(tmp_path / "in", count=3)
    report = run_prepare(PrepareOptions(input=tmp_path / "in", output=tmp_path / "out", encoders=str(yaml_path),
                                        resolution=64, samples_per_shard=8, progress=False))
    assert report.samples == 3
    manifest = Manifest.load(tmp_path / "out")
    prov = manifest.provenance
    assert sorted(prov.encoders) == ["autoencoder", "clip_g", "clip_l"]
    ae = prov.encoders["autoencoder"]
    assert (ae.kind, ae.model_dir, ae.dims) == ("sd3_vae", str(tiny_vae), {"channels": 16, "factor": 8})
    assert len(ae.weights_sha256) == 64
    assert (prov.latent.channels, prov.latent.factor, prov.latent.scale, prov.latent.shift) == (16, 8, 1.5305, 0.0609)
    assert check_against_model(prov, in_channels=16, context_dim=64, pooled_dim=64, patch_size=2) == []
    assert prov.text_layout().seq_len == 77

    raw = next(iter(wds.WebDataset(str(tmp_path / "out" / manifest.shards[0].name), shardshuffle=False)))
    sample = decode_sample(raw)
    assert sample.tensors["latent"].shape == (16, 8, 8)
    assert not any(".t5" in name for name in sample.tensors)
    vae = AutoencoderKL.from_pretrained(tiny_vae)
    image = pixels_to_tensor(place(decode_image((tmp_path / "in" / f"{sample.key}.png").read_bytes()), 64).pixels)
    with torch.no_grad():
        z = vae.encode(image[None]).latent_dist.mode()[0]  # (16, 8, 8)
    torch.testing.assert_close(sample.tensors["latent"].float(), ((z - 0.0609) * 1.5305), rtol=2**-8, atol=1e-5)

    run_prepare(PrepareOptions(input=tmp_path / "in", output=tmp_path / "demo_out", encoders=demo_encoders,
                               resolution=64, samples_per_shard=8, progress=False))
    diff = compare_provenance(Manifest.load(tmp_path / "demo_out").provenance, prov)
    assert "encoders.autoencoder.kind: 'pixel' vs 'sd3_vae'" in diff
    assert "latent.channels: 12 vs 16" in diff
    assert any(line.startswith("encoders.t5: ") and line.endswith("in first, absent in second") for line in diff)
