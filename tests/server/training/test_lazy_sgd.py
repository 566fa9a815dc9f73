"""LazyRowSGD on the streamed NPT head's sparse proxy gradient against torch's dense SGD."""

from __future__ import annotations

import copy

import pytest
import torch

from nptface.core.heads import ScalableNPTHead
from nptface.server.training.lazy_sgd import LazyRowSGD, untouched_step_matrix

CLASSES, DIM, BATCH = 60, 8, 6
RECIPE = {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}


def make_head() -> ScalableNPTHead:
    torch.manual_seed(0)
    return ScalableNPTHead(CLASSES, DIM, k=3, chunk_size=16)


def batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH, DIM, generator=generator), torch.randint(0, CLASSES, (BATCH,), generator=generator))
        for _ in range(steps)
    ]


def train(head: ScalableNPTHead, optimizer: torch.optim.SGD, data, lrs) -> None:
    for (embeddings, labels), lr in zip(data, lrs, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        head(embeddings, labels).loss.backward()
        optimizer.step()


def lazy_optimizer(head: ScalableNPTHead, **hyper) -> LazyRowSGD:
    """The trainer's wiring: the head reads its proxies through the optimiser, as they are now."""
    optimizer = LazyRowSGD(head.parameters(), **hyper)
    head.lazy_rows = optimizer.lazy_rows(head.proxies)
    return optimizer


def dense_and_lazy(steps: int, lrs: list[float], **hyper) -> tuple[ScalableNPTHead, ScalableNPTHead, LazyRowSGD]:
    data = batches(steps)
    dense, lazy = make_head(), make_head()
    train(dense, torch.optim.SGD(dense.parameters(), lr=lrs[0], **hyper), data, lrs)
    optimizer = lazy_optimizer(lazy, lr=lrs[0], **hyper)
    train(lazy, optimizer, data, lrs)
    return dense, lazy, optimizer


def test_sparse_gradient_holds_the_dense_gradient_on_the_gathered_rows():
    ((embeddings, labels),) = batches(1)
    dense, sparse = make_head(), make_head()
    lazy_optimizer(sparse, lr=0.1)
    dense(embeddings, labels).loss.backward()
    sparse(embeddings, labels).loss.backward()
    assert sparse.proxies.grad.is_sparse
    assert sparse.proxies.grad.coalesce().indices().shape[1] <= BATCH * 4
    torch.testing.assert_close(sparse.proxies.grad.to_dense(), dense.proxies.grad)


def test_without_momentum_or_decay_it_is_dense_sgd_bit_for_bit():
    dense, lazy, _ = dense_and_lazy(6, [0.5] * 6)
    assert torch.equal(lazy.proxies, dense.proxies)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_with_momentum_decay_and_a_changing_rate_it_follows_dense_sgd(momentum, nesterov):
    lrs = [0.1 * (i + 1) for i in range(4)] + [0.4, 0.04, 0.04, 0.004]  # warm-up, then two steps down
    hyper = {"momentum": momentum, "nesterov": nesterov, "weight_decay": 0.05}  # decay large enough to show
    data = batches(len(lrs))
    dense, lazy = make_head(), make_head()
    dense_optimizer = torch.optim.SGD(dense.parameters(), lr=lrs[0], **hyper)
    optimizer = lazy_optimizer(lazy, lr=lrs[0], **hyper)
    train(dense, dense_optimizer, data, lrs)
    train(lazy, optimizer, data, lrs)
    assert not torch.equal(lazy.proxies, make_head().proxies)
    lazy_state = optimizer.state_dict()  # catches every row up first
    torch.testing.assert_close(lazy.proxies, dense.proxies, rtol=1e-5, atol=1e-6)
    if momentum:
        dense_buffer = dense_optimizer.state_dict()["state"][0]["momentum_buffer"]
        torch.testing.assert_close(lazy_state["state"][0]["momentum_buffer"], dense_buffer, rtol=1e-5, atol=1e-6)


def test_the_head_reads_untouched_rows_as_dense_sgd_has_them_now():
    data = batches(3)
    dense, lazy = make_head(), make_head()
    dense_optimizer = torch.optim.SGD(dense.parameters(), lr=0.3, **RECIPE)
    optimizer = lazy_optimizer(lazy, lr=0.3, **RECIPE)
    train(dense, dense_optimizer, data, [0.3] * 3)
    train(lazy, optimizer, data, [0.3] * 3)
    stale = (lazy.proxies != dense.proxies).any(dim=1)
    assert stale.any()  # rows not written since their last gradient...
    now = optimizer.current_rows(lazy.proxies, slice(None))
    torch.testing.assert_close(now, dense.proxies.detach(), rtol=1e-5, atol=1e-6)  # ...are read as dense SGD's


def test_a_step_writes_only_the_rows_its_gradient_touched():
    data = batches(3)
    head = make_head()
    optimizer = lazy_optimizer(head, lr=0.3, **RECIPE)
    train(head, optimizer, data[:2], [0.3, 0.3])
    before = head.proxies.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    head(*data[2]).loss.backward()
    touched = head.proxies.grad.coalesce().indices()[0]
    optimizer.step()
    changed = (head.proxies != before).any(dim=1).nonzero().flatten()
    assert set(changed.tolist()) <= set(touched.tolist())
    assert len(changed) > 0


def test_the_catch_up_of_n_idle_steps_is_the_matrix_power_at_a_constant_rate():
    hyper = (0.1, 5e-4, 0.9, True)
    row, velocity = torch.randn(DIM, dtype=torch.float64), torch.randn(DIM, dtype=torch.float64)
    w, b = row.clone(), velocity.clone()
    lr, decay, momentum, _ = hyper
    for _ in range(7):  # dense Nesterov SGD on a row whose gradient is zero
        update = decay * w
        b = momentum * b + update
        w = w - lr * (update + momentum * b)
    power = torch.linalg.matrix_power(untouched_step_matrix(*hyper), 7)
    torch.testing.assert_close(power[0, 0] * row + power[0, 1] * velocity, w)
    torch.testing.assert_close(power[1, 0] * row + power[1, 1] * velocity, b)


def test_resuming_from_its_state_dict_gives_the_same_result():
    data, lrs = batches(6), [0.2, 0.2, 0.2, 0.02, 0.02, 0.02]
    head = make_head()
    optimizer = lazy_optimizer(head, lr=0.2, **RECIPE)
    train(head, optimizer, data[:3], lrs[:3])
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # catches up first, like a checkpoint
    saved_head = copy.deepcopy(head.state_dict())
    train(head, optimizer, data[3:], lrs[3:])
    optimizer.catch_up()

    resumed = make_head()
    resumed.load_state_dict(saved_head)
    resumed_optimizer = lazy_optimizer(resumed, lr=0.2, **RECIPE)
    resumed_optimizer.load_state_dict(saved_optimizer)
    train(resumed, resumed_optimizer, data[3:], lrs[3:])
    resumed_optimizer.catch_up()
    assert torch.equal(resumed.proxies, head.proxies)


def test_dense_gradients_take_torchs_own_sgd_step():
    torch.manual_seed(0)
    layer = torch.nn.Linear(DIM, 3)
    twin = copy.deepcopy(layer)
    reference = torch.optim.SGD(layer.parameters(), lr=0.1, **RECIPE)
    lazy = LazyRowSGD(twin.parameters(), lr=0.1, **RECIPE)
    for embeddings, _ in batches(3):
        for model, optimizer in ((layer, reference), (twin, lazy)):
            optimizer.zero_grad()
            model(embeddings).square().sum().backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), twin.parameters()))


def test_it_refuses_dampening():
    with pytest.raises(ValueError, match="dampening"):
        LazyRowSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9, dampening=0.1)
