"""LazyRowSGD on the streamed NPT head's sparse proxy gradient against torch's dense SGD."""

from __future__ import annotations

import copy

import pytest
import torch

from nptface.core.heads import ScalableNPTHead
from nptface.server.training.lazy_sgd import LazyRowSGD, untouched_step_matrix

CLASSES, DIM, BATCH = 60, 8, 6
RECIPE = {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}


def make_head(sparse: bool) -> ScalableNPTHead:
    torch.manual_seed(0)
    head = ScalableNPTHead(CLASSES, DIM, k=3, chunk_size=16)
    head.sparse_grad = sparse
    return head


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
    """The trainer's wiring: the head's selected rows are caught up before the forward reads them."""
    optimizer = LazyRowSGD(head.parameters(), **hyper)
    head.before_gather = lambda rows: optimizer.catch_up_rows(head.proxies, rows)
    return optimizer


def dense_and_lazy(steps: int, lrs: list[float], **hyper) -> tuple[ScalableNPTHead, ScalableNPTHead, LazyRowSGD]:
    data = batches(steps)
    dense, lazy = make_head(sparse=False), make_head(sparse=True)
    train(dense, torch.optim.SGD(dense.parameters(), lr=lrs[0], **hyper), data, lrs)
    optimizer = lazy_optimizer(lazy, lr=lrs[0], **hyper)
    train(lazy, optimizer, data, lrs)
    return dense, lazy, optimizer


def test_sparse_gradient_holds_the_dense_gradient_on_the_gathered_rows():
    ((embeddings, labels),) = batches(1)
    dense, sparse = make_head(sparse=False), make_head(sparse=True)
    dense(embeddings, labels).loss.backward()
    sparse(embeddings, labels).loss.backward()
    assert sparse.proxies.grad.is_sparse
    assert sparse.proxies.grad.coalesce().indices().shape[1] <= BATCH * 4
    torch.testing.assert_close(sparse.proxies.grad.to_dense(), dense.proxies.grad)


def test_without_momentum_or_decay_it_is_dense_sgd_bit_for_bit():
    dense, lazy, _ = dense_and_lazy(6, [0.5] * 6)
    assert torch.equal(lazy.proxies, dense.proxies)


def test_with_weight_decay_and_a_changing_rate_but_no_momentum_it_follows_dense_sgd():
    # Untouched rows only shrink, which no cosine sees: the whole trajectory is dense SGD's.
    lrs = [0.1 * (i + 1) for i in range(4)] + [0.4, 0.04, 0.04, 0.004]  # warm-up, then two steps down
    dense, lazy, optimizer = dense_and_lazy(len(lrs), lrs, weight_decay=0.05)
    optimizer.catch_up()
    torch.testing.assert_close(lazy.proxies, dense.proxies, rtol=1e-5, atol=1e-6)
    assert not torch.equal(lazy.proxies, make_head(sparse=True).proxies)


def lazy_reference(data, lrs, momentum: float, nesterov: bool, weight_decay: float):
    """The documented semantics, slowly: dense SGD on every row; the search reads rows as last touched."""
    head = make_head(sparse=True)
    weights, velocity = head.proxies.detach().clone(), torch.zeros(CLASSES, DIM)

    def read_current(rows: torch.Tensor) -> None:
        head.proxies.data[rows] = weights[rows]

    head.before_gather = read_current
    for (embeddings, labels), lr in zip(data, lrs, strict=True):
        head.proxies.grad = None
        head(embeddings, labels).loss.backward()
        grad = head.proxies.grad.coalesce()
        update = grad.to_dense() + weight_decay * weights
        velocity = momentum * velocity + update
        weights = weights - lr * (update + momentum * velocity if nesterov else velocity)
        touched = grad.indices()[0]
        with torch.no_grad():
            head.proxies[touched] = weights[touched]
    return weights, velocity


@pytest.mark.parametrize("nesterov", [True, False])
def test_with_momentum_it_is_dense_sgd_but_the_search_reads_rows_as_last_touched(nesterov):
    lrs = [0.1 * (i + 1) for i in range(4)] + [0.4, 0.04, 0.04, 0.004]
    hyper = {**RECIPE, "nesterov": nesterov, "weight_decay": 0.05}  # decay large enough to show
    _, lazy, optimizer = dense_and_lazy(len(lrs), lrs, **hyper)
    optimizer.catch_up()
    weights, velocity = lazy_reference(batches(len(lrs)), lrs, **hyper)
    torch.testing.assert_close(lazy.proxies.detach(), weights)
    torch.testing.assert_close(optimizer.state_dict()["state"][0]["momentum_buffer"], velocity)


def test_a_step_writes_only_the_rows_its_gradient_touched():
    data = batches(3)
    head = make_head(sparse=True)
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
    head = make_head(sparse=True)
    optimizer = lazy_optimizer(head, lr=0.2, **RECIPE)
    train(head, optimizer, data[:3], lrs[:3])
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # catches up first, like a checkpoint
    saved_head = copy.deepcopy(head.state_dict())
    train(head, optimizer, data[3:], lrs[3:])
    optimizer.catch_up()

    resumed = make_head(sparse=True)
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
