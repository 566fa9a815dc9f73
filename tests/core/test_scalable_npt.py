"""The streamed NPT loss against npt_loss on the full cosine matrix: values, gradients, ties, memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nptface.core.heads import NPTHead, ScalableNPTHead, build_head
from nptface.core.losses import npt_loss
from nptface.core.scalable_npt import (
    nearest_proxy_cosines,
    scalable_npt_loss,
    streamed_topk_cosines,
)

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}


def problem(batch: int, classes: int, dim: int, seed: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, generator=generator, dtype=torch.float64).to(dtype)
    proxies = torch.randn(classes, dim, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return embeddings.requires_grad_(), proxies.requires_grad_(), labels


def full_matrix_npt(embeddings, proxies, labels, **kwargs):
    """The reference: npt_loss on the whole [B, C] cosine matrix, and its autograd gradients."""
    cos = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()
    loss = npt_loss(cos, labels, **kwargs)
    return (loss, *torch.autograd.grad(loss.sum(), (embeddings, proxies)))


def streamed_npt(embeddings, proxies, labels, **kwargs):
    loss = scalable_npt_loss(embeddings, proxies, labels, **kwargs)
    return (loss, *torch.autograd.grad(loss.sum(), (embeddings, proxies)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [7, 97, 333, 4096])
@pytest.mark.parametrize("k", [1, 6, 32])
def test_loss_and_gradients_match_npt_on_the_full_matrix(k, chunk_size, dtype):
    embeddings, proxies, labels = problem(16, 1000, 32, seed=k + chunk_size, dtype=dtype)
    loss, grad_e, grad_p = streamed_npt(embeddings, proxies, labels, k=k, chunk_size=chunk_size)
    ref_loss, ref_e, ref_p = full_matrix_npt(embeddings, proxies, labels, k=k)
    tol = TOLERANCE[dtype]
    assert loss.dtype == dtype
    # The loss sums up to 32 hinges in another order: equal to a relative 1e-6 in fp32.
    torch.testing.assert_close(loss, ref_loss, rtol=tol / 10, atol=tol / 10)
    torch.testing.assert_close(grad_e, ref_e, rtol=0, atol=tol)
    torch.testing.assert_close(grad_p, ref_p, rtol=0, atol=tol)
    assert grad_p.layout == torch.strided


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta,r", [(1.0, 1.0), (0.4, 2.0), (2.0, 0.5), (0.0, 1.0)])
def test_margin_radius_and_reduction_match_npt_loss(delta, r, reduction):
    embeddings, proxies, labels = problem(16, 500, 32, seed=3, dtype=torch.float64)
    kwargs = {"k": 6, "delta": delta, "r": r, "reduction": reduction}
    got = streamed_npt(embeddings, proxies, labels, chunk_size=97, **kwargs)
    for actual, expected in zip(got, full_matrix_npt(embeddings, proxies, labels, **kwargs)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 10, 97, 1000])
def test_streamed_topk_equals_topk_of_the_masked_full_matrix(chunk_size):
    embeddings, proxies, labels = problem(16, 1000, 32, seed=1, dtype=torch.float64)
    queries = F.normalize(embeddings.detach(), dim=1)
    values, indices, positives = streamed_topk_cosines(queries, proxies.detach(), labels, 6, chunk_size)
    cos = queries @ F.normalize(proxies.detach(), dim=1).t()
    expected = cos.scatter(1, labels[:, None], float("-inf")).topk(6, dim=1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=1e-12)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(positives, cos.gather(1, labels[:, None]).squeeze(1), rtol=0, atol=1e-12)
    assert not values.requires_grad


def test_streamed_topk_excludes_each_samples_own_proxy():
    embeddings, proxies, labels = problem(16, 300, 32, seed=2)
    with torch.no_grad():
        proxies[labels] = embeddings  # the own proxy is now the nearest of all, at cosine 1
    queries = F.normalize(embeddings.detach(), dim=1)
    values, indices, positives = streamed_topk_cosines(queries, proxies.detach(), labels, 8, chunk_size=37)
    assert not (indices == labels[:, None]).any()
    assert (values < 1 - 1e-4).all()
    torch.testing.assert_close(positives, torch.ones(16), rtol=0, atol=1e-6)


def test_nearest_proxy_cosines_put_the_positive_first_then_negatives_descending():
    embeddings, proxies, labels = problem(16, 400, 32, seed=4)
    cosines, index = nearest_proxy_cosines(embeddings, proxies, labels, k=5, chunk_size=64)
    assert cosines.shape == index.shape == (16, 6)
    assert torch.equal(index[:, 0], labels)
    assert (cosines[:, 1:-1] >= cosines[:, 2:]).all()
    full = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()
    torch.testing.assert_close(cosines, full.gather(1, index), rtol=0, atol=1e-6)


def duplicated_problem(k: int, seed: int):
    """Proxies in groups of three identical rows, so negatives tie at (and across) the k-th place."""
    generator = torch.Generator().manual_seed(seed)
    unique = torch.randn(40, 32, generator=generator)
    group = torch.arange(120) % 40
    proxies = unique[group].clone().requires_grad_()
    embeddings = torch.randn(16, 32, generator=generator).requires_grad_()
    labels = torch.randint(0, 120, (16,), generator=generator)
    # Count the samples whose k-th and (k+1)-th nearest negatives are copies of one proxy.
    cos = F.normalize(embeddings.detach().double(), dim=1) @ F.normalize(unique.double(), dim=1).t()
    straddling = 0
    for row, label in zip(cos, labels.tolist()):
        negatives = sorted((j for j in range(120) if j != label), key=lambda j: -row[group[j]].item())
        straddling += int(group[negatives[k - 1]] == group[negatives[k]])
    return embeddings, proxies, labels, group, straddling


@pytest.mark.parametrize("chunk_size", [5, 64, 1000])
@pytest.mark.parametrize("k", [1, 5])
def test_ties_between_identical_proxies_give_the_same_loss_and_grouped_gradients(k, chunk_size):
    embeddings, proxies, labels, group, straddling = duplicated_problem(k, seed=k)
    assert straddling >= 8  # the case really exercises ties at the k-th place
    loss, grad_e, grad_p = streamed_npt(embeddings, proxies, labels, k=k, chunk_size=chunk_size)
    ref_loss, ref_e, ref_p = full_matrix_npt(embeddings, proxies, labels, k=k)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_e, ref_e, rtol=0, atol=1e-5)
    # Which copy receives the gradient is arbitrary; what each group of copies receives is not.
    per_group = torch.zeros(40, 32).index_add_(0, group, grad_p)
    ref_per_group = torch.zeros(40, 32).index_add_(0, group, ref_p)
    torch.testing.assert_close(per_group, ref_per_group, rtol=0, atol=1e-5)


def test_k_all_is_refused_because_it_would_gather_every_proxy():
    embeddings, proxies, labels = problem(4, 50, 8, seed=0)
    with pytest.raises(ValueError, match="k='all'"):
        scalable_npt_loss(embeddings, proxies, labels, k="all")
    with pytest.raises(ValueError, match="k='all'"):
        ScalableNPTHead(50, 8, k="all")


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"k": 0}, ValueError, r"k must lie in \[1, 49\]"),
        ({"k": 50}, ValueError, r"k must lie in \[1, 49\]"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"k": True}, TypeError, "k must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"chunk_size": 64.0}, ValueError, "chunk_size must be a positive int"),
        ({"r": 0.0}, ValueError, "r .* must be > 0"),
        ({"delta": -0.1}, ValueError, "delta .* must be >= 0"),
        ({"reduction": "max"}, ValueError, "reduction must be"),
        ({"labels": torch.tensor([0, 1, 2, 50])}, ValueError, r"labels must lie in \[0, 49\]"),
        ({"labels": torch.tensor([0, 1, 2])}, ValueError, "labels must be a 1-D tensor of length 4"),
        ({"labels": torch.zeros(4)}, TypeError, "labels must be an integer tensor"),
        ({"embeddings": torch.randn(4, 9)}, ValueError, r"embeddings must have shape \[batch, 8\]"),
        ({"proxies": torch.randn(50, 8, 1)}, ValueError, "proxies must be a 2-D"),
    ],
)
def test_invalid_arguments_raise_with_the_offending_value(change, error, match):
    embeddings, proxies, labels = problem(4, 50, 8, seed=0)
    kwargs = {"embeddings": embeddings, "proxies": proxies, "labels": labels, **change}
    with pytest.raises(error, match=match):
        scalable_npt_loss(**kwargs)


@pytest.mark.parametrize("change", [{"k": 0}, {"chunk_size": 0}, {"r": -1.0}, {"delta": -1.0}, {"num_classes": 1}])
def test_head_rejects_invalid_settings(change):
    with pytest.raises(ValueError):
        ScalableNPTHead(**{"num_classes": 50, "embedding_dim": 8, **change})


def test_head_proxy_gradient_is_nonzero_only_on_positive_and_top_k_rows():
    torch.manual_seed(0)
    head = ScalableNPTHead(2000, 32, k=6, delta=4.0, chunk_size=300)  # delta 4: every hinge active
    embeddings, _, labels = problem(16, 2000, 32, seed=5)
    head(embeddings, labels).loss.backward()
    queries = F.normalize(embeddings.detach(), dim=1)
    _, negatives, _ = streamed_topk_cosines(queries, head.proxies.detach(), labels, 6, 300)
    touched = torch.cat([labels, negatives.flatten()]).unique()
    nonzero_rows = head.proxies.grad.abs().sum(dim=1).nonzero().squeeze(1)
    assert torch.equal(nonzero_rows, touched)
    assert 6 < len(touched) <= 16 * 7


def test_head_predictions_equal_the_full_matrix_argmax_where_it_matters():
    torch.manual_seed(0)
    head = ScalableNPTHead(300, 16, k=3, chunk_size=64)
    embeddings = torch.randn(64, 16)
    labels = head.cosines(embeddings).argmax(1)
    labels[::2] = torch.randint(0, 300, (32,))  # about half the batch now mislabelled
    out = head(embeddings, labels)
    assert out.cosines.shape == (64, 4)
    full_correct = head.cosines(embeddings).argmax(1) == labels
    assert torch.equal(out.predictions == labels, full_correct)
    assert torch.equal(out.predictions, head.cosines(embeddings).argmax(1))
    assert 0 < int(full_correct.sum()) < 64


def test_sgd_step_with_momentum_and_weight_decay_matches_npt_head():
    torch.manual_seed(0)
    plain = NPTHead(1500, 32, k=6, delta=0.8, r=1.5)
    scalable = ScalableNPTHead(1500, 32, k=6, delta=0.8, r=1.5, chunk_size=256)
    scalable.load_state_dict(plain.state_dict())
    embeddings, _, labels = problem(16, 1500, 32, seed=6)
    optimizers = [torch.optim.SGD(h.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4) for h in (plain, scalable)]
    for _ in range(3):  # momentum only matters from the second step
        for head, optimizer in zip((plain, scalable), optimizers):
            optimizer.zero_grad()
            head(embeddings, labels).loss.backward()
            optimizer.step()
    torch.testing.assert_close(scalable.proxies, plain.proxies, rtol=0, atol=1e-6)
    assert scalable.hparams() == {"k": 6, "delta": 0.8, "r": 1.5, "chunk_size": 256, "candidate_rate": 0.0}


def test_bfloat16_inputs_are_computed_in_float32():
    embeddings, proxies, labels = problem(8, 200, 16, seed=7)
    loss = scalable_npt_loss(embeddings.bfloat16(), proxies.detach().bfloat16(), labels, chunk_size=50)
    ref = scalable_npt_loss(embeddings.bfloat16().float(), proxies.detach().bfloat16().float(), labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor each aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.shapes.append(tuple(value.shape))
        return out


def test_no_batch_by_classes_tensor_is_ever_built():
    batch, classes, dim, chunk = 16, 20000, 32, 1024
    embeddings, proxies, labels = problem(batch, classes, dim, seed=8)
    with ShapeRecorder() as forward:
        loss = scalable_npt_loss(embeddings, proxies, labels, k=6, chunk_size=chunk)
    with ShapeRecorder() as backward:
        loss.backward()
    assert max(forward.shapes, key=lambda s: torch.Size(s).numel()) in ((chunk, dim), (batch, chunk))
    assert all(max(shape, default=0) <= chunk for shape in forward.shapes)
    # Backward: the only class-sized tensor is the dense [C, d] proxy gradient.
    assert {shape for shape in backward.shapes if classes in shape} == {(classes, dim)}
    assert proxies.grad is not None and proxies.grad.shape == (classes, dim)


def test_scalable_head_is_built_by_name_like_every_other_head():
    head = build_head("scalable_npt", 50, 8, k=3, chunk_size=16)
    assert isinstance(head, ScalableNPTHead) and head.hparams()["chunk_size"] == 16


def test_candidate_search_over_every_class_is_the_exact_search():
    torch.manual_seed(3)
    embeddings, proxies = torch.randn(16, 32), torch.randn(500, 32)
    labels = torch.randint(0, 500, (16,))
    exact, exact_index = nearest_proxy_cosines(embeddings, proxies, labels, 6, 97)
    pooled, pooled_index = nearest_proxy_cosines(embeddings, proxies, labels, 6, 97, candidates=torch.arange(500))
    assert torch.equal(pooled_index, exact_index)
    torch.testing.assert_close(pooled, exact)


def test_candidate_search_picks_negatives_only_from_the_pool_and_never_the_positive():
    torch.manual_seed(4)
    embeddings, proxies = torch.randn(16, 32), torch.randn(500, 32)
    labels = torch.randint(0, 500, (16,))
    candidates = torch.randperm(500)[:50]
    _, index = nearest_proxy_cosines(embeddings, proxies, labels, 6, 13, candidates=candidates)
    pool = set(candidates.tolist()) | set(labels.tolist())
    assert set(index[:, 1:].flatten().tolist()) <= pool
    assert not (index[:, 1:] == labels[:, None]).any()
    with pytest.raises(ValueError, match="candidate pool"):
        nearest_proxy_cosines(embeddings[:1], proxies, labels[:1], 6, 13, candidates=torch.tensor([1, 2]))


def test_head_with_candidates_remembers_each_class_top_k_and_is_exact_in_eval_mode():
    torch.manual_seed(5)
    head = ScalableNPTHead(400, 16, k=4, chunk_size=64, candidate_rate=0.1)
    exact = ScalableNPTHead(400, 16, k=4, chunk_size=64)
    exact.load_state_dict({"proxies": head.proxies.detach()})
    embeddings, labels = torch.randn(32, 16), torch.randperm(400)[:32]
    assert (head.neighbours == -1).all()
    out = head(embeddings, labels)
    remembered = head.neighbours[labels]
    assert (remembered >= 0).all() and not (remembered == labels[:, None]).any()
    with torch.no_grad():
        torch.testing.assert_close(head.cosines(embeddings).gather(1, remembered), out.cosines[:, 1:].detach())
    assert out.loss <= exact(embeddings, labels).loss + 1e-6, "a smaller pool can only miss hinges"
    head.eval()
    torch.testing.assert_close(head(embeddings, labels).loss, exact(embeddings, labels).loss)
    with pytest.raises(ValueError, match="candidate_rate"):
        ScalableNPTHead(400, 16, candidate_rate=1.5)


@pytest.mark.parametrize("chunk_size", [7, 97, 4096])
@pytest.mark.parametrize("k", [1, 6])
def test_semihard_streamed_loss_and_gradients_match_the_full_matrix(k, chunk_size):
    embeddings, proxies, labels = problem(16, 500, 8, seed=k + chunk_size, dtype=torch.float64)
    want = full_matrix_npt(embeddings, proxies, labels, k=k, negatives="semihard")
    got = streamed_npt(embeddings, proxies, labels, k=k, chunk_size=chunk_size, negatives="semihard")
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-9)


def test_semihard_streamed_search_returns_negatives_below_the_positive_first():
    embeddings, proxies, labels = problem(8, 300, 4, seed=1, dtype=torch.float64)
    queries = F.normalize(embeddings.detach(), dim=1)
    values, indices, positive = streamed_topk_cosines(queries, proxies.detach(), labels, 5, 64, negatives="semihard")
    cos = queries @ F.normalize(proxies.detach(), dim=1).t()
    assert torch.allclose(values, cos.gather(1, indices), atol=1e-12)
    assert bool((values < positive[:, None]).all())  # with this seed every sample has 5 negatives below its positive
    assert not bool((indices == labels[:, None]).any())


def test_semihard_scalable_head_trains_like_the_semihard_npt_head_and_still_predicts_the_nearest_proxy():
    torch.manual_seed(0)
    scalable = ScalableNPTHead(200, 8, k=4, chunk_size=37, negatives="semihard")
    reference = NPTHead(200, 8, k=4, negatives="semihard")
    reference.proxies.data.copy_(scalable.proxies.data)
    embeddings, labels = torch.randn(12, 8, dtype=torch.float32), torch.randint(0, 200, (12,))
    got, want = scalable(embeddings, labels), reference(embeddings, labels)
    assert torch.allclose(got.loss, want.loss, atol=1e-5)
    grad_got, grad_want = (
        torch.autograd.grad(out.loss, head.proxies)[0] for out, head in ((got, scalable), (want, reference))
    )
    assert torch.allclose(grad_got, grad_want, atol=1e-5)
    assert torch.equal(got.predictions, want.predictions)
    assert scalable.hparams()["negatives"] == "semihard"
