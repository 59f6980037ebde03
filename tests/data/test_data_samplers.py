"""TrainSampler partitioning and resume, ShardedEvalSampler coverage."""
import pytest

from side4video.data import ShardedEvalSampler, TrainSampler


def test_one_and_two_replicas_see_the_same_batches():
    single = TrainSampler(num_samples=11, num_replicas=1, seed=5)
    ranks = [TrainSampler(num_samples=11, num_replicas=2, rank=r, seed=5) for r in range(2)]
    for epoch in (0, 1):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        perm = list(single)
        assert sorted(perm) == list(range(11)) and len(single) == 11
        assert list(ranks[0]) == perm[0:10:2] and list(ranks[1]) == perm[1:10:2]  # truncated to 10
        assert len(ranks[0]) == len(ranks[1]) == 5
        # batch k of 2 ranks x 2 samples == batch k of 1 rank x 4 samples
        for k in range(2):
            assert sorted(list(ranks[0])[2 * k:2 * k + 2] + list(ranks[1])[2 * k:2 * k + 2]) == \
                sorted(perm[4 * k:4 * k + 4])
    epoch_orders = []
    for epoch in (0, 1):
        single.set_epoch(epoch)
        epoch_orders.append(list(single))
    assert epoch_orders[0] != epoch_orders[1]
    assert list(TrainSampler(11, seed=6)) != epoch_orders[0]


def test_set_start_skips_this_ranks_first_samples():
    sampler = TrainSampler(num_samples=20, num_replicas=2, rank=1, seed=0)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_start(4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(4)  # a new epoch starts from the beginning
    assert len(sampler) == 10 and len(list(sampler)) == 10


def test_without_shuffle_or_drop_last():
    sampler = TrainSampler(5, num_replicas=2, rank=1, shuffle=False, drop_last=False)
    assert list(sampler) == [1, 3, 0] and len(sampler) == 3


@pytest.mark.parametrize("num_samples, replicas", [(11, 2), (7, 3), (2, 4)])
def test_sharded_eval_covers_each_sample_once(num_samples, replicas):
    shards = [list(ShardedEvalSampler(num_samples, replicas, r)) for r in range(replicas)]
    assert sorted(i for shard in shards for i in shard) == list(range(num_samples))
    assert [len(ShardedEvalSampler(num_samples, replicas, r)) for r in range(replicas)] == [len(s) for s in shards]
    assert shards[0][:2] == [0, replicas][:len(shards[0])]


def test_rank_must_be_in_range():
    with pytest.raises(ValueError):
        TrainSampler(4, num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        ShardedEvalSampler(4, 2, -1)
