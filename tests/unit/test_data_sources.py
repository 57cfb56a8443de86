"""Input sources: listing, detection, caption rules and the planning step (no encoders needed)."""
import io
import json
import tarfile

import pytest
from PIL import Image

from data_pipeline.filters import Filters
from data_pipeline.shard_plan import make_plan, part_range
from data_pipeline.sources import BadCaption, Record, SourceError, detect_source, list_records, read_captions


def _png(colour=(255, 0, 0), size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_listing_pairs_sidecars(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.png").write_bytes(_png())
    (tmp_path / "b.txt").write_text("a red square")
    (tmp_path / "b.json").write_text(json.dumps({"syn_caption": "a flat red square image"}))
    (tmp_path / "sub" / "a.v2.jpg").write_bytes(_png())
    (tmp_path / "sub" / "a.v2.txt").write_text("  nested  \n")
    (tmp_path / "notes.txt").write_text("not a caption of anything")
    records = list_records(tmp_path)
    assert detect_source(tmp_path) == "folder"
    assert [r.key for r in records] == ["b", "sub/a_v2"]
    assert read_captions(records[0], "syn_caption") == {"orig": "a red square", "syn": "a flat red square image"}
    assert read_captions(records[1], "syn_caption") == {"orig": "nested"}
    assert records[0].image.read() == _png()


@pytest.mark.parametrize("caption,meta,reason", [
    (None, None, "caption_missing"),
    (" \n", None, "caption_empty"),
    (b"\xff\xfe bad", None, "caption_not_utf8"),
    ("\udc80 lone surrogate", None, "caption_not_utf8"),
    (None, {"syn_caption": "only synthetic"}, "caption_missing"),
])
def test_caption_rules(tmp_path, caption, meta, reason):
    record = Record(key="k", image=None, caption=caption, meta=meta)
    with pytest.raises(BadCaption) as err:
        read_captions(record, "syn_caption")
    assert err.value.reason == reason


def test_tar_listing_reads_members_by_offset(tmp_path):
    tar_path = tmp_path / "00000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in [("000000001.jpg", _png()), ("000000001.txt", b"first"),
                           ("000000001.json", json.dumps({"caption": "first", "url": "http://x"}).encode()),
                           ("000000002.png", _png((0, 255, 0))), ("000000002.json", b'{"caption": "from json"}'),
                           ("000000003.txt", b"caption without image")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert detect_source(tmp_path) == "tars"
    records = list_records(tmp_path)
    assert [r.key for r in records] == ["00000/000000001", "00000/000000002"]
    assert records[1].image.read() == _png((0, 255, 0))
    assert read_captions(records[0], "syn_caption") == {"orig": "first"}
    assert read_captions(records[1], "syn_caption") == {"orig": "from json"}


def test_jsonl_and_parquet_tables(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"image": "img/a.png", "caption": "a", "syn_caption": "syn a", "key": "ka"},
            {"image": "img/b.png", "caption": "b", "syn_caption": None, "key": None}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.parquet"):
        records = list_records(tmp_path / name)
        assert [r.key for r in records] == ["ka", "000001"]
        assert records[0].image.path == str(tmp_path / "img" / "a.png")
        assert read_captions(records[0], "syn_caption") == {"orig": "a", "syn": "syn a"}
        assert read_captions(records[1], "syn_caption") == {"orig": "b"}
    (tmp_path / "bad.jsonl").write_text('{"caption": "no image column"}\n')
    with pytest.raises(SourceError, match="no image column"):
        list_records(tmp_path / "bad.jsonl")


def test_plan_dedups_globally_filters_and_slices_parts(tmp_path):
    for i, (colour, size) in enumerate([((255, 0, 0), (64, 64)), ((0, 255, 0), (64, 64)), ((255, 0, 0), (64, 64)),
                                        ((0, 0, 255), (20, 64)), ((9, 9, 9), (64, 200)), ((1, 2, 3), (64, 64))]):
        (tmp_path / f"{i}.png").write_bytes(_png(colour, size))
        (tmp_path / f"{i}.txt").write_text(f"image {i}")
    (tmp_path / "5.jpg").write_bytes(_png((4, 5, 6)))  # same key as 5.png
    records = list_records(tmp_path)
    plan = make_plan(records, part=0, parts=1, filters=Filters.for_resolution(64), syn_field="syn_caption",
                     samples_per_shard=2)
    assert dict(plan.skipped) == {"duplicate": 1, "too_small": 1, "bad_aspect": 1, "duplicate_key": 1}
    assert [[i.key for i in s.items] for s in plan.shards] == [["0", "1"], ["5"]]
    assert [s.name for s in plan.shards] == ["shard-000000.tar", "shard-000001.tar"]
    ranges = [part_range(10, i, 3) for i in range(3)]
    assert [list(r) for r in ranges] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    part1 = make_plan(records, part=1, parts=2, filters=Filters.for_resolution(64), syn_field="syn_caption",
                      samples_per_shard=2)
    assert part1.inputs == 4 and [s.name for s in part1.shards] == ["shard-00001-000000.tar"]
