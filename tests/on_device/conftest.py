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
        variants = [
            base.resize((48, 48), Image.Resampling.LANCZOS),
            ImageEnhance.Brightness(base).enhance(1.04).resize((56, 60), Image.Resampling.BICUBIC),
            ImageEnhance.Contrast(base).enhance(0.96),
        ]
        files[person] = []
        for index, image in enumerate(variants):
            image.save(root / f"{person}{index}.png")
            files[person].append(root / f"{person}{index}.png")
    return files


@pytest.fixture(scope="session")
def int8_bundle(tiny_run, tiny_sets, tmp_path_factory) -> Path:
    """ONNX fp32 + static QDQ int8 (8-bit activations, one calibration recipe, to stay quick) of the tiny model.

    What the browser test checks is that a QDQ graph runs in the page as in onnxruntime, not the gate
    (tested in tests/edge_export): the int8 limits are wide here, so the tiny model's int8 file ships
    even when it sits at the edge of the real gate (it measured 0.50 points of accuracy drop).
    """
    from nptface.edge_export.onnx_export import INT8_RECIPES
    from nptface.edge_export.parity import DEFAULT_LIMITS, GateLimits
    from nptface.edge_export.pipeline import ExportOptions, export_bundle

    evaluation, calibration = tiny_sets
    out = tmp_path_factory.mktemp("int8") / "bundle"
    result = export_bundle(
        tiny_run,
        out,
        evaluation,
        calibration,
        ExportOptions(
            formats=("onnx",),
            precisions=("fp32", "int8"),
            latency_repeats=1,
            allow_partial=True,
            onnx_int8_recipes=INT8_RECIPES[:1],
            limits={
                **DEFAULT_LIMITS,
                "int8": GateLimits(min_mean_cos=0.9, min_p1_cos=0.8, max_accuracy_drop=5.0, max_flip_share=0.05),
            },
        ),
    )
    if "onnx-int8" not in {v.name for v in result.shipped}:
        pytest.fail(f"the tiny model's ONNX int8 variant failed the parity gate: {result.table}")
    return out


@pytest.fixture(scope="session")
def synthetic_portraits():
    """Two synthetic 112 px faces (renders BlazeFace finds), for photos built around them."""
    from PIL import Image

    from nptface.core.datasets import SyntheticFaceDataset
    from nptface.core.synthetic import HELDOUT_IDS

    dataset = SyntheticFaceDataset(HELDOUT_IDS[:4:3], 1, "studio", seed=5, image_size=112)
    return [Image.fromarray(dataset[index][0]) for index in range(2)]


@pytest.fixture(scope="session")
def scene():
    """``scene([(face, height, (x, y)), ...], size)``: a plain backdrop with each face pasted at that height."""
    from PIL import Image

    def paste(faces, size=(320, 240)):
        photo = Image.new("RGB", size, (60, 80, 90))
        for face, height, at in faces:
            width = round(face.width * height / face.height)
            photo.paste(face.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), at)
        return photo

    return paste


@pytest.fixture(scope="session")
def detector():
    from nptface.on_device.face_detection import FaceDetector

    return FaceDetector()
