"""Deterministic split by rank and worker: disjoint and covering, in training and validation;
and validation mode's fixed, complete pass."""
from collections import Counter

import pytest
import torch

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.sharding import deal, make_units, shard_order
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic


@pytest.mark.parametrize("n_shards", [1, 3, 8, 10])
@pytest.mark.parametrize("n_streams", [1, 2, 4, 8])
def test_units_split_every_sample_to_exactly_one_stream(n_shards, n_streams):
    per_shard = 7
    order = shard_order(0, n_shards, seed=5, epoch=2, shuffle=True)
    units = make_units(order, n_streams)
    owners = Counter()
    for stream in range(n_streams):
        mine = deal(units, stream, n_streams)
        assert mine, "every stream gets data, even with fewer shards than streams"
        for u in mine:
            owners.update((u.shard, i) for i in range(per_shard) if u.wants(i))
    assert set(owners) == {(s, i) for s in range(n_shards) for i in range(per_shard)}
    assert set(owners.values()) == {1}


def test_shard_order_is_seeded_per_epoch():
    a = [s for _, s in shard_order(0, 50, seed=1, epoch=0, shuffle=True)]
    assert a == [s for _, s in shard_order(0, 50, seed=1, epoch=0, shuffle=True)]
    assert a != [s for _, s in shard_order(0, 50, seed=1, epoch=1, shuffle=True)]
    assert a != [s for _, s in shard_order(0, 50, seed=2, epoch=0, shuffle=True)]
    assert sorted(a) == list(range(50))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    write_synthetic(root, SyntheticSpec(shards=4, per_shard=8, latent_sizes=((4, 4), (4, 6)), text=TINY_TEXT))
    return str(root)


ALL = {f"s{s:05d}_{i:06d}" for s in range(4) for i in range(8)}


@pytest.mark.parametrize("world,workers,kind", [(2, 0, "thread"), (2, 2, "thread"), (3, 2, "process")])
def test_training_ranks_and_workers_read_disjoint_parts_of_an_epoch(data, world, workers, kind):
    cfg = LoaderConfig(batch_size=2, shuffle_buffer=0, num_workers=workers, worker_type=kind)
    seen = Counter()
    for rank in range(world):
        it = iter(ShardLoader(data, cfg, rank=rank, world_size=world))
        for _ in range(20):  # past epoch 0 on every stream (at most 2 shards = 8 batches each)
            b = next(it)
            seen.update(k for k, e in zip(b["keys"], b["epoch"]) if e == 0)
    assert set(seen) == ALL and set(seen.values()) == {1}


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 0)])
def test_validation_covers_every_sample_once_across_ranks_and_workers(data, world, workers):
    cfg = LoaderConfig(batch_size=3, num_workers=workers, worker_type="thread")
    seen = Counter(k for r in range(world)
                   for b in ShardLoader(data, cfg, rank=r, world_size=world, validation=True) for k in b["keys"])
    assert set(seen) == ALL and set(seen.values()) == {1}


def test_validation_is_deterministic_without_augmentation(data):
    loader = ShardLoader(data, LoaderConfig(batch_size=3, seed=1), validation=True)
    first, second = list(loader), list(loader)
    other_seed = list(ShardLoader(data, LoaderConfig(batch_size=3, seed=9, shuffle_buffer=5), validation=True))
    for a, b, c in zip(first, second, other_seed):
        assert a["keys"] == b["keys"] == c["keys"]
        assert torch.equal(a["context"], b["context"]) and torch.equal(a["context"], c["context"])
    keep = torch.cat([b["text_keep"] for b in first])
    assert bool(keep.all())  # no dropout
    assert {int(v) for b in first for v in b["caption_variant"]} == {0}  # always the original caption
    sizes = [len(b["keys"]) for b in first]
    assert sum(sizes) == 32 and max(sizes) == 3  # the last batch of each bucket may be short
    syn = list(ShardLoader(data, LoaderConfig(batch_size=3, val_caption="syn"), validation=True))
    assert {int(v) for b in syn for v in b["caption_variant"]} == {1}
