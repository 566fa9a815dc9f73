"""Face image files for the on-device tests: two synthetic identities, three files each.

Each identity's files are one held-out synthetic render saved at different sizes and with mild
photometric changes (so the model's preprocessing has to resize them, the step the page must
reproduce exactly). The tiny test model is too weak for pose changes at the bundle's FAR=1e-3
threshold; these tests are about the device code paths, not about the model's accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> dict[str, list[Path]]:
    from PIL import Image, ImageEnhance

    from nptface.core.datasets import SyntheticFaceDataset
    from nptface.core.synthetic import HELDOUT_IDS

    root = tmp_path_factory.mktemp("faces")
    dataset = SyntheticFaceDataset(HELDOUT_IDS[-4:-2], 1, "studio", seed=5, image_size=64)
    files: dict[str, list[Path]] = {}
    for label, person in enumerate("ab"):
        base = Image.fromarray(dataset[label][0])
        variants = [base.resize((48, 48), Image.Resampling.LANCZOS),
                    ImageEnhance.Brightness(base).enhance(1.04).resize((56, 60), Image.Resampling.BICUBIC),
                    ImageEnhance.Contrast(base).enhance(0.96)]
        files[person] = []
        for index, image in enumerate(variants):
            image.save(root / f"{person}{index}.png")
            files[person].append(root / f"{person}{index}.png")
    return files
