"""Specification of nptface.core.synthetic: procedural faces, a pure function of their keys."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.core.synthetic import (
    CLIENT_IDS,
    DOMAINS,
    HELDOUT_IDS,
    SERVER_IDS,
    Domain,
    FaceRenderer,
    get_domain,
    identity_vector,
    with_overrides,
)

RANGES = {"server": SERVER_IDS, "client": CLIENT_IDS, "heldout": HELDOUT_IDS}
SIZE = 64  # small enough to keep the file fast, large enough for every feature to be drawn


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer(SIZE, seed=0)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def horizontal_and_vertical_gradient_energy(images: list[np.ndarray]) -> float:
    """Mean absolute difference of neighbouring grey pixels: a crude high-frequency measure."""
    grey = np.stack(images).astype(np.float64).mean(axis=-1)
    return float((np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=2)).mean()) / 2)


# -- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_same_keys_give_same_pixels_across_renderer_instances(domain: str) -> None:
    first = FaceRenderer(SIZE, seed=7).render(1_234_567, 3, domain)
    second = FaceRenderer(SIZE, seed=7).render(1_234_567, 3, domain)

    np.testing.assert_array_equal(first, second)


def test_rendering_other_images_in_between_does_not_change_pixels(renderer: FaceRenderer) -> None:
    before = renderer.render(42, 5, "wild")
    for index in range(6):
        renderer.render(43 + index, index, "cctv-lowres")
    after = renderer.render(42, 5, "wild")

    np.testing.assert_array_equal(before, after)


def test_named_domain_and_domain_object_render_identically(renderer: FaceRenderer) -> None:
    by_name = renderer.render(10, 1, "phone-lowlight")
    by_object = renderer.render(10, 1, DOMAINS["phone-lowlight"])

    np.testing.assert_array_equal(by_name, by_object)


@pytest.mark.parametrize(
    ("changed", "other_keys"),
    [
        ("seed", dict(seed=1, identity=10, index=0, domain="wild")),
        ("identity", dict(seed=0, identity=11, index=0, domain="wild")),
        ("index", dict(seed=0, identity=10, index=1, domain="wild")),
        ("domain", dict(seed=0, identity=10, index=0, domain="studio")),
    ],
)
def test_changing_any_key_changes_the_pixels(changed: str, other_keys: dict) -> None:
    reference = FaceRenderer(SIZE, seed=0).render(10, 0, "wild")
    renderer = FaceRenderer(SIZE, seed=other_keys["seed"])
    other = renderer.render(other_keys["identity"], other_keys["index"], other_keys["domain"])

    # Not merely unequal somewhere: a different key is a visibly different image.
    assert mean_abs_diff(reference, other) > 5.0, f"changing the {changed} barely changed the image"


def test_seed_changes_who_an_identity_is() -> None:
    assert not np.array_equal(identity_vector(10, seed=0), identity_vector(10, seed=1))


# -- identity ranges and look-alikes -------------------------------------------------------------


def test_id_ranges_are_disjoint_and_together_cover_every_valid_id() -> None:
    names = list(RANGES)
    for i, first in enumerate(names):
        assert RANGES[first].step == 1 and len(RANGES[first]) > 0, first
        for second in names[i + 1 :]:
            a, b = RANGES[first], RANGES[second]
            assert max(a.start, b.start) >= min(a.stop, b.stop), f"{first} and {second} overlap"
    assert sum(len(ids) for ids in RANGES.values()) == max(ids.stop for ids in RANGES.values())
    assert min(ids.start for ids in RANGES.values()) == 0


def test_disjoint_id_ranges_never_collide() -> None:
    """Ids sampled from all three ranges, boundaries included, are all different people."""
    rng = np.random.default_rng(0)
    ids = [0, SERVER_IDS.stop - 1, CLIENT_IDS.start, CLIENT_IDS.stop - 1, HELDOUT_IDS.start, HELDOUT_IDS.stop - 1]
    for ids_range in RANGES.values():
        ids += [int(i) for i in rng.integers(ids_range.start, ids_range.stop, 10)]
    vectors = np.stack([identity_vector(identity, lookalike_share=0.0) for identity in ids])

    distances = np.abs(vectors[:, None, :] - vectors[None, :, :]).mean(axis=-1)
    off_diagonal = distances[~np.eye(len(ids), dtype=bool)]
    assert off_diagonal.min() > 0.15  # unrelated uniform vectors are ~1/3 apart; equal ones 0


def test_lookalike_families_never_straddle_range_boundaries() -> None:
    for ids_range in RANGES.values():
        assert ids_range.start % 2 == 0 and ids_range.stop % 2 == 0  # families are consecutive pairs
    for boundary in (CLIENT_IDS.start, HELDOUT_IDS.start):
        last_below = identity_vector(boundary - 1, lookalike_share=1.0)
        first_above = identity_vector(boundary, lookalike_share=1.0)
        assert mean_abs_diff(last_below, first_above) > 0.15


def family_and_unrelated_distances(share: float, families: int = 40) -> tuple[float, float]:
    """Mean |difference| of the two members of each family, and of members of different families."""
    family = [
        mean_abs_diff(identity_vector(2 * k, lookalike_share=share), identity_vector(2 * k + 1, lookalike_share=share))
        for k in range(families)
    ]
    unrelated = [
        mean_abs_diff(identity_vector(2 * k, lookalike_share=share), identity_vector(2 * k + 3, lookalike_share=share))
        for k in range(families)
    ]
    return float(np.mean(family)), float(np.mean(unrelated))


def test_full_lookalike_share_makes_family_members_much_closer_than_strangers() -> None:
    family, unrelated = family_and_unrelated_distances(share=1.0)

    assert family < 0.4 * unrelated


def test_zero_lookalike_share_makes_family_members_strangers() -> None:
    family, unrelated = family_and_unrelated_distances(share=0.0)

    assert family > 0.8 * unrelated


def test_lookalikes_share_hair_style_glasses_and_beard() -> None:
    for k in range(10):
        first, second = identity_vector(2 * k, lookalike_share=1.0), identity_vector(2 * k + 1, lookalike_share=1.0)
        np.testing.assert_array_equal(first[[6, 24, 26]], second[[6, 24, 26]])
        assert not np.array_equal(first, second)


def test_identity_vector_lies_in_unit_cube() -> None:
    vectors = np.stack([identity_vector(i, lookalike_share=share) for i in range(20) for share in (0.0, 1.0)])

    assert vectors.min() >= 0.0 and vectors.max() <= 1.0


# -- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 112])
@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_domain_renders_rgb_uint8_of_the_requested_size(size: int, domain: str) -> None:
    image = FaceRenderer(size).render(3, 0, domain)

    assert image.shape == (size, size, 3)
    assert image.dtype == np.uint8
    assert image.std() > 5.0  # a face was drawn, not a flat fill


def test_lowlight_phone_images_are_darker_than_studio(renderer: FaceRenderer) -> None:
    studio = np.mean([renderer.render(identity, 0, "studio").mean() for identity in range(20)])
    lowlight = np.mean([renderer.render(identity, 0, "phone-lowlight").mean() for identity in range(20)])

    assert lowlight < 0.6 * studio


def test_cctv_images_have_less_fine_detail_than_studio() -> None:
    renderer = FaceRenderer(112)
    studio = horizontal_and_vertical_gradient_energy([renderer.render(identity, 0, "studio") for identity in range(20)])
    cctv = horizontal_and_vertical_gradient_energy(
        [renderer.render(identity, 0, "cctv-lowres") for identity in range(20)]
    )

    assert cctv < 0.7 * studio


def same_and_other_identity_pixel_distances(
    domain: str, identities: int = 12, per_identity: int = 4
) -> tuple[float, float]:
    renderer = FaceRenderer(SIZE)
    images = np.stack([renderer.render(100 + i, j, domain) for i in range(identities) for j in range(per_identity)])
    flat = images.reshape(len(images), -1).astype(np.float32)
    labels = np.repeat(np.arange(identities), per_identity)
    squared = ((flat[:, None, :] - flat[None, :, :]) ** 2).mean(axis=-1)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    return float(squared[same].mean()), float(squared[labels[:, None] != labels[None, :]].mean())


def test_studio_images_of_one_identity_are_closer_in_pixels_than_images_of_others() -> None:
    same, other = same_and_other_identity_pixel_distances("studio")

    assert same < 0.6 * other


def test_wild_nuisance_hides_identity_in_pixels_more_than_studio() -> None:
    studio_same, studio_other = same_and_other_identity_pixel_distances("studio")
    wild_same, wild_other = same_and_other_identity_pixel_distances("wild")

    assert wild_same / wild_other > studio_same / studio_other + 0.2


# -- bad inputs -----------------------------------------------------------------------------------


def test_unknown_domain_name_lists_the_valid_ones(renderer: FaceRenderer) -> None:
    with pytest.raises(ValueError, match="unknown synthetic domain 'underwater'") as raised:
        renderer.render(0, 0, "underwater")
    for name in DOMAINS:
        assert repr(name) in str(raised.value)
    with pytest.raises(ValueError, match="underwater"):
        get_domain("underwater")


@pytest.mark.parametrize("identity", [-1, HELDOUT_IDS.stop])
def test_identity_outside_all_ranges_is_rejected(renderer: FaceRenderer, identity: int) -> None:
    with pytest.raises(ValueError, match=f"identity ids must lie in \\[0, {HELDOUT_IDS.stop}\\), got {identity}"):
        renderer.render(identity, 0)
    with pytest.raises(ValueError, match="identity ids"):
        identity_vector(identity)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_lookalike_share_outside_unit_interval_is_rejected(share: float) -> None:
    with pytest.raises(ValueError, match="lookalike_share must lie in \\[0, 1\\]"):
        identity_vector(0, lookalike_share=share)
    with pytest.raises(ValueError, match="lookalike_share must lie in \\[0, 1\\]"):
        FaceRenderer(SIZE, lookalike_share=share)


def test_image_size_below_32_is_rejected() -> None:
    with pytest.raises(ValueError, match="image_size must be >= 32 pixels, got 31"):
        FaceRenderer(31)
    assert FaceRenderer(32).render(0, 0).shape == (32, 32, 3)


@pytest.mark.parametrize("field", ["blur_prob", "jpeg_prob", "occlusion_prob", "lowres_prob", "grey_prob"])
@pytest.mark.parametrize("value", [1.01, -0.01])
def test_domain_probability_outside_unit_interval_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"Domain 'broken': {field} must be a probability in \\[0, 1\\]"):
        Domain("broken", **{field: value})


def test_overridden_domain_is_validated_and_leaves_the_original_alone() -> None:
    wild = get_domain("wild")
    sharper = with_overrides(wild, blur_prob=0.0)

    assert sharper.blur_prob == 0.0 and wild.blur_prob == Domain("wild").blur_prob
    with pytest.raises(ValueError, match="blur_prob"):
        with_overrides(wild, blur_prob=2.0)
