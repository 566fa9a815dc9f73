"""A rank's proxy rows: bounds, the global gradient-norm clip, and the full state gathered and sliced back."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from nptface.core.heads import NPTHead
from nptface.server.training.config import OptimSection
from nptface.server.training.sharding.proxy_shard import (
    ShardedNPTHead,
    clip_sharded_grad_norm_,
    gather_full_state,
    shard_bounds,
    slice_full_state,
)

C, D, WORLD, MAX_NORM = 11, 4, 2, 0.5  # rows split 6 / 5


def test_shard_bounds_cover_every_row_once_with_sizes_differing_by_at_most_one():
    for classes, world in [(11, 2), (10, 3), (7, 7), (100, 8)]:
        bounds = [shard_bounds(classes, world, rank) for rank in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == classes
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_only_an_npt_head_with_integer_k_and_exact_search_can_be_sharded():
    with pytest.raises(ValueError, match="integer k"):
        ShardedNPTHead(NPTHead(C, D, k="all"), 0, WORLD, 4)
    with pytest.raises(ValueError, match="fewer than k"):
        ShardedNPTHead(NPTHead(C, D, k=5), 1, WORLD, 4)  # rank 1 holds 5 rows < k + 1
    with pytest.raises(ValueError, match="hardest negatives only"):
        ShardedNPTHead(NPTHead(C, D, k=2, negatives="semihard"), 0, WORLD, 4)


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone gradient small next to the proxies', the two shards' norms unequal: the shard term matters."""
    generator = torch.Generator().manual_seed(0)
    backbone_grad = 0.1 * torch.randn(3, D, generator=generator)
    proxy_grad = torch.randn(C, D, generator=generator) * torch.linspace(0.2, 2.0, C)[:, None]
    momentum = torch.randn(C, D, generator=generator)
    return backbone_grad, proxy_grad, momentum


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        full_head = NPTHead(C, D, k=3)
        head = ShardedNPTHead(full_head, rank, WORLD, chunk_size=4)
        backbone_grad, proxy_grad, momentum = _problem()
        backbone = nn.Parameter(torch.zeros(3, D))
        backbone.grad = backbone_grad.clone()
        head.proxies.grad = proxy_grad[head.start : head.stop].clone()
        total = clip_sharded_grad_norm_([backbone], head, MAX_NORM)

        optimizer = torch.optim.SGD(
            [
                {"name": "backbone", "params": [backbone]},
                {"name": "proxies", "params": [head.proxies], "weight_decay": 5e-4},
            ],
            lr=0.1,
            momentum=OptimSection().momentum,
        )
        optimizer.state[head.proxies]["momentum_buffer"] = momentum[head.start : head.stop].clone()
        full = gather_full_state(head, optimizer)
        assert (full is None) == (rank != 0)
        if full is not None:
            head_state, optimizer_state = full
            save_file(
                {
                    "proxies": head_state["proxies"],
                    "momentum": optimizer_state["state"][1]["momentum_buffer"],
                    "initial": full_head.proxies.detach(),
                },
                os.path.join(out, "full.safetensors"),
            )
        dist.barrier()
        # Slicing the gathered state gives each rank back its own rows, as a resume on any world size does.
        stored = load_file(os.path.join(out, "full.safetensors"))
        sliced_head, sliced_optimizer = slice_full_state(
            head,
            {"proxies": stored["proxies"]},
            {
                "state": {1: {"momentum_buffer": stored["momentum"]}},
                "param_groups": optimizer.state_dict()["param_groups"],
            },
        )
        head.load_state_dict(sliced_head)
        optimizer.load_state_dict(sliced_optimizer)
        save_file(
            {
                "total": total.reshape(1),
                "backbone_grad": backbone.grad,
                "shard_grad": head.proxies.grad,
                "shard": head.proxies.detach(),
                "shard_momentum": optimizer.state[head.proxies]["momentum_buffer"],
            },
            os.path.join(out, f"rank{rank}.safetensors"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clip_gather_and_slice_across_two_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    backbone_grad, proxy_grad, momentum = _problem()
    backbone, proxies = nn.Parameter(torch.zeros(3, D)), nn.Parameter(torch.zeros(C, D))
    backbone.grad, proxies.grad = backbone_grad.clone(), proxy_grad.clone()
    expected_total = nn.utils.clip_grad_norm_([backbone, proxies], MAX_NORM)

    full = load_file(tmp_path / "full.safetensors")
    torch.testing.assert_close(full["proxies"], full["initial"], atol=0, rtol=0)  # gathered in row order
    torch.testing.assert_close(full["momentum"], momentum, atol=0, rtol=0)
    for rank in range(WORLD):
        start, stop = shard_bounds(C, WORLD, rank)
        result = load_file(tmp_path / f"rank{rank}.safetensors")
        assert float(result["total"]) == pytest.approx(float(expected_total), rel=1e-6)
        torch.testing.assert_close(result["backbone_grad"], backbone.grad)
        torch.testing.assert_close(result["shard_grad"], proxies.grad[start:stop])
        torch.testing.assert_close(result["shard"], full["initial"][start:stop], atol=0, rtol=0)
        torch.testing.assert_close(result["shard_momentum"], momentum[start:stop], atol=0, rtol=0)
