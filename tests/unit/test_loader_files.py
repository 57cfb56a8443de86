"""Samples of local shards are read from the file straight into the batch when they are collated
(`ShardFile`); streamed shards (`pipe:`, URLs) are copied when scanned. Both give the same
batches; descriptors stay bounded, and a shard that changes under buffered samples is an error."""
import os
import warnings

import numpy as np
import pytest
import torch

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.shard_file import OpenShards
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic

SIZES = ((4, 4), (4, 6), (6, 4))
FIELDS = ("latent", "context", "pooled", "text_keep", "caption_variant", "source", "epoch", "original_size",
          "crop_box")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    write_synthetic(root, SyntheticSpec(shards=4, per_shard=9, latent_sizes=SIZES, text=TINY_TEXT))
    return root


def shard_fds(root) -> int:
    """Descriptors of this process open on files under `root`."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(root))
        except OSError:  # the descriptor of the listing itself, gone by now
            pass
    return n


def streamed(root) -> str:
    return f"pipe:cat {root}/shard-{{000000..000003}}.tar"


@pytest.mark.parametrize("validation", [False, True])
def test_local_and_streamed_shards_give_identical_batches(data, validation):
    """Same samples, order, dropout and caption draws, bit for bit; in training the shuffle
    buffer holds samples of several shards while their bytes are still in the files."""
    cfg = LoaderConfig(batch_size=3, shuffle_buffer=10, seed=4)
    local, piped = (iter(ShardLoader(d, cfg, validation=validation)) for d in (str(data), streamed(data)))
    n = 0
    for a, b in zip(local, piped):
        assert a["keys"] == b["keys"] and a["caption"] == b["caption"]
        for f in FIELDS:
            assert a[f].dtype == b[f].dtype and torch.equal(a[f], b[f]), f
        n += 1
        if n == 30:  # training is endless: 90 samples cross two epochs of 36
            break
    assert n == (30 if not validation else 12)  # validation: three buckets of 12 samples, batches of 3


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_shard_descriptors_stay_bounded_and_close_with_the_iterator(data):
    it = iter(ShardLoader(str(data), LoaderConfig(batch_size=3, shuffle_buffer=10, seed=4)))
    peak = 0
    for _ in range(60):  # 180 samples: five epochs, twenty shard openings
        next(it)
        peak = max(peak, shard_fds(data))
    # Held samples (shuffle buffer, part-filled buckets) may come from all four shards, some
    # from two epochs' readings: one descriptor per shard file, plus the scan's own.
    assert 2 <= peak <= 4 + 1
    it.close()
    assert shard_fds(data) == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_shards_past_the_descriptor_limit_reopen_and_a_replaced_shard_is_refused(tmp_path):
    files = OpenShards(limit=2)
    shards = []
    for i in range(3):
        path = tmp_path / f"{i}.tar"
        path.write_bytes(bytes(range(i, i + 64)))
        with open(path, "rb") as f:
            shards.append(files.adopt(f, str(path)))
    assert shard_fds(tmp_path) == 2  # the least recently used one was closed
    out = np.empty(8, dtype=np.uint8)
    for i in (0, 2, 1, 0):  # a closed shard reopens by path, closing the least recently used
        shards[i].read_into(out, 10)
        assert out.tolist() == list(range(i + 10, i + 18))
    assert shard_fds(tmp_path) == 2
    (tmp_path / "new").write_bytes(bytes(64))
    os.replace(tmp_path / "new", tmp_path / "2.tar")  # 2 is not open any more
    with pytest.raises(RuntimeError, match="2.tar was replaced while samples read from it"):
        shards[2].read_into(out, 0)
    files.close()
    assert shard_fds(tmp_path) == 0


def test_a_shard_that_shrinks_under_buffered_samples_is_an_error(tmp_path):
    write_synthetic(tmp_path, SyntheticSpec(shards=2, per_shard=20, latent_sizes=((4, 4),), text=TINY_TEXT))
    it = iter(ShardLoader(str(tmp_path), LoaderConfig(batch_size=2, shuffle_buffer=8)))
    first = next(it)["keys"][0]  # the other buffered samples of its shard wait, bytes still in the file
    shard = tmp_path / f"shard-{int(first[1:6]):06d}.tar"
    os.truncate(shard, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the scan finds the shard cut short and moves on
        with pytest.raises(RuntimeError, match=f"shard {shard} shrank while samples read from it"):
            for _ in range(20):
                next(it)
