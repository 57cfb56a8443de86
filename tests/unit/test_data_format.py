"""The shard sample format, text assembly and manifest/provenance helpers (no encoders needed)."""
import os
import json

import pytest
import torch

from data_pipeline.format import (
    META_EXT, TENSORS_EXT, Sample, assemble_text, decode_meta, decode_sample, encode_sample, sanitize_key,
    shard_name, text_key)
from data_pipeline.layout import Placement, TextLayout
from data_pipeline.manifest import (EncoderInfo, LatentInfo, Manifest, Provenance, ShardInfo,
                                    check_against_model, compare_provenance, merge_parts)

SD3 = TextLayout(clip_l=768, clip_l_pooled=768, clip_g=1280, clip_g_pooled=1280, t5=4096)


def _text_tensors(layout: TextLayout, variant: str = "orig", gen: int = 0) -> dict:
    g = torch.Generator().manual_seed(gen)
    out = {}
    for enc in ("clip_l", "clip_g", "t5"):
        width = getattr(layout, enc)
        if width:
            out[text_key(variant, enc)] = torch.randn(77, width, generator=g)
        if enc != "t5" and getattr(layout, enc + "_pooled"):
            out[text_key(variant, enc, pooled=True)] = torch.randn(getattr(layout, enc + "_pooled"), generator=g)
    return out


def test_encode_decode_round_trip_is_exact_in_storage_dtype():
    tensors = {"latent": torch.randn(16, 4, 6), **_text_tensors(TextLayout(8, 8, 8, 8, 16))}
    sample = Sample(key="dir/img_001", tensors=tensors, captions={"orig": "a cat", "syn": "a small grey cat"},
                    original_size=(480, 640), crop_box=(80, 0, 560, 480), size=(32, 48))
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        members = encode_sample(sample, dtype)
        assert set(members) == {TENSORS_EXT, META_EXT}
        back = decode_sample({"__key__": "dir/img_001", **members})
        assert back.key == "dir/img_001" and back.variants == ("orig", "syn")
        assert back.captions == sample.captions
        assert (back.original_size, back.crop_box, back.size) == ((480, 640), (80, 0, 560, 480), (32, 48))
        assert set(back.tensors) == set(tensors)
        for name, t in tensors.items():
            assert back.tensors[name].dtype == torch_dtype
            assert torch.equal(back.tensors[name], t.to(torch_dtype)), name
        assert members == encode_sample(sample, dtype)  # same input, same bytes
    meta = json.loads(encode_sample(sample)[META_EXT])
    assert meta == {"key": "dir/img_001", "captions": sample.captions, "original_size": [480, 640],
                    "crop_box": [80, 0, 560, 480], "size": [32, 48]}


def test_decode_rejects_malformed_samples_with_value_error():
    good = encode_sample(Sample("k", {"latent": torch.zeros(1, 2, 2)}, {"orig": "x"}, (2, 2), (0, 0, 2, 2), (2, 2)))
    with pytest.raises(ValueError, match="lacks member"):
        decode_sample({META_EXT: good[META_EXT]})
    with pytest.raises(ValueError, match="malformed"):
        decode_sample({**good, TENSORS_EXT: good[TENSORS_EXT][:40]})
    with pytest.raises(ValueError, match="malformed"):
        decode_sample({**good, META_EXT: b"\xff{"})


def test_assemble_text_matches_sd3_layout_and_drops_each_encoder_independently():
    t = _text_tensors(SD3)
    context, pooled = assemble_text(t, "orig", SD3)
    assert context.shape == (154, 4096) and pooled.shape == (2048,)
    assert torch.equal(context[:77, :768], t["orig.clip_l"])
    assert torch.equal(context[:77, 768:2048], t["orig.clip_g"])
    assert torch.count_nonzero(context[:77, 2048:]) == 0  # zero-padded to T5's width
    assert torch.equal(context[77:], t["orig.t5"])
    assert torch.equal(pooled, torch.cat([t["orig.clip_l_pooled"], t["orig.clip_g_pooled"]]))

    t["orig.clip_g"][0, 0] = float("nan")  # a dropped part must not leak NaN through 0 * NaN
    context, pooled = assemble_text(t, "orig", SD3, keep={"clip_g": False})
    assert torch.count_nonzero(context[:77, 768:]) == 0 and torch.count_nonzero(pooled[768:]) == 0
    assert torch.equal(context[:77, :768], t["orig.clip_l"]) and torch.equal(context[77:], t["orig.t5"])
    assert torch.equal(pooled[:768], t["orig.clip_l_pooled"])


def test_assemble_text_batched_mask_and_absent_t5():
    layout = TextLayout(clip_l=8, clip_l_pooled=4, clip_g=8, clip_g_pooled=4, t5=24)
    batch = {k: torch.stack([v, v + 1, v + 2]) for k, v in _text_tensors(layout, "syn").items()}
    keep_t5 = torch.tensor([True, False, True])
    context, pooled = assemble_text(batch, "syn", layout, keep={"t5": keep_t5})
    assert context.shape == (3, 154, 24) and pooled.shape == (3, 8)
    assert torch.count_nonzero(context[1, 77:]) == 0
    assert torch.equal(context[2, 77:], batch["syn.t5"][2])
    no_t5 = TextLayout(clip_l=8, clip_l_pooled=4, clip_g=8, clip_g_pooled=4, context_dim=32)
    context, _ = assemble_text(batch, "syn", no_t5)
    assert context.shape == (3, 77, 32) and torch.count_nonzero(context[..., 16:]) == 0
    with pytest.raises(KeyError, match="orig.clip_l"):
        assemble_text(batch, "orig", layout)
    with pytest.raises(ValueError, match="unknown encoders"):
        assemble_text(batch, "syn", layout, keep={"clip": False})


PLACEMENT_CASES = {
    "sd3": (SD3, {"clip_l": Placement((0, 77), (0, 768), (0, 768)),
                  "clip_g": Placement((0, 77), (768, 2048), (768, 2048)),
                  "t5": Placement((77, 154), (0, 4096))}),
    "demo": (TextLayout(clip_l=32, clip_l_pooled=32, clip_g=32, clip_g_pooled=32, t5=64),
             {"clip_l": Placement((0, 77), (0, 32), (0, 32)), "clip_g": Placement((0, 77), (32, 64), (32, 64)),
              "t5": Placement((77, 154), (0, 64))}),
    "no_t5": (TextLayout(clip_l=8, clip_l_pooled=4, clip_g=8, clip_g_pooled=4, context_dim=32),
              {"clip_l": Placement((0, 77), (0, 8), (0, 4)), "clip_g": Placement((0, 77), (8, 16), (4, 8))}),
    "t5_only": (TextLayout(t5=24, tokens=5), {"t5": Placement((0, 5), (0, 24))}),
}


@pytest.mark.parametrize("case", sorted(PLACEMENT_CASES))
def test_assemble_text_is_the_stored_blocks_written_at_their_placements(case):
    layout, expected = PLACEMENT_CASES[case]
    assert layout.placements() == expected
    t = _text_tensors(layout, "syn", gen=1)
    t = {k: v[:layout.tokens] if v.dim() == 2 else v for k, v in t.items()}  # hidden states: tokens rows
    for keep in ({}, {"clip_g": False, "t5": False}):
        context, pooled = assemble_text(t, "syn", layout, keep)
        want_ctx = torch.zeros(layout.seq_len, layout.width)
        want_pooled = torch.zeros(layout.pooled_dim)
        for enc, at in expected.items():
            if keep.get(enc, True):
                want_ctx[at.rows[0]:at.rows[1], at.cols[0]:at.cols[1]] = t[text_key("syn", enc)]
                if at.pooled:
                    want_pooled[at.pooled[0]:at.pooled[1]] = t[text_key("syn", enc, pooled=True)]
        assert torch.equal(context, want_ctx) and torch.equal(pooled, want_pooled)


def test_layout_refuses_what_it_cannot_place():
    with pytest.raises(ValueError, match="cannot hold"):
        TextLayout(clip_l=8, clip_g=8, t5=24, context_dim=32).placements()
    with pytest.raises(ValueError, match="cannot hold"):
        TextLayout(clip_l=8, clip_g=8, context_dim=12).placements()
    with pytest.raises(ValueError, match="clip_g has a pooled width but no hidden width"):
        TextLayout(clip_l=8, clip_l_pooled=8, clip_g_pooled=8)


def test_decode_meta_is_the_json_half_of_decode_sample():
    sample = Sample("k", {"latent": torch.zeros(1, 2, 2)}, {"orig": "x", "syn": "y"}, (5, 7), (1, 0, 6, 5), (4, 4),
                    extra={"aesthetic": 6.5})
    meta = decode_meta(encode_sample(sample)[META_EXT])
    assert meta == sample.meta
    assert (meta.key, meta.captions, meta.original_size, meta.crop_box, meta.size, meta.extra) == \
        ("k", {"orig": "x", "syn": "y"}, (5, 7), (1, 0, 6, 5), (4, 4), {"aesthetic": 6.5})
    for raw in (b"[", b'{"key": "k"}', b'{"key": "k", "captions": {}, "original_size": [1], "crop_box": "ab"}'):
        with pytest.raises(ValueError, match="malformed sample metadata"):
            decode_meta(raw)


def test_names_and_keys():
    assert shard_name(42) == "shard-000042.tar"
    assert shard_name(42, part=3) == "shard-00003-000042.tar"
    assert sanitize_key("./a.b/c d.e") == "a_b/c_d_e"
    assert text_key("syn", "clip_g", pooled=True) == "syn.clip_g_pooled"
    with pytest.raises(ValueError):
        text_key("orig", "t5", pooled=True)


def _provenance(t5: bool = True, clip_sha: str = "aa", model_dir: str = "/m/clip_l", channels: int = 16) -> Provenance:
    enc = {
        "autoencoder": EncoderInfo("sd3_vae", "/m/vae", "vv", "bf16", {"channels": channels, "factor": 8}),
        "clip_l": EncoderInfo("clip", model_dir, clip_sha, "bf16", {"hidden": 768, "pooled": 768}, 77, "tl"),
        "clip_g": EncoderInfo("clip", "/m/clip_g", "gg", "bf16", {"hidden": 1280, "pooled": 1280}, 77, "tg"),
    }
    if t5:
        enc["t5"] = EncoderInfo("t5", "/m/t5", "tt", "bf16", {"hidden": 4096}, 77, "ts")
    return Provenance(encoders=enc, latent=LatentInfo(channels, 8, 1.5305, 0.0609), resolution=256)


def test_compare_provenance_names_each_difference_and_ignores_relocated_weights():
    base = _provenance()
    assert compare_provenance(base, _provenance(model_dir="/elsewhere/clip_l")) == []
    diff = compare_provenance(base, _provenance(t5=False, clip_sha="bb"))
    assert diff == ["encoders.clip_l.weights_sha256: 'aa' vs 'bb'",
                    "encoders.t5: " + repr(base.to_dict()["encoders"]["t5"]) + " in first, absent in second"]
    other = _provenance()
    other.resolution, other.tensor_dtype = 512, "fp16"
    assert compare_provenance(base, other) == ["resolution: 256 vs 512", "tensor_dtype: 'bf16' vs 'fp16'"]
    assert compare_provenance(base, other, ignore=("resolution",)) == ["tensor_dtype: 'bf16' vs 'fp16'"]


def test_check_against_model_names_the_mismatch():
    prov = _provenance()
    assert check_against_model(prov, in_channels=16, context_dim=4096, pooled_dim=2048, patch_size=2) == []
    problems = check_against_model(prov, in_channels=4, context_dim=1024, pooled_dim=768, patch_size=3)
    assert problems == [
        "latent has 16 channels but the model's in_channels is 4",
        "T5 hidden width 4096 != model context_dim 1024",
        "CLIP-L + CLIP-G width 2048 does not fit model context_dim 1024",
        "pooled CLIP-L + CLIP-G width 2048 != model pooled_dim 768",
        "image sizes [[256, 256]] are not multiples of autoencoder factor 8 x patch 3 = 24",
    ]
    no_t5 = _provenance(t5=False)
    assert check_against_model(no_t5, in_channels=16, context_dim=2048, pooled_dim=2048, patch_size=2) == []
    assert no_t5.text_layout().seq_len == 77 and prov.text_layout().seq_len == 154


def test_manifest_save_load_and_merge(tmp_path):
    parts = [Manifest(_provenance(), [ShardInfo(f"shard-{i:05d}-000000.tar", 10 + i, 100, "x")], part=[i, 2])
             for i in range(2)]
    for i, m in enumerate(parts):
        m.save(tmp_path / f"p{i}.json")
    loaded = [Manifest.load(tmp_path / f"p{i}.json") for i in range(2)]
    assert loaded[1].to_dict() == parts[1].to_dict()
    merged = merge_parts(loaded[::-1])
    assert merged.part is None and merged.samples == 21
    assert [s.name for s in merged.shards] == ["shard-00000-000000.tar", "shard-00001-000000.tar"]
    with pytest.raises(ValueError, match=r"parts \[1\] of 2"):
        merge_parts(loaded[:1])
    loaded[1].provenance = _provenance(channels=4)
    with pytest.raises(ValueError, match="part 1 differs from part 0: .*latent.channels: 16 vs 4"):
        merge_parts(loaded)


def test_directory_hashes_are_cached_by_name_size_and_mtime(tmp_path, monkeypatch):
    from data_pipeline.encoders import files

    monkeypatch.setenv(files.CACHE_DIR_ENV, str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    reads = []
    real = files._content_hash
    monkeypatch.setattr(files, "_content_hash", lambda paths, root: reads.append(root) or real(paths, root))
    first = files.weights_sha256(str(model))
    assert files.weights_sha256(str(model)) == first and len(reads) == 1   # the second call reads no weights
    os.utime(model / "model.safetensors", ns=(1, 1))                      # touched: hashed again, same bytes
    assert files.weights_sha256(str(model)) == first and len(reads) == 2
    (model / "model.safetensors").write_bytes(b"other weights")
    assert files.weights_sha256(str(model)) != first and len(reads) == 3
    monkeypatch.setenv(files.CACHE_DIR_ENV, str(tmp_path / "fresh"))
    assert files.weights_sha256(str(model)) == real([model / "model.safetensors"], model)
