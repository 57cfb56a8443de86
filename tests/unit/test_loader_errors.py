"""What the loader refuses (other provenance, shapes that do not fit the model) and what it
skips and counts (corrupt samples and shards), plus the `data.train` forms it accepts."""
import io
import json
import struct
import tarfile
import warnings
from collections import Counter

import pytest

from data_pipeline.format import encode_sample
from data_pipeline.loader import LoaderConfig, ModelDims, ShardLoader, parse_datasets
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, make_sample, write_synthetic
from data_pipeline.manifest import Manifest, ShardInfo

SPEC = SyntheticSpec(shards=3, per_shard=6, latent_sizes=((4, 4),), text=TINY_TEXT)
VAL = LoaderConfig(batch_size=4)
UNCHECKED = LoaderConfig(batch_size=4, verify="none")
"""For the reader's own robustness (what a streamed shard meets): no manifest check at open."""


def keys_of(loader):
    return [k for b in loader for k in b["keys"]]


def test_mixing_datasets_of_other_provenance_is_refused_naming_the_difference(tmp_path):
    write_synthetic(tmp_path / "a", SPEC)
    write_synthetic(tmp_path / "b", SyntheticSpec(**{**SPEC.__dict__, "weights_tag": "other-weights"}))
    with pytest.raises(ValueError, match=r"encoders\.clip_l\.weights_sha256: 'synthetic-0' vs 'other-weights'"):
        ShardLoader([str(tmp_path / "a"), str(tmp_path / "b")], VAL)
    val = ShardLoader(str(tmp_path / "b"), VAL, validation=True)
    with pytest.raises(ValueError, match="weights_sha256"):  # held-out shards must match training
        ShardLoader(str(tmp_path / "b"), VAL, reference=ShardLoader(str(tmp_path / "a"), VAL).manifest)
    assert val.manifest.samples == 18


def test_datasets_of_other_resolutions_mix(tmp_path):
    write_synthetic(tmp_path / "a", SPEC)
    write_synthetic(tmp_path / "b", SyntheticSpec(**{**SPEC.__dict__, "latent_sizes": ((6, 6),)}))
    loader = ShardLoader([str(tmp_path / "a"), str(tmp_path / "b")], VAL, validation=True)
    assert {tuple(b["latent"].shape[2:]) for b in loader} == {(4, 4), (6, 6)}


@pytest.mark.parametrize("dims,message", [
    (ModelDims(in_channels=4, context_dim=32, pooled_dim=20), "latent has 16 channels but the model's in_channels is 4"),
    (ModelDims(in_channels=16, context_dim=64, pooled_dim=20), "T5 hidden width 32 != model context_dim 64"),
    (ModelDims(in_channels=16, context_dim=32, pooled_dim=2048), "pooled CLIP-L \\+ CLIP-G width 20 != model pooled_dim 2048"),
])
def test_shards_that_do_not_fit_the_model_are_refused(tmp_path, dims, message):
    write_synthetic(tmp_path, SPEC)
    with pytest.raises(ValueError, match=message):
        ShardLoader(str(tmp_path), VAL, model=dims)
    ShardLoader(str(tmp_path), VAL, model=ModelDims(in_channels=16, context_dim=32, pooled_dim=20))


def _member_offsets(path):
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def test_corrupt_samples_are_skipped_counted_and_warned(tmp_path):
    write_synthetic(tmp_path, SPEC)
    shard = tmp_path / "shard-000001.tar"
    raw = bytearray(shard.read_bytes())
    offsets = _member_offsets(shard)
    off, _ = offsets["s00001_000002.tensors.safetensors"]
    raw[off + 8:off + 12] = b"\xff\xfe{{"  # the safetensors JSON header no longer parses
    off, size = offsets["s00001_000004.json"]
    raw[off:off + size] = b"[" * size  # metadata is not JSON
    shard.write_bytes(bytes(raw))
    loader = ShardLoader(str(tmp_path), UNCHECKED, validation=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = keys_of(loader)
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"skipping sample 's00001_00000{i}' of {shard}" for i in (2, 4)]
    assert len(keys) == 16 and "s00001_000002" not in keys and "s00001_000004" not in keys
    assert loader.stats == {"samples_read": 16, "corrupt_samples": 2, "corrupt_shards": 0}


def _short_latent(parts: dict) -> dict:
    """The safetensors blob with the latent's byte range two bytes short of its shape."""
    blob = parts["tensors.safetensors"]
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["latent"]["data_offsets"][1] -= 2
    text = json.dumps(header).encode()
    return {**parts, "tensors.safetensors": struct.pack("<Q", len(text)) + text + blob[8 + n:]}


def test_samples_with_missing_members_or_wrong_shapes_are_skipped(tmp_path):
    write_synthetic(tmp_path, SyntheticSpec(**{**SPEC.__dict__, "shards": 1}))
    bad_channels = SyntheticSpec(**{**SPEC.__dict__, "channels": 4})
    members = [("good_a", encode_sample(make_sample(SPEC, 9, 0))),
               ("no_tensors", {"json": encode_sample(make_sample(SPEC, 9, 1))["json"]}),
               ("four_channels", encode_sample(make_sample(bad_channels, 9, 2))),
               ("short_latent", _short_latent(encode_sample(make_sample(SPEC, 9, 4)))),
               ("good_b", encode_sample(make_sample(SPEC, 9, 3)))]
    with tarfile.open(tmp_path / "shard-000009.tar", "w") as tar:
        for key, parts in members:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    man = Manifest.load(tmp_path)
    man.shards.append(ShardInfo(name="shard-000009.tar", samples=5, bytes=0, sha256=""))
    man.save(tmp_path / "manifest.json")
    loader = ShardLoader(str(tmp_path), UNCHECKED, validation=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = keys_of(loader)
    assert sorted(k for k in keys if not k.startswith("s0")) == ["good_a", "good_b"]
    assert loader.stats["corrupt_samples"] == 3
    text = " ".join(str(w.message) for w in caught)
    assert "no tensors.safetensors member" in text and "latent shape (4, 4, 4)" in text
    assert "latent data offsets 0..510 do not hold shape (16, 4, 4)" in text


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("cut", ["header", "tensors"])
def test_corrupt_shards_are_skipped_after_their_readable_samples(tmp_path, cut, streamed):
    """Cut inside sample 3's safetensors header or inside tensors it needs: a local shard finds
    the latter when it seeks past them (it reads them only when collating), a streamed one when
    it reads them; both keep samples 0-2."""
    write_synthetic(tmp_path, SPEC)
    truncated = tmp_path / "shard-000000.tar"
    offsets = _member_offsets(truncated)
    start, size = offsets["s00000_000003.tensors.safetensors"]
    truncated.write_bytes(truncated.read_bytes()[:start + (100 if cut == "header" else size // 4)])
    garbage = tmp_path / "shard-000002.tar"
    garbage.write_bytes(b"not a tar" * 1000)
    data = f"pipe:cat {tmp_path}/shard-{{000000..000002}}.tar" if streamed else str(tmp_path)
    loader = ShardLoader(data, UNCHECKED, validation=True)
    with pytest.warns(RuntimeWarning, match="skipping the rest of shard"):
        keys = keys_of(loader)
    assert sorted(keys) == [f"s00000_{i:06d}" for i in range(3)] + [f"s00001_{i:06d}" for i in range(6)]
    assert loader.stats == {"samples_read": 9, "corrupt_samples": 0, "corrupt_shards": 2}


def test_a_failing_pipe_command_counts_as_a_corrupt_shard(tmp_path):
    write_synthetic(tmp_path, SPEC)
    (tmp_path / "shard-000001.tar").rename(tmp_path / "moved.tar")
    loader = ShardLoader(f"pipe:cat {tmp_path}/shard-{{000000..000002}}.tar", VAL, validation=True)
    with pytest.warns(RuntimeWarning, match="shard-000001.tar.*exit 1"):
        keys = keys_of(loader)
    assert len(keys) == 12 and loader.stats["corrupt_shards"] == 1


def test_training_goes_on_past_corrupt_shards_and_fails_only_when_nothing_is_readable(tmp_path):
    write_synthetic(tmp_path, SPEC)
    (tmp_path / "shard-000002.tar").write_bytes(b"\0" * 100 + b"x" * 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = iter(ShardLoader(str(tmp_path), LoaderConfig(batch_size=4, shuffle_buffer=3)))
        assert all(len(next(it)["keys"]) == 4 for _ in range(10))  # three epochs of the two good shards
        for name in ("shard-000000.tar", "shard-000001.tar"):
            (tmp_path / name).write_bytes(b"x" * 1000)
        with pytest.raises(RuntimeError, match="no readable sample in two epochs"):
            next(iter(ShardLoader(str(tmp_path), LoaderConfig(batch_size=4))))


def test_brace_patterns_pipe_urls_and_weights(tmp_path):
    write_synthetic(tmp_path / "a", SPEC)
    write_synthetic(tmp_path / "b", SyntheticSpec(**{**SPEC.__dict__, "seed": 1, "shards": 2}))
    a = tmp_path / "a"
    subset = parse_datasets(str(a / "shard-{000000..000001}.tar"))[0]
    assert subset.shard_names == ["shard-000000.tar", "shard-000001.tar"] and subset.samples == [6, 6]
    local = keys_of(ShardLoader(str(a), VAL, validation=True))
    piped = keys_of(ShardLoader(f"pipe:cat {a}/shard-{{000000..000002}}.tar", VAL, validation=True))
    assert piped == local and len(local) == 18
    mixed = ShardLoader([{"path": str(a), "weight": 3}, {"path": str(tmp_path / "b"), "weight": 1}],
                        LoaderConfig(batch_size=50, shuffle_buffer=8))
    it = iter(mixed)
    counts = Counter(int(s) for _ in range(16) for s in next(it)["source"])
    share = counts[0] / 800
    assert abs(share - 0.75) < 0.05, counts


@pytest.mark.parametrize("entry,message", [
    ({"path": "DIR", "weight": 0}, "weight must be > 0"),
    ({"path": "DIR", "wieght": 1}, "expected keys path, weight, manifest"),
    ("DIR/shard-{000000..000004}.tar", "shard-000003.tar' is not listed in its manifest"),
    ("DIR/shard-{000000..000002}.tar", "1 shard\\(s\\) missing, first '.*shard-000001.tar'"),
    ("DIR/nowhere", "no such directory"),
    ("DIR/empty", "cannot read the manifest"),
    ([], "no dataset given"),
])
def test_bad_dataset_entries_name_the_problem(tmp_path, entry, message):
    write_synthetic(tmp_path, SPEC)
    (tmp_path / "shard-000001.tar").unlink()
    (tmp_path / "empty").mkdir()
    entry = json.loads(json.dumps(entry).replace("DIR", str(tmp_path)))
    with pytest.raises(ValueError, match=message):
        parse_datasets(entry)


@pytest.mark.parametrize("verify", ["sha256", "size"])
def test_a_shard_that_differs_from_its_manifest_is_skipped_whole_naming_it(tmp_path, verify):
    """One flipped byte in a latent (still a valid tar and a valid sample) and one truncated shard:
    the manifest's sha256 catches the first, its size the second; each is skipped whole, named."""
    write_synthetic(tmp_path, SPEC)
    flipped, cut = tmp_path / "shard-000001.tar", tmp_path / "shard-000002.tar"
    start, size = _member_offsets(flipped)["s00001_000003.tensors.safetensors"]
    raw = bytearray(flipped.read_bytes())
    raw[start + size - 1] ^= 0x40
    flipped.write_bytes(bytes(raw))
    cut.write_bytes(cut.read_bytes()[:-512])
    loader = ShardLoader(str(tmp_path), LoaderConfig(batch_size=4, verify=verify), validation=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = keys_of(loader)
    messages = [str(w.message) for w in caught]
    assert f"skipping the rest of shard {cut}: ShardMismatch: it has {cut.stat().st_size} bytes, its manifest " \
           f"says {cut.stat().st_size + 512} (truncated or replaced)" in messages
    if verify == "sha256":
        assert (f"skipping the rest of shard {flipped}: ShardMismatch: its sha256 differs from its manifest's (the "
                "bytes changed after prepare wrote it)") in messages
        assert sorted(keys) == [f"s00000_{i:06d}" for i in range(6)]
        assert loader.stats["corrupt_shards"] == 2
    else:  # size alone lets the flipped byte through: the documented cost of the cheaper check
        assert "s00001_000003" in keys and not [k for k in keys if k.startswith("s00002")]


def test_a_shard_is_hashed_once_per_process(tmp_path, monkeypatch):
    import os

    write_synthetic(tmp_path, SPEC)
    hashed = []
    real = os.pread   # the check's reads (the collator reads with preadv)
    monkeypatch.setattr(os, "pread", lambda fd, n, at: (at == 0 and hashed.append(fd)) or real(fd, n, at))
    loader = ShardLoader(str(tmp_path), LoaderConfig(batch_size=4, shuffle_buffer=0))
    it = iter(loader)
    for _ in range(12):   # 48 samples: 18 per epoch, so the shards are opened again and again
        next(it)
    assert len(hashed) == 3


def test_a_manifest_that_lists_other_dims_than_its_shards_is_refused_once_naming_the_field(tmp_path):
    write_synthetic(tmp_path, SyntheticSpec(**{**SPEC.__dict__, "channels": 12}))
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["provenance"]["latent"]["channels"] = 16
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"its shards do not hold what its manifest says: the first sample of "
                                             r".*shard-000000.tar has latent shape \(12, 4, 4\), expected \(16, h, w\) "
                                             r"\(provenance.latent.channels\)"):
            ShardLoader(str(tmp_path), VAL)
    assert caught == []   # one error, not a warning per sample
