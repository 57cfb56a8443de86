"""Sharded EMA: the slices of all ranks tile every tensor, the update is the EMA recurrence, and the
consolidated EMA reloads at any world size."""
import pytest
import torch
import torch.distributed as dist

from mmdit_scale.train.ema import ShardedEMA, _span


@pytest.mark.parametrize("numel", [1, 5, 64, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_slices_tile_each_tensor(numel, world):
    covered = []
    for rank in range(world):
        start, stop, chunk = _span(numel, rank, world)
        assert 0 <= stop - start <= chunk
        covered += range(start, stop)
    assert covered == list(range(numel))


@pytest.fixture
def one_rank():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_update_consolidate_and_reload_on_another_world_size(one_rank):
    g = torch.Generator().manual_seed(0)
    weights = {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g)}
    shapes = {k: v.shape for k, v in weights.items()}
    ema = ShardedEMA(decay=0.9, every=2, rank=0, world=1, shapes=shapes)
    ema.reset(weights.items())
    expected = {k: v.clone() for k, v in weights.items()}
    for _ in range(3):
        weights = {k: v + torch.randn(v.shape, generator=g) for k, v in weights.items()}
        ema.update(weights.items())
        expected = {k: 0.9 * expected[k] + 0.1 * weights[k] for k in expected}
    full = ema.consolidated()
    assert all(torch.allclose(full[k], expected[k], rtol=0, atol=1e-6) for k in expected)
    assert [ema.due(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
    # Rank 1 of 3 takes its slice of the consolidated tensors.
    other = ShardedEMA(decay=0.9, every=2, rank=1, world=3, shapes=shapes)
    other.load(full, torch.device("cpu"))
    assert torch.equal(other.shards["a.weight"], full["a.weight"].flatten()[4:8])
    assert torch.equal(other.shards["b.bias"], full["b.bias"][2:4])
    with pytest.raises(ValueError, match="shape"):
        other.load({**full, "b.bias": torch.zeros(6)}, torch.device("cpu"))
