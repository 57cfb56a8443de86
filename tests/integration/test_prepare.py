"""`prepare` end to end on real files: demo encoders saved and loaded through from_pretrained,
real tars read back with webdataset, the CLI's exit codes and report."""
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from data_pipeline.demo_data import write_demo_data
from data_pipeline.encoders import load_encoders_config
from data_pipeline.encoders.encoder_set import EncoderSet
from data_pipeline.format import assemble_text, decode_sample
from data_pipeline.manifest import Manifest, check_against_model
from data_pipeline.prepare import PrepareOptions, run_prepare
from data_pipeline.transforms import decode_image, place
from data_pipeline.encode_shard import pixels_to_tensor
from launcher.cli import main

def _prepare(src: Path, out: Path, encoders: str, **kw):
    kw.setdefault("resolution", 32)
    kw.setdefault("samples_per_shard", 4)
    return run_prepare(PrepareOptions(input=src, output=out, encoders=encoders, progress=False, **kw))


def _samples(out: Path) -> dict:
    manifest = Manifest.load(out)
    samples = {}
    for shard in manifest.shards:
        for raw in wds.WebDataset(str(out / shard.name), shardshuffle=False):
            sample = decode_sample(raw)
            assert raw["__key__"] == sample.key
            samples[sample.key] = sample
    return samples


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_through_shard_equals_direct_encode(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "in", count=6, side=64)  # 64 px sources, encoded at 32 px
    report = _prepare(tmp_path / "in", tmp_path / "out", demo_encoders)
    assert (report.samples, report.shards_written, report.skipped) == (6, 2, {})
    manifest = Manifest.load(tmp_path / "out")
    assert [(s.name, s.samples) for s in manifest.shards] == [("shard-000000.tar", 4), ("shard-000001.tar", 2)]
    assert check_against_model(manifest.provenance, in_channels=12, context_dim=64, pooled_dim=64, patch_size=2) == []
    sample = _samples(tmp_path / "out")["000003"]

    # Direct encode of the same file with the same encoders, no prepare code in between.
    encoders = EncoderSet.load(load_encoders_config(demo_encoders), torch.device("cpu"))
    source = next(p for p in (tmp_path / "in").glob("000003.*") if p.suffix not in (".txt", ".json"))
    image = decode_image(source.read_bytes())
    placed = place(image, 32)
    latent = encoders.encode_images(pixels_to_tensor(placed.pixels)[None])[0]
    captions = {"orig": (tmp_path / "in" / "000003.txt").read_text().strip(),
                "syn": json.loads((tmp_path / "in" / "000003.json").read_text())["syn_caption"]}
    assert sample.captions == captions
    assert (sample.original_size, sample.crop_box, sample.size) == ((64, 64), (0, 0, 64, 64), (32, 32))
    assert sample.tensors["latent"].shape == (12, 16, 16)
    assert torch.equal(sample.tensors["latent"], latent.bfloat16())
    # The pixel autoencoder is lossless even through bf16 storage.
    decoded = encoders.autoencoder.decode(sample.tensors["latent"][None])[0]  # (3, 32, 32)
    pixels = ((decoded + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, placed.pixels)
    for variant, text in captions.items():
        direct = encoders.encode_captions([text])
        for enc, out in direct.items():
            for part, ref in out.items():
                name = f"{variant}.{enc}" + ("_pooled" if part == "pooled" else "")
                stored = sample.tensors[name]
                assert stored.dtype == torch.bfloat16 and stored.shape == ref[0].shape
                # bf16 storage: equal up to one bf16 rounding of the fp32 value.
                torch.testing.assert_close(stored.float(), ref[0], rtol=2**-8, atol=1e-6)
    context, pooled = assemble_text(sample.tensors, "syn", manifest.provenance.text_layout())
    assert context.shape == (154, 64) and pooled.shape == (64,)
    assert torch.count_nonzero(context[:77]) > 77 * 60  # pad positions carry CLIP's values too


def _plant_bad_inputs(src: Path) -> dict:
    """Bad inputs of every kind next to good demo images; returns the expected skip reason of each
    planted image file (the duplicate: the copy, listed after the original)."""
    good = sorted(src.glob("*.png"))[0]
    (src / "zero.png").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(b"\x00garbage" * 50)
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(jpeg, "JPEG")
    (src / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    os.symlink(src / "does-not-exist.png", src / "unreadable.png")
    Image.new("RGB", (12, 12), (1, 2, 3)).save(src / "small.png")
    Image.new("RGB", (40, 130), (4, 5, 6)).save(src / "tall.png")
    shutil.copy(good, src / "copy.png")
    Image.new("RGB", (40, 40), (7, 8, 9)).save(src / "nocaption.png")
    Image.new("RGB", (40, 40), (10, 11, 12)).save(src / "empty.png")
    Image.new("RGB", (40, 40), (13, 14, 15)).save(src / "latin1.png")
    Image.new("RGB", (40, 40), (16, 17, 18)).save(src / "badjson.png")
    for stem in ("zero", "corrupt", "truncated", "unreadable", "small", "tall", "copy", "badjson"):
        (src / f"{stem}.txt").write_text(f"caption of {stem}")
    (src / "empty.txt").write_text("   \n")
    (src / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (src / "badjson.json").write_text("{not json")
    return {"zero.png": "zero_byte", "corrupt.jpg": "corrupt", "truncated.jpg": "truncated",
            "unreadable.png": "unreadable", "small.png": "too_small", "tall.png": "bad_aspect", "copy.png": "duplicate",
            "nocaption.png": "caption_missing", "empty.png": "caption_empty", "latin1.png": "caption_not_utf8",
            "badjson.png": "bad_json"}


def test_bad_input_report_counts_exactly_the_planted_inputs(demo_encoders, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_demo_data(src, count=5)
    planted = _plant_bad_inputs(src)
    args = ["prepare", "--input", str(src), "--output", str(out), "--encoders", demo_encoders,
            "--resolution", "32", "--samples-per-shard", "3", "--no-progress"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == {reason: 1 for reason in planted.values()}
    assert report["skipped_total"] == 11 and report["inputs"] == 16 and report["samples"] == 5
    printed = capsys.readouterr().out
    assert "skipped: truncated" in printed and "samples written" in printed
    # Each skipped input is named with its reason, those refused at planning and the one (truncated)
    # that fails only when encoding alike; a rerun, which reuses every shard, names them all again.
    assert f"skipped inputs, each with its reason: {out / 'skipped.jsonl'}\n" in printed
    def named() -> list[tuple[str, str, str]]:
        lines = (out / "skipped.jsonl").read_text().splitlines()
        return sorted((item["key"], item["path"], item["reason"]) for item in map(json.loads, lines))

    expected = sorted((Path(name).stem, str(src / name), reason) for name, reason in planted.items())
    assert named() == expected
    assert main(args) == 0 and named() == expected
    # Whole shards only: every listed shard holds exactly the manifest's count, nothing else on disk.
    manifest = Manifest.load(out)
    assert sorted(p.name for p in out.glob("*.tar")) == [s.name for s in manifest.shards]
    for shard in manifest.shards:
        assert (out / shard.name).stat().st_size == shard.bytes and _sha(out / shard.name) == shard.sha256
        with tarfile.open(out / shard.name) as tar:
            assert len(tar.getnames()) == 2 * shard.samples
    assert not list(out.glob(".*.tmp-*"))


def test_img2dataset_tars_as_input(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "imgs", count=5)
    src = tmp_path / "tars"
    src.mkdir()
    for t in range(2):
        with wds.TarWriter(str(src / f"{t:05d}.tar")) as sink:
            for i in range(t * 3, min(5, t * 3 + 3)):
                stem = tmp_path / "imgs" / f"{i:06d}"
                image = stem.with_suffix(".png") if stem.with_suffix(".png").exists() else stem.with_suffix(".jpg")
                meta = json.loads(stem.with_suffix(".json").read_text())
                sink.write({"__key__": f"{i:09d}", image.suffix[1:]: image.read_bytes(),
                            "txt": stem.with_suffix(".txt").read_text(),
                            "json": {"url": f"http://example.com/{i}", "syn_caption": meta["syn_caption"]}})
    report = _prepare(src, tmp_path / "out", demo_encoders)
    assert report.samples == 5 and report.skipped == {}
    samples = _samples(tmp_path / "out")
    assert sorted(samples) == ["00000/000000000", "00000/000000001", "00000/000000002",
                               "00001/000000003", "00001/000000004"]
    assert samples["00001/000000004"].captions == {
        "orig": (tmp_path / "imgs" / "000004.txt").read_text().strip(),
        "syn": json.loads((tmp_path / "imgs" / "000004.json").read_text())["syn_caption"]}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_table_inputs(demo_encoders, tmp_path, fmt):
    write_demo_data(tmp_path / "imgs", count=4)
    rows = []
    for i, image in enumerate(sorted((tmp_path / "imgs").glob("*.[pj][np]g"))):
        rows.append({"image": f"imgs/{image.name}", "caption": image.with_suffix(".txt").read_text().strip(),
                     "syn_caption": "synthetic " + str(i) if i % 2 else None, "key": f"row-{i}"})
    rows.append({"image": "imgs/missing.png", "caption": "gone", "syn_caption": None, "key": "row-missing"})
    rows.append({"image": "imgs/000000.png", "caption": None, "syn_caption": None, "key": "row-nocap"})
    path = tmp_path / f"table.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    report = _prepare(path, tmp_path / "out", demo_encoders)
    assert report.samples == 4 and report.skipped == {"unreadable": 1, "caption_missing": 1}
    samples = _samples(tmp_path / "out")
    assert sorted(samples) == ["row-0", "row-1", "row-2", "row-3"]
    assert samples["row-1"].captions["syn"] == "synthetic 1" and "syn" not in samples["row-2"].captions
    assert "syn.t5" in samples["row-1"].tensors and "syn.t5" not in samples["row-2"].tensors


def test_buckets_encode_each_image_at_its_aspect(demo_encoders, tmp_path):
    src = tmp_path / "in"
    write_demo_data(src, count=1)
    for stem, size in (("wide", (120, 40)), ("tall", (40, 100))):
        Image.new("RGB", size, (200, 30, 30)).save(src / f"{stem}.png")
        (src / f"{stem}.txt").write_text(f"a {stem} red picture")
    report = _prepare(src, tmp_path / "out", demo_encoders, buckets=None, auto_buckets=True)
    assert report.samples == 3
    prov = Manifest.load(tmp_path / "out").provenance
    assert prov.buckets is not None and [32, 32] in prov.buckets
    samples = _samples(tmp_path / "out")
    assert samples["000000"].size == (32, 32)
    assert samples["wide"].size == (20, 52) and samples["wide"].tensors["latent"].shape == (12, 10, 26)
    assert samples["tall"].size == (52, 20) and samples["tall"].original_size == (100, 40)
    assert samples["wide"].crop_box == (8, 0, 112, 40)  # 52:20 = 104:40 cut from the middle of 120:40
    for s in samples.values():
        assert list(s.size) in prov.buckets


def _assert_same_shards(a: Path, b: Path) -> None:
    ma, mb = Manifest.load(a), Manifest.load(b)
    assert [(s.name, s.sha256, s.bytes) for s in ma.shards] == [(s.name, s.sha256, s.bytes) for s in mb.shards]
    for s in ma.shards:
        assert (a / s.name).read_bytes() == (b / s.name).read_bytes()


def test_demo_rerun_is_byte_identical(tmp_path):
    write_demo_data(tmp_path / "in", count=6)
    # "demo" builds its seeded encoders inside each output folder: two independent builds.
    one = _prepare(tmp_path / "in", tmp_path / "a", "demo")
    two = _prepare(tmp_path / "in", tmp_path / "b", "demo")
    assert one.samples == two.samples == 6 and two.shards_written == 2
    _assert_same_shards(tmp_path / "a", tmp_path / "b")
    with tarfile.open(tmp_path / "a" / "shard-000000.tar") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, 0, "")}


@pytest.mark.slow
def test_two_worker_processes_write_the_same_shards(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "in", count=12)
    _prepare(tmp_path / "in", tmp_path / "a", demo_encoders)
    two = _prepare(tmp_path / "in", tmp_path / "b", demo_encoders, workers=2)
    assert (two.samples, two.shards_written) == (12, 3)
    _assert_same_shards(tmp_path / "a", tmp_path / "b")


def test_rerun_skips_completed_shards_and_redoes_missing_ones(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "in", count=10)
    first = _prepare(tmp_path / "in", tmp_path / "out", demo_encoders)
    assert (first.shards_written, first.shards_reused, first.samples) == (3, 0, 10)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}
    (tmp_path / "out" / "shard-000001.tar").unlink()  # as if killed before its rename
    (tmp_path / "out" / ".shard-000001.tar.tmp-99999").write_bytes(b"partial")
    again = _prepare(tmp_path / "in", tmp_path / "out", demo_encoders)
    assert (again.shards_written, again.shards_reused, again.samples, again.encoded) == (1, 2, 10, 4)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")} == before
    assert not list((tmp_path / "out").glob(".*.tmp-*"))
    rc = main(["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
               "--encoders", demo_encoders, "--resolution", "48", "--samples-per-shard", "4", "--no-progress"])
    assert rc == 1  # other settings into the same output: refused, nothing overwritten
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")} == before


def test_parts_are_disjoint_and_merge(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "in", count=9)
    out = tmp_path / "out"
    args = ["prepare", "--input", str(tmp_path / "in"), "--output", str(out), "--encoders", demo_encoders,
            "--resolution", "32", "--samples-per-shard", "2", "--no-progress"]
    assert main(args + ["--part", "1/2"]) == 0
    assert not (out / "manifest.json").exists()  # part 0 still missing
    assert main(args + ["--part", "0/2"]) == 0
    p0, p1 = (Manifest.load(out / f"manifest.part-0000{i}-of-00002.json") for i in range(2))
    names0, names1 = {s.name for s in p0.shards}, {s.name for s in p1.shards}
    assert names0 == {"shard-00000-000000.tar", "shard-00000-000001.tar"} and not names0 & names1
    merged = Manifest.load(out)
    assert merged.part is None and merged.samples == 9
    # Each part names its skipped inputs in its own file (none here): parts never share a file.
    assert {p.name: p.read_text() for p in out.glob("skipped*.jsonl")} == {
        "skipped.part-00000-of-00002.jsonl": "", "skipped.part-00001-of-00002.jsonl": ""}
    assert [s.name for s in merged.shards] == [s.name for s in p0.shards + p1.shards]
    keys = list(_samples(out))
    assert sorted(keys) == [f"{i:06d}" for i in range(9)] and len(keys) == 9
    (out / "manifest.json").unlink()
    assert main(["prepare", "--output", str(out), "--merge-only"]) == 0
    assert Manifest.load(out).to_dict() == merged.to_dict()


def test_fatal_errors_exit_nonzero(demo_encoders, tmp_path, capsys):
    write_demo_data(tmp_path / "in", count=2)
    base = ["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--resolution", "32",
            "--no-progress"]
    with pytest.raises(SystemExit) as err:
        main(base + ["--part", "2/2"])
    assert err.value.code == 2
    bad_yaml = tmp_path / "enc.yaml"
    bad_yaml.write_text("autoencoder: {kind: pixel}\nclip_l: {path: nowhere}\n")
    assert main(base + ["--encoders", str(bad_yaml)]) == 1
    assert "cannot load encoders" in capsys.readouterr().err
    bad_yaml.write_text("autoencoder: {kind: pixel}\nclip_l: {path: x}\nclip_gg: {path: y}\n")
    assert main(base + ["--encoders", str(bad_yaml)]) == 1
    assert "did you mean 'clip_g'" in capsys.readouterr().err
    assert main(base + ["--encoders", demo_encoders, "--min-size", "100"]) == 1  # every image too small
    assert "nothing written" in capsys.readouterr().err
    assert main(base + ["--encoders", demo_encoders, "--resolution", "30"]) == 1  # 30 % (2 * 2) != 0


def test_the_tiny_recipe_takes_its_input_dims_from_demo_shards(demo_encoders, tmp_path):
    """recipes/tiny.yaml sets no input dims: `train` fills them from the manifest prepare wrote."""
    from mmdit_scale.config import load_config
    from mmdit_scale.run.data_dims import fill_from_data

    write_demo_data(tmp_path / "in", count=4, side=32)
    _prepare(tmp_path / "in", tmp_path / "out", demo_encoders)
    cfg, note = fill_from_data(load_config(Path(__file__).parents[2] / "recipes" / "tiny.yaml",
                                            [f"data.train={tmp_path / 'out'}"]))
    m = cfg.model
    assert (m.in_channels, m.context_dim, m.pooled_dim) == (12, 64, 64)  # pixel autoencoder; T5 64; CLIP 32 + 32
    assert note.endswith(f"from the manifest {tmp_path / 'out' / 'manifest.json'}")
    assert check_against_model(Manifest.load(tmp_path / "out").provenance, in_channels=m.in_channels,
                               context_dim=m.context_dim, pooled_dim=m.pooled_dim, patch_size=m.patch_size) == []
