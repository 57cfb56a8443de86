"""state_dict / load_state_dict: exact resume on the same layout (bit-identical batches,
dropout draws included) and, on another world size or worker count, no repeated samples."""
import json
from collections import Counter

import pytest
import torch

from data_pipeline.loader import LoaderConfig, ShardLoader, rng
from data_pipeline.loader.sample_reader import SamplePolicy
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic

FIELDS = ("latent", "context", "pooled", "text_keep", "caption_variant", "source", "epoch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two datasets (weights 2:1) of 3 and 2 shards, two latent buckets."""
    a = tmp_path_factory.mktemp("a")
    b = tmp_path_factory.mktemp("b")
    write_synthetic(a, SyntheticSpec(shards=3, per_shard=10, latent_sizes=((4, 4), (4, 6)), text=TINY_TEXT))
    write_synthetic(b, SyntheticSpec(shards=2, per_shard=10, latent_sizes=((4, 4),), text=TINY_TEXT, seed=1))
    return [{"path": str(a), "weight": 2.0}, {"path": str(b), "weight": 1.0}]


def same(x, y):
    return x["keys"] == y["keys"] and all(torch.equal(x[f], y[f]) for f in FIELDS)


def run(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


CFG = dict(batch_size=4, shuffle_buffer=7, seed=11)


@pytest.mark.parametrize("workers,kind", [(0, "thread"), (2, "thread"), (2, "process")])
def test_resume_is_exact(data, workers, kind):
    cfg = LoaderConfig(**CFG, num_workers=workers, worker_type=kind)
    total = 16  # 64 samples of 50: crosses an epoch, buffers hold samples of several shards
    reference = run(ShardLoader(data, cfg), total)
    for k in (3, 9):
        first = ShardLoader(data, cfg)
        head = run(first, k)
        state = json.loads(json.dumps(first.state_dict()))  # a checkpoint stores it as JSON
        second = ShardLoader(data, cfg)
        second.load_state_dict(state)
        tail = run(second, total - k)
        assert all(same(x, y) for x, y in zip(head + tail, reference))


def test_iterating_again_continues_where_the_last_batch_left(data):
    cfg = LoaderConfig(**CFG)
    reference = run(ShardLoader(data, cfg), 6)
    loader = ShardLoader(data, cfg)
    assert all(same(x, y) for x, y in zip(run(loader, 2) + run(loader, 4), reference))


def test_all_ranks_states_resume_exactly_on_the_same_layout(data):
    cfg = LoaderConfig(**CFG)
    ref = [run(ShardLoader(data, cfg, rank=r, world_size=2), 8) for r in range(2)]
    loaders = [ShardLoader(data, cfg, rank=r, world_size=2) for r in range(2)]
    heads = [run(l, 5) for l in loaders]
    states = [l.state_dict() for l in loaders]
    for r in range(2):
        again = ShardLoader(data, cfg, rank=r, world_size=2)
        again.load_state_dict(states)
        assert all(same(x, y) for x, y in zip(heads[r] + run(again, 3), ref[r]))


def delivered(batches):
    """(epoch, key) of every delivered sample."""
    return [(int(e), k) for b in batches for e, k in zip(b["epoch"], b["keys"])]


@pytest.mark.parametrize("shards,old,new", [
    (6, (2, 2), (3, 0)), (6, (3, 0), (2, 2)), (6, (1, 0), (4, 0)),
    (3, (2, 2), (1, 0)), (3, (1, 0), (2, 3)),  # fewer shards than streams: shards dealt in slices
])
def test_resume_on_another_layout_repeats_no_sample_of_the_epoch(tmp_path, shards, old, new):
    write_synthetic(tmp_path, SyntheticSpec(shards=shards, per_shard=60 // shards, latent_sizes=((4, 4), (4, 6)),
                                            text=TINY_TEXT))
    keys = {f"s{s:05d}_{i:06d}" for s in range(shards) for i in range(60 // shards)}
    (w_old, nw_old), (w_new, nw_new) = old, new
    cfg_old = LoaderConfig(batch_size=3, shuffle_buffer=5, num_workers=nw_old, worker_type="thread")
    cfg_new = LoaderConfig(batch_size=3, shuffle_buffer=5, num_workers=nw_new, worker_type="thread")
    olds = [ShardLoader(str(tmp_path), cfg_old, rank=r, world_size=w_old) for r in range(w_old)]
    before = [s for l in olds for s in delivered(run(l, 12 // w_old))]  # about half of epoch 0
    states = [l.state_dict() for l in olds]
    news = [ShardLoader(str(tmp_path), cfg_new, rank=r, world_size=w_new) for r in range(w_new)]
    for l in news:
        l.load_state_dict(states)
    after = [s for l in news for s in delivered(run(l, 60 // w_new))]  # enough for every stream to finish epoch 0
    epoch0 = Counter(k for e, k in before + after if e == 0)
    assert set(epoch0) == keys  # nothing lost
    assert max(epoch0.values()) == 1  # nothing read twice, buffered samples included
    assert 0 < sum(e == 0 for e, _ in before) < len(keys)  # the old layout stopped inside epoch 0


def test_state_of_other_data_is_refused(data, tmp_path):
    write_synthetic(tmp_path, SyntheticSpec(shards=2, per_shard=5, latent_sizes=((4, 4),), text=TINY_TEXT))
    loader = ShardLoader(data, LoaderConfig(**CFG))
    run(loader, 1)
    other = ShardLoader(str(tmp_path), LoaderConfig(**CFG))
    with pytest.raises(ValueError, match="other datasets"):
        other.load_state_dict(loader.state_dict())


def test_other_layout_needs_every_old_rank(data):
    states = [ShardLoader(data, LoaderConfig(**CFG), rank=r, world_size=2).state_dict() for r in range(2)]
    with pytest.raises(ValueError, match="all 2 old ranks"):
        ShardLoader(data, LoaderConfig(**CFG), rank=0, world_size=3).load_state_dict(states[:1])


def test_draws_are_pinned_so_a_checkpoint_resumes_on_a_newer_loader():
    """Dropout, caption, shuffle and shard-order draws are functions of the sample's identity;
    a loader whose hashing changed would resume an old checkpoint with other augmentations."""
    policy = SamplePolicy(seed=7, text_dropout=0.464, synthetic_prob=0.5)
    assert [policy.decide(0, epoch, 3, i, ("orig", "syn")) for epoch in range(2) for i in range(4)] == [
        ("syn", (True, False, False)), ("syn", (False, False, True)), ("syn", (True, True, True)),
        ("orig", (False, True, False)), ("syn", (True, False, True)), ("orig", (False, True, True)),
        ("syn", (True, False, False)), ("syn", (True, False, True))]
    assert rng.uniform(7, rng.SHUFFLE, 0, 2, 40) == 0.718033556913775
    assert rng.hash_ints(7, 1, 0, 0, 3, 5, 2) == 17983203394988975275
    assert rng.hash_ints(5, 2, start=rng.hash_ints(7, 1, 0, 0, 3)) == rng.hash_ints(7, 1, 0, 0, 3, 5, 2)
    assert rng.permutation(8, 7, rng.SHARD_ORDER, 0, 1) == [6, 7, 0, 2, 5, 1, 3, 4]
