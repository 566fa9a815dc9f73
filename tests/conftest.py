"""A tiny trained run shared by the export and federated tests: 32x32 input, quarter width, 32-d embedding.

Trained for a few seconds on synthetic identities so that its embeddings separate identities
(an untrained network puts every pair near one threshold, where any rounding flips decisions),
yet small enough that every format converts in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nptface.core.cpu_threads import prefer_passive_waiting

prefer_passive_waiting()  # as the command line does, before torch starts OpenMP: tests share busy machines

from nptface.core.datasets import InMemoryFaceDataset  # noqa: E402
from nptface.edge_export.evalset import synthetic_sets  # noqa: E402

TINY_RUN = [
    "data.identities=40",
    "data.images_per_identity=10",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=32",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.epochs=4",
    "optim.batch_size=32",
    "optim.milestones=[3.0]",
    "optim.warmup_epochs=0.5",
    "log.progress=false",
    "checkpoint.every_steps=1000",
    "device.cpu_threads=2",
    "eval.sets=[]",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nptface.server.training.config import load_config
    from nptface.server.training.trainer import train_from_config

    root = tmp_path_factory.mktemp("export-run")
    config = load_config("synthetic-quick", [*TINY_RUN, f'run.output_dir="{root.as_posix()}"', 'run.name="tiny"'])
    return train_from_config(config, root / "tiny", resume="never").run_dir


@pytest.fixture(scope="session")
def tiny_sets() -> tuple[InMemoryFaceDataset, InMemoryFaceDataset]:
    """(evaluation, calibration): 40 x 5 and 50 x 4 held-out synthetic faces, disjoint identities."""
    return synthetic_sets(32, eval_identities=40, eval_images=5, calibration_identities=50, calibration_images=4)


@pytest.fixture(scope="session")
def fp32_bundle(
    tiny_run: Path, tiny_sets: tuple[InMemoryFaceDataset, InMemoryFaceDataset], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny run exported to ONNX + TFLite fp32 with the face detector, shared by the export and on-device tests."""
    from nptface.edge_export.pipeline import ExportOptions, export_bundle
    from nptface.on_device.face_detection import bundled_detector

    evaluation, calibration = tiny_sets
    out = tmp_path_factory.mktemp("fp32") / "bundle"
    export_bundle(
        tiny_run,
        out,
        evaluation,
        calibration,
        ExportOptions(formats=("onnx", "tflite"), precisions=("fp32",), latency_repeats=1, detector=bundled_detector()),
    )
    return out


@pytest.fixture
def tampered_copy(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copies a bundle and flips one byte in the middle of its file ``relative``; returns the copy."""

    def copy(bundle: Path, relative: str) -> Path:
        import shutil

        target = tmp_path / "tampered"
        shutil.copytree(bundle, target)
        data = bytearray((target / relative).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / relative).write_bytes(bytes(data))
        return target

    return copy


@pytest.fixture
def face_folder() -> Callable[..., Path]:
    """Writes tiny random PNGs as an ImageFolder, ``root/<identity>/<nn>.png``, and returns ``root``."""

    def write(root: Path, images_per_identity: dict[str, int], seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        root.mkdir(parents=True, exist_ok=True)
        for identity, count in images_per_identity.items():
            (root / identity).mkdir()
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    root / identity / f"{index:02d}.png"
                )
        return root

    return write
