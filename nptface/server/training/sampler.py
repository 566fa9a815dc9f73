"""The order in which training images are seen: a pure function of (seed, epoch).

Exact resume needs the data position to be a number, not the state of an iterator: each epoch's
permutation and flip decisions are drawn from a generator seeded by (seed, epoch), and the run
consumes *global* batches of that permutation in order. A resumed run skips the global batches
already consumed; with several ranks, rank r takes the r-th equal slice of every global batch.
So where a run stands depends only on (epoch, batches done), whatever the number of processes
before or after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def epoch_order(num_items: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The permutation of item indices and the horizontal-flip decision for each position."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator), torch.rand(num_items, generator=generator) < 0.5


class GlobalBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Yields this rank's slice of each global batch as (index, flip) pairs; drops the last partial batch."""

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        flip: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"the global batch {global_batch} must divide evenly over {world_size} ranks")
        self.batches = num_items // global_batch
        if self.batches == 0:
            raise ValueError(f"{num_items} training images are fewer than one batch of {global_batch}")
        if not 0 <= start_batch <= self.batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.batches}]")
        self.order, self.flips = epoch_order(num_items, seed, epoch)
        if not flip:
            self.flips.zero_()
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.batches - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for batch in range(self.start_batch, self.batches):
            begin = batch * self.global_batch + self.rank * self.local_batch
            positions = range(begin, begin + self.local_batch)
            yield [(int(self.order[p]), bool(self.flips[p])) for p in positions]


class FlipView(Dataset):
    """A dataset indexed by (index, flip) pairs: mirrors the image when flip is set."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[np.ndarray, int]:
        index, flip = key
        image, label = self.dataset[index]
        return (np.ascontiguousarray(image[:, ::-1]) if flip else image), label
