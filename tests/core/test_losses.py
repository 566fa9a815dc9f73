"""The losses against slow, obviously-correct loop re-derivations, plus the paper's properties."""

from __future__ import annotations

import math

import pytest
import torch

from nptface.core.heads import (
    ArcFaceHead,
    CosFaceHead,
    NormSoftmaxHead,
    NPTHead,
    PartialFCArcFaceHead,
    ProxyTripletHead,
    build_head,
)
from nptface.core.losses import margin_softmax_loss, npt_loss


def npt_loop(cos: list[list[float]], labels: list[int], k: int | str, delta: float, r: float) -> list[float]:
    """NPT by its definition: sort the other classes by cosine, hinge the k largest."""
    out = []
    for row, y in zip(cos, labels):
        negatives = sorted((c for j, c in enumerate(row) if j != y), reverse=True)
        chosen = negatives if k == "all" else negatives[:k]
        out.append(2 * r * r * sum(max(0.0, c - row[y] + delta / (2 * r * r)) for c in chosen))
    return out


def margin_softmax_loop(
    cos: list[list[float]], labels: list[int], s: float, angular: float, additive: float
) -> list[float]:
    out = []
    for row, y in zip(cos, labels):
        theta = math.acos(max(-1.0, min(1.0, row[y])))
        if theta + angular > math.pi:
            target = row[y] - math.sin(math.pi - angular) * angular
        else:
            target = math.cos(theta + angular)
        logits = [s * c for c in row]
        logits[y] = s * (target - additive)
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(v - top) for v in logits))
        out.append(log_sum - logits[y])
    return out


def random_problem(batch: int, classes: int, seed: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    cos = torch.rand(batch, classes, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return cos.to(dtype), labels


NPT_CASES = [(1, 1.0, 1.0), (6, 1.0, 1.0), (3, 0.4, 2.0), ("all", 1.0, 1.0), (9, 2.0, 0.5)]
MARGIN_CASES = [(64.0, 0.0, 0.0), (64.0, 0.0, 0.35), (64.0, 0.5, 0.0), (30.0, 0.2, 0.1)]


@pytest.mark.parametrize("k,delta,r", NPT_CASES)
def test_npt_matches_loop_in_fp64_to_1e9(k, delta, r):
    cos, labels = random_problem(16, 10, seed=1)
    expected = torch.tensor(npt_loop(cos.tolist(), labels.tolist(), k, delta, r), dtype=torch.float64)
    got = npt_loss(cos, labels, k=k, delta=delta, r=r, reduction="none")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("k,delta,r", NPT_CASES)
def test_npt_matches_loop_in_fp32_to_1e5(k, delta, r):
    cos, labels = random_problem(16, 10, seed=2, dtype=torch.float32)
    expected = torch.tensor(npt_loop(cos.double().tolist(), labels.tolist(), k, delta, r))
    got = npt_loss(cos, labels, k=k, delta=delta, r=r, reduction="none")
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)


def test_npt_in_bf16_is_exact_on_rounded_inputs_and_within_stated_tolerance():
    """bf16 is upcast before the hinge, so its only error is rounding the cosines (2^-8 rel.)."""
    cos, labels = random_problem(32, 12, seed=3)
    rounded = cos.to(torch.bfloat16)
    got = npt_loss(rounded, labels, k=6, reduction="none")
    assert got.dtype == torch.float32
    on_rounded = torch.tensor(npt_loop(rounded.double().tolist(), labels.tolist(), 6, 1.0, 1.0), dtype=torch.float64)
    torch.testing.assert_close(got.double(), on_rounded, atol=1e-5, rtol=0)
    # Each cosine moves by <= 2^-9 (half a bf16 ulp below 1); each of the k hinges by twice that,
    # times 2r^2 = 2: so |error| <= 6 * 2 * 2 * 2^-9 per sample (hinges that switch on or off
    # change by at most the same amount).
    exact = torch.tensor(npt_loop(cos.tolist(), labels.tolist(), 6, 1.0, 1.0), dtype=torch.float64)
    assert (got.double() - exact).abs().max() <= 6 * 2 * 2 * 2**-9


@pytest.mark.parametrize("s,angular,additive", MARGIN_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_margin_softmax_matches_loop(s, angular, additive, dtype, tol):
    cos, labels = random_problem(16, 10, seed=4, dtype=dtype)
    # Put a few targets near theta = pi so ArcFace's fallback branch is exercised.
    cos[0, labels[0]] = -0.999
    cos[1, labels[1]] = -0.95
    expected = torch.tensor(
        margin_softmax_loop(cos.double().tolist(), labels.tolist(), s, angular, additive), dtype=torch.float64
    )
    got = margin_softmax_loss(cos, labels, s=s, angular_margin=angular, cosine_margin=additive, reduction="none")
    # fp32 logits are scaled by s = 64, so the fp32 tolerance is relative to the loss size.
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)


def test_margin_softmax_in_bf16_within_stated_tolerance():
    cos, labels = random_problem(16, 10, seed=5)
    got = margin_softmax_loss(cos.to(torch.bfloat16), labels, s=64.0, angular_margin=0.5, reduction="none")
    exact = torch.tensor(margin_softmax_loop(cos.tolist(), labels.tolist(), 64.0, 0.5, 0.0), dtype=torch.float64)
    # Rounding a cosine by 2^-9 moves an s=64 logit by 0.125; the loss (a log-sum-exp minus a
    # logit) moves by at most twice the largest logit error, before the acos' slope (<= 1/sin
    # theta, bounded here because |cos| <= 1 - 1e-3 for random inputs of this seed).
    assert (got.double() - exact).abs().max() < 2 * 64 * 2**-9 * 4


@pytest.mark.parametrize("k", [1, 3, "all"])
def test_npt_gradients_pass_gradcheck(k):
    cos, labels = random_problem(5, 6, seed=6)
    cos.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: npt_loss(c, labels, k=k, delta=0.7, r=1.3), (cos,))


@pytest.mark.parametrize("angular,additive", [(0.0, 0.0), (0.0, 0.35), (0.5, 0.0)])
def test_margin_softmax_gradients_pass_gradcheck(angular, additive):
    cos, labels = random_problem(5, 6, seed=7)
    cos = (cos * 0.95).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c: margin_softmax_loss(c, labels, s=8.0, angular_margin=angular, cosine_margin=additive), (cos,)
    )


def test_heads_gradcheck_through_normalisation_to_embeddings_and_proxies():
    torch.manual_seed(0)
    for head in (NPTHead(6, 4, k=2), ArcFaceHead(6, 4, s=4.0), CosFaceHead(6, 4, s=4.0)):
        head = head.double()
        emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
        labels = torch.tensor([0, 1, 2, 3, 5])

        def f(e, p, head=head, labels=labels):
            return torch.func.functional_call(head, {"proxies": p}, (e, labels)).loss

        assert torch.autograd.gradcheck(f, (emb, head.proxies.detach().clone().requires_grad_(True)))


def test_npt_excludes_target_from_negatives():
    """The authors' code zeroes the target cosine and ranks the whole row, so when fewer than k
    negatives have a positive cosine the positive slot (cosine 0) becomes a "negative". Here
    every negative is far (-0.9) and the sample is well classified: our loss is 0, theirs is not.
    """
    cos = torch.tensor([[0.6, -0.9, -0.9, -0.9]], dtype=torch.float64)
    labels = torch.tensor([0])
    ours = npt_loss(cos, labels, k=2, delta=1.0)
    assert ours.item() == 0.0

    zeroed = cos.clone()
    zeroed[0, 0] = 0.0
    authors_top2 = zeroed.topk(2, dim=1).values
    authors = 2 * (authors_top2 - cos[0, 0] + 0.5).clamp_min(0).sum()
    # The target's own zeroed slot contributes max(0, 0 - 0.6 + 0.5) = 0 here; with a weaker
    # positive it would not: cos_y = 0.3 gives 2 * (0 - 0.3 + 0.5) = 0.4 from the target slot.
    weaker = torch.tensor([[0.3, -0.9, -0.9, -0.9]], dtype=torch.float64)
    assert npt_loss(weaker, labels, k=2).item() == 0.0
    zeroed_weaker = weaker.clone()
    zeroed_weaker[0, 0] = 0.0
    authors_weaker = 2 * (zeroed_weaker.topk(2, dim=1).values - 0.3 + 0.5).clamp_min(0).sum()
    assert authors.item() == 0.0
    assert authors_weaker.item() == pytest.approx(0.4)


def test_npt_k_all_equals_proxy_triplet_sum():
    cos, labels = random_problem(8, 7, seed=8)
    all_neg = npt_loss(cos, labels, k="all", reduction="none")
    by_k = npt_loss(cos, labels, k=6, reduction="none")  # C - 1 = 6 negatives: the same set
    torch.testing.assert_close(all_neg, by_k, atol=1e-12, rtol=0)
    brute = torch.stack(
        [
            2 * sum((cos[i, j] - cos[i, labels[i]] + 0.5).clamp_min(0) for j in range(7) if j != labels[i])
            for i in range(8)
        ]
    )
    torch.testing.assert_close(all_neg, brute, atol=1e-12, rtol=0)
    torch.manual_seed(0)
    emb = torch.randn(8, 5)
    head = ProxyTripletHead(7, 5)
    out = head(emb, labels)
    torch.testing.assert_close(out.loss, npt_loss(out.cosines, labels, k="all"))


def test_property1_loss_below_delta_means_nearest_proxy_is_correct():
    """Paper, Property 1: if L_i < delta (with r = 1, 2 * hinge of the nearest negative) then
    cos_y > max negative cos, i.e. the nearest proxy classifies the sample correctly."""
    cos, labels = random_problem(4000, 20, seed=9)
    # Lift the targets so that many samples land both sides of the L_i = delta boundary.
    cos[torch.arange(4000), labels] += torch.linspace(0, 1.5, 4000, dtype=torch.float64)
    cos = cos.clamp(-1, 1)
    for k in (1, 6):
        per_sample = npt_loss(cos, labels, k=k, delta=1.0, reduction="none")
        below = per_sample < 1.0
        assert below.sum() > 100 and (~below).sum() > 100
        correct = cos.argmax(dim=1) == labels
        assert correct[below].all()


@pytest.mark.parametrize("name", ["npt", "proxytriplet", "normsoftmax", "cosface", "arcface"])
def test_heads_are_invariant_to_embedding_norm(name):
    torch.manual_seed(1)
    head = build_head(name, num_classes=9, embedding_dim=8)
    emb = torch.randn(6, 8)
    labels = torch.randint(0, 9, (6,))
    scales = torch.tensor([0.01, 1.0, 3.0, 100.0, 7.0, 0.5])[:, None]
    torch.testing.assert_close(head(emb, labels).loss, head(emb * scales, labels).loss, atol=1e-5, rtol=1e-5)


def test_heads_share_one_interface_and_expose_cosines():
    torch.manual_seed(2)
    emb = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3])
    for head in (
        NPTHead(5, 8, k=2),
        ProxyTripletHead(5, 8),
        NormSoftmaxHead(5, 8),
        CosFaceHead(5, 8),
        ArcFaceHead(5, 8),
    ):
        out = head(emb, labels)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert out.cosines.shape == (4, 5)
        assert out.cosines.abs().max() <= 1 + 1e-6
        out.loss.backward()
        assert head.proxies.grad is not None and torch.isfinite(head.proxies.grad).all()


def test_arcface_is_finite_and_monotonic_past_pi():
    """Near theta + m > pi the plain cos(theta + m) turns back up; the fallback keeps the target
    logit decreasing as the angle grows, and the gradient finite at cos = -1 and 1."""
    thetas = torch.linspace(math.pi - 1.0, math.pi, 200, dtype=torch.float64)
    cos = torch.stack([thetas.cos(), torch.zeros_like(thetas)], dim=1).requires_grad_(True)
    labels = torch.zeros(200, dtype=torch.long)
    per_sample = margin_softmax_loss(cos, labels, s=64.0, angular_margin=0.5, reduction="none")
    assert torch.isfinite(per_sample).all()
    assert (per_sample.diff() >= -1e-9).all(), "loss must not decrease as the angle grows"
    per_sample.sum().backward()
    assert torch.isfinite(cos.grad).all()
    edge = torch.tensor([[1.0, 0.2], [-1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    margin_softmax_loss(edge, torch.tensor([0, 0]), angular_margin=0.5).backward()
    assert torch.isfinite(edge.grad).all()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: npt_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long)), "2-D"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 4])), r"labels must lie in \[0, 3\]"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, -1])), "labels must lie"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 1]), k=4), r"k must lie in \[1, 3\]"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 1]), k=0), "k must lie"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 1]), k="most"), "k must be an int or 'all'"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0.0, 1.0])), "integer"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0])), "length 2"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 1]), k=2, r=0.0), "radius"),
        (lambda: npt_loss(torch.zeros(2, 4), torch.tensor([0, 1]), k=2, reduction="avg"), "reduction"),
        (lambda: NPTHead(4, 8, k=5), r"k must lie in \[1, 3\]"),
        (lambda: build_head("sphereface", 4, 8), "unknown head"),
        (lambda: NPTHead(4, 8, k=2)(torch.zeros(2, 7), torch.tensor([0, 1])), r"\[batch, 8\]"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def semihard_loop(cos: list[list[float]], labels: list[int], k: int, delta: float, r: float) -> list[float]:
    """Semi-hard NPT by its definition: the k nearest negatives below the positive, topped up with
    the negatives at or above it that are nearest to it."""
    out = []
    for row, y in zip(cos, labels):
        others = [c for j, c in enumerate(row) if j != y]
        below = sorted((c for c in others if c < row[y]), reverse=True)
        above = sorted(c for c in others if c >= row[y])
        chosen = (below + above)[:k]
        out.append(2 * r * r * sum(max(0.0, c - row[y] + delta / (2 * r * r)) for c in chosen))
    return out


@pytest.mark.parametrize("k", [1, 3, 6])
def test_semihard_npt_matches_loop_in_fp64(k):
    cos, labels = random_problem(12, 15, seed=k)
    got = npt_loss(cos, labels, k=k, reduction="none", negatives="semihard")
    want = torch.tensor(semihard_loop(cos.tolist(), labels.tolist(), k, 1.0, 1.0), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)


def test_semihard_ignores_negatives_that_beat_the_positive():
    cos = torch.tensor([[0.3, 0.9, 0.2, 0.1, -0.5]], dtype=torch.float64)
    labels = torch.tensor([0])
    # Semi-hard k=2: 0.2 and 0.1 (0.9 beats the positive and is skipped); hardest k=2: 0.9 and 0.2.
    assert npt_loss(cos, labels, k=2, negatives="semihard").item() == pytest.approx(2 * ((0.4) + (0.3)))
    assert npt_loss(cos, labels, k=2).item() == pytest.approx(2 * ((1.1) + (0.4)))


def test_semihard_equals_hardest_once_the_positive_beats_every_negative():
    cos, labels = random_problem(10, 20, seed=3)
    cos = cos * 0.5
    cos.scatter_(1, labels[:, None], 0.9)
    assert torch.equal(
        npt_loss(cos, labels, k=6, negatives="semihard", reduction="none"), npt_loss(cos, labels, k=6, reduction="none")
    )


def test_unknown_negatives_setting_is_refused_by_loss_and_head():
    cos, labels = random_problem(2, 5, seed=0)
    with pytest.raises(ValueError, match="negatives must be one of"):
        npt_loss(cos, labels, k=2, negatives="easy")
    with pytest.raises(ValueError, match="negatives must be one of"):
        NPTHead(5, 4, k=2, negatives="easy")


def test_npt_head_can_switch_to_semihard_between_steps():
    head = NPTHead(8, 4, k=2)
    embeddings, labels = torch.randn(5, 4), torch.randint(0, 8, (5,))
    hardest = head(embeddings, labels).loss
    head.negatives = "semihard"
    assert head(embeddings, labels).loss <= hardest
    assert head.hparams()["negatives"] == "semihard"


def test_partialfc_arcface_with_every_class_sampled_is_arcface():
    torch.manual_seed(0)
    full, sampled = ArcFaceHead(12, 8), PartialFCArcFaceHead(12, 8, sample_rate=1.0)
    sampled.load_state_dict(full.state_dict())
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 3, 3, 7, 11, 5])
    assert torch.allclose(sampled(embeddings, labels).loss, full(embeddings, labels).loss, atol=1e-6)


def test_partialfc_arcface_keeps_the_batch_classes_and_trains_only_sampled_rows():
    torch.manual_seed(1)
    head = PartialFCArcFaceHead(100, 8, sample_rate=0.05)
    labels = torch.tensor([2, 2, 40, 77, 99, 13])
    out = head(torch.randn(6, 8), labels)
    assert out.cosines.shape == (6, 5), "5 % of 100 classes, the batch's 5 classes among them"
    out.loss.backward()
    touched = (head.proxies.grad.abs().sum(dim=1) > 0).nonzero().flatten()
    assert set(touched.tolist()) == set(labels.tolist())
    head.eval()
    assert head(torch.randn(6, 8), labels).cosines.shape == (6, 100), "evaluation sees every class"


def test_partialfc_arcface_samples_every_batch_class_even_beyond_its_share():
    torch.manual_seed(0)
    head = PartialFCArcFaceHead(100, 8, sample_rate=0.03)
    labels = torch.tensor([5, 5, 17, 42, 60, 99])
    out = head(torch.randn(6, 8), labels)
    assert out.cosines.shape == (6, 5), "3 of 100 classes are fewer than the batch's 5 distinct ones"
    out.loss.backward()
    assert set((head.proxies.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()) == set(labels.tolist())
