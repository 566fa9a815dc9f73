"""Proxies sharded across two gloo ranks give the single-process loss and gradients exactly."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from nptface.core.scalable_npt import scalable_npt_loss, selected_npt_loss
from nptface.server.training.lazy_sgd import LazyRowSGD
from nptface.server.training.sharding.sharded_npt import sharded_npt_loss, sharded_selected_cosines

C, D, B_LOCAL, WORLD = 23, 8, 5, 2  # 23 rows split 12 / 11: shards of unequal size


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(WORLD * B_LOCAL, D, generator=generator, dtype=torch.float64)
    proxies = torch.randn(C, D, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, C, (WORLD * B_LOCAL,), generator=generator)
    return embeddings, proxies, labels


def _bounds(rank: int) -> tuple[int, int]:
    edges = [0, 12, C]
    return edges[rank], edges[rank + 1]


def _worker(rank: int, port: int, k: int, out: str, sparse: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        embeddings, proxies, labels = _problem()
        start, end = _bounds(rank)
        local = embeddings[rank * B_LOCAL : (rank + 1) * B_LOCAL].float().requires_grad_()
        shard = proxies[start:end].float().requires_grad_()
        local_labels = labels[rank * B_LOCAL : (rank + 1) * B_LOCAL]
        if sparse:
            rows = LazyRowSGD([shard], lr=0.1).lazy_rows(shard)
            cosines, _ = sharded_selected_cosines(local, local_labels, shard, start, C, k, 5, rows)
            loss = selected_npt_loss(cosines, 1.0, 1.0, "mean") / WORLD
        else:
            loss = sharded_npt_loss(local, local_labels, shard, start, C, k=k, chunk_size=5)
        loss.backward()
        assert shard.grad.is_sparse == sparse
        save_file(
            {"loss": loss.detach().reshape(1), "emb_grad": local.grad, "shard_grad": shard.grad.to_dense()},
            os.path.join(out, f"rank{rank}.safetensors"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("k,sparse", [(1, False), (6, False), (10, False), (6, True)])
def test_sharded_loss_and_gradients_equal_the_single_process_ones(k, sparse, tmp_path):
    """``sparse``: the shard's gradient as sparse COO rows (optim.sparse_proxies) holds the same values."""
    mp.spawn(_worker, args=(_free_port(), k, str(tmp_path), sparse), nprocs=WORLD, join=True)
    embeddings, proxies, labels = _problem()
    embeddings = embeddings.float().requires_grad_()
    proxies = proxies.float().requires_grad_()
    expected = scalable_npt_loss(embeddings, proxies, labels, k=k)
    expected.backward()
    results = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(WORLD)]
    total = sum(float(r["loss"]) for r in results)  # each rank holds L / W
    assert total == pytest.approx(float(expected), abs=1e-5)
    for rank, result in enumerate(results):
        start, end = _bounds(rank)
        torch.testing.assert_close(result["shard_grad"], proxies.grad[start:end], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            result["emb_grad"], embeddings.grad[rank * B_LOCAL : (rank + 1) * B_LOCAL], atol=1e-5, rtol=1e-5
        )
