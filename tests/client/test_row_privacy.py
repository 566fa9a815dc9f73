"""The Gaussian mechanism on bank rows and its accounting (proxy-sharing = dp)."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.client.row_privacy import clip_rows, gaussian_mechanism, noised_rows
from nptface.server.federation.privacy import calibrate, epsilon_after


def test_clipping_bounds_every_row_and_leaves_short_rows_alone():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 16)) * rng.uniform(0.1, 10, size=(50, 1))
    clipped = clip_rows(rows, 1.5)
    norms = np.linalg.norm(clipped, axis=1)
    assert norms.max() <= 1.5 + 1e-9
    short = np.linalg.norm(rows, axis=1) <= 1.5
    np.testing.assert_array_equal(clipped[short], rows[short])
    np.testing.assert_allclose(norms[~short], 1.5)
    np.testing.assert_allclose(
        clipped[~short] / norms[~short, None], rows[~short] / np.linalg.norm(rows[~short], axis=1, keepdims=True)
    )


def test_noise_has_the_stated_scale_per_coordinate():
    rows = np.tile(np.eye(1, 64), (4000, 1)) * 3.0  # every row is clipped to norm 0.5 first
    noisy = gaussian_mechanism(rows, clip=0.5, noise_multiplier=1.3, rng=np.random.default_rng(1))
    noise = noisy - clip_rows(rows, 0.5)
    assert noise.std() == pytest.approx(1.3 * 0.5, rel=0.01)
    assert abs(noise.mean()) < 0.005


def test_what_leaves_the_client_is_unit_length_and_not_the_clean_row():
    rows = np.eye(3, 32)
    sent = noised_rows(rows, 1.0, 1.0, np.random.default_rng(2))
    np.testing.assert_allclose(np.linalg.norm(sent, axis=1), 1.0, rtol=1e-5)
    assert (np.abs((sent * rows).sum(1)) < 0.9).all()


def test_noise_multiplier_is_the_smallest_that_meets_the_target_epsilon():
    privacy = calibrate(epsilon=8.0, delta=1e-5, rounds=5, clip=1.0)
    assert privacy.epsilon <= 8.0
    assert epsilon_after(privacy.noise_multiplier * 0.98, 5, 1e-5) > 8.0, "2% less noise must break the target"
    assert epsilon_after(privacy.noise_multiplier, 10, 1e-5) > privacy.epsilon, "more releases spend more"
    assert epsilon_after(privacy.noise_multiplier, 0, 1e-5) == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_clip_or_noise_is_refused(bad):
    with pytest.raises(ValueError, match="clip"):
        clip_rows(np.ones((1, 2)), bad)
    with pytest.raises(ValueError, match="noise_multiplier"):
        gaussian_mechanism(np.ones((1, 2)), 1.0, bad, np.random.default_rng(0))
