"""The data order: a pure function of (seed, epoch), the same global batches on any number of ranks."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.server.training.sampler import FlipView, GlobalBatchSampler, epoch_order


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, flips_a = epoch_order(50, seed=3, epoch=2)
    b, flips_b = epoch_order(50, seed=3, epoch=2)
    assert a.tolist() == b.tolist() and flips_a.tolist() == flips_b.tolist()
    assert sorted(a.tolist()) == list(range(50))
    assert epoch_order(50, seed=3, epoch=3)[0].tolist() != a.tolist()


def test_resuming_mid_epoch_yields_the_remaining_batches():
    full = list(GlobalBatchSampler(40, 8, seed=0, epoch=1))
    assert len(full) == 5
    assert list(GlobalBatchSampler(40, 8, seed=0, epoch=1, start_batch=3)) == full[3:]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_global_batch_so_world_size_does_not_change_the_data(world_size):
    single = list(GlobalBatchSampler(40, 8, seed=0, epoch=0))
    per_rank = [
        list(GlobalBatchSampler(40, 8, seed=0, epoch=0, rank=r, world_size=world_size)) for r in range(world_size)
    ]
    for step, batch in enumerate(single):
        assert sum((rank[step] for rank in per_rank), []) == batch


def test_partial_last_batch_is_dropped_and_bad_splits_refused():
    assert len(GlobalBatchSampler(41, 8, seed=0, epoch=0)) == 5
    with pytest.raises(ValueError, match="divide evenly over 3 ranks"):
        GlobalBatchSampler(40, 8, seed=0, epoch=0, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        GlobalBatchSampler(4, 8, seed=0, epoch=0)


def test_flip_view_mirrors_only_when_asked():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    view = FlipView([(image, 7)])
    assert np.array_equal(view[(0, False)][0], image)
    assert np.array_equal(view[(0, True)][0], image[:, ::-1]) and view[(0, True)][1] == 7
    assert all(not flip for batch in GlobalBatchSampler(16, 8, 0, 0, flip=False) for _, flip in batch)
