import logging

import pytest
import torch
import torch.nn.functional as F

from nptface.server.training.collapse_guard import CollapseError, CollapseGuard, different_identity_cosine_sums


def test_different_identity_cosine_sums_match_the_pairwise_loop():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 5, generator=generator)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6])
    unit = F.normalize(embeddings.double(), dim=1)
    expected_sum, expected_pairs = 0.0, 0
    for i in range(12):
        for j in range(12):
            if labels[i] != labels[j]:
                expected_sum += float(unit[i] @ unit[j])
                expected_pairs += 1
    total, pairs = different_identity_cosine_sums(embeddings, labels).tolist()
    assert pairs == expected_pairs
    assert total == pytest.approx(expected_sum, abs=1e-9)


def test_collapsed_batch_reads_one_and_spread_batch_reads_near_zero():
    labels = torch.arange(64) // 2
    same = torch.ones(64, 8) + 1e-3 * torch.randn(64, 8)
    total, pairs = different_identity_cosine_sums(same, labels)
    assert float(total / pairs) > 0.999
    spread = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    total, pairs = different_identity_cosine_sums(spread, labels)
    assert abs(float(total / pairs)) < 0.02


def test_guard_warns_after_patience_windows_only(caplog):
    guard = CollapseGuard(threshold=0.9, patience=2, after_step=10)
    with caplog.at_level(logging.WARNING):
        assert guard.observe(0.99, step=5) is None  # before after_step
        assert guard.observe(0.99, step=20) is None  # streak 1
        assert guard.observe(0.5, step=40) is None  # streak broken
        assert guard.observe(0.95, step=60) is None
        message = guard.observe(0.97, step=80)
    assert message is not None and "EMBEDDING COLLAPSE" in message and "0.970" in message
    assert "EMBEDDING COLLAPSE" in caplog.text


def test_guard_stops_when_asked():
    guard = CollapseGuard(threshold=0.9, patience=1, action="stop")
    with pytest.raises(CollapseError, match="guard.action"):
        guard.observe(0.95, step=1)
    assert CollapseGuard(threshold=0.9, patience=1, action="off").observe(0.99, step=1) is None
