"""The images an export is calibrated and judged on, and the fp32 reference embeddings.

Every variant of a bundle is compared with the same numbers: the trained fp32 PyTorch model's
embeddings of the evaluation images, computed once (on a GPU when one is present, with TF32 off
so that "fp32" means fp32) and stored in the bundle as ``reference.npz`` together with the image
names and a hash of the pixels. A later check on another machine re-embeds the same images and
compares with the stored reference, never with a reference of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nptface.core.atomic import atomic_path
from nptface.core.datasets import InMemoryFaceDataset, SyntheticFaceDataset, materialize
from nptface.core.embedding import embed_batch

REFERENCE_FILE = "reference.npz"


class ReferenceError(ValueError):
    """A reference file that is missing, malformed, or does not match the images it claims."""


@contextmanager
def _exact_fp32() -> Iterator[None]:
    """Disable TF32 for the duration: on Ampere+ GPUs it silently rounds fp32 matmuls/convs to 10 bits."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def reference_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def compute_reference(
    model: nn.Module, images: InMemoryFaceDataset, batch_size: int = 128, device: torch.device | None = None
) -> tuple[np.ndarray, str]:
    """Unit-length fp32 embeddings of ``images`` by the unmodified model, and the device used."""
    device = device or reference_device()
    model = model.to(device).eval()
    with _exact_fp32():
        chunks = [
            embed_batch(model, images.images[start : start + batch_size]).cpu().numpy()
            for start in range(0, len(images), batch_size)
        ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return np.concatenate(chunks).astype(np.float32), name


def save_reference(path: Path, images: InMemoryFaceDataset, embeddings: np.ndarray, device_name: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            embeddings=embeddings.astype(np.float32),
            labels=images.labels.astype(np.int64),
            names=np.asarray(images.names, dtype=np.str_),
            images_sha256=np.asarray(images.content_hash()),
            device=np.asarray(device_name),
        )


@dataclass(frozen=True, eq=False)
class Reference:
    embeddings: np.ndarray
    labels: np.ndarray
    names: list[str]
    images_sha256: str
    device: str

    def check_matches(self, images: InMemoryFaceDataset) -> None:
        """Refuse to compare a model on other images than the reference was computed on."""
        actual = images.content_hash()
        if actual != self.images_sha256:
            raise ReferenceError(
                f"the evaluation images ({images.source}) hash to {actual[:12]}…, but the "
                f"reference was computed on images hashing to {self.images_sha256[:12]}…"
            )


def load_reference(path: Path) -> Reference:
    if not path.is_file():
        raise ReferenceError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in ("embeddings", "labels", "names", "images_sha256", "device")}
    except (OSError, ValueError, KeyError) as error:
        raise ReferenceError(f"{path}: not a reference file ({error})") from None
    embeddings = fields["embeddings"]
    if embeddings.ndim != 2 or embeddings.dtype != np.float32 or len(embeddings) != len(fields["labels"]):
        raise ReferenceError(
            f"{path}: field 'embeddings' must be float32 (N, d) matching 'labels', got "
            f"{embeddings.dtype} {embeddings.shape}"
        )
    return Reference(
        embeddings,
        fields["labels"],
        [str(n) for n in fields["names"]],
        str(fields["images_sha256"]),
        str(fields["device"]),
    )


# Held-out synthetic identities (never trained on by any nptface run): evaluation takes the first
# block, calibration the next, so the gate never judges a variant on its own calibration images.
SYNTHETIC_EVAL_IDENTITIES = 100
SYNTHETIC_EVAL_IMAGES = 8
SYNTHETIC_CALIBRATION_IDENTITIES = 64
SYNTHETIC_CALIBRATION_IMAGES = 4


def synthetic_sets(
    input_size: int,
    domain: str = "wild",
    seed: int = 2024,
    eval_identities: int = SYNTHETIC_EVAL_IDENTITIES,
    eval_images: int = SYNTHETIC_EVAL_IMAGES,
    calibration_identities: int = SYNTHETIC_CALIBRATION_IDENTITIES,
    calibration_images: int = SYNTHETIC_CALIBRATION_IMAGES,
) -> tuple[InMemoryFaceDataset, InMemoryFaceDataset]:
    """(evaluation, calibration) sets rendered from disjoint held-out synthetic identities."""
    from nptface.core.synthetic import HELDOUT_IDS

    eval_ids = HELDOUT_IDS[:eval_identities]
    calibration_ids = HELDOUT_IDS[eval_identities : eval_identities + calibration_identities]
    evaluation = SyntheticFaceDataset(eval_ids, eval_images, domain, seed, input_size)
    calibration = SyntheticFaceDataset(calibration_ids, calibration_images, domain, seed, input_size)
    return (
        materialize(
            evaluation,
            progress=False,
            source=f"synthetic held-out ({domain}, {eval_identities} ids x {eval_images}, seed {seed})",
        ),
        materialize(
            calibration,
            progress=False,
            source=f"synthetic held-out ({domain}, {calibration_identities} ids x {calibration_images}, seed {seed})",
        ),
    )


# Fresh faces for QAT distillation: one image each of identities far past the blocks above (and past
# the federation's central evaluation ones), so the student never sees a gate or calibration face.
SYNTHETIC_STREAM_START = 100_000
SYNTHETIC_STREAM_END = 500_000  # where the one-owner benchmark's unseen identities begin
SYNTHETIC_STREAM_SIZE = SYNTHETIC_STREAM_END - SYNTHETIC_STREAM_START


def synthetic_stream(input_size: int, domain: str = "wild", seed: int = 2024) -> Callable[[int, int], np.ndarray]:
    """``draw(step, n)``: ``n`` uint8 images of held-out identities no other step, set or run uses."""
    from nptface.core.synthetic import HELDOUT_IDS, FaceRenderer

    renderer = FaceRenderer(input_size, seed)
    ids = HELDOUT_IDS[SYNTHETIC_STREAM_START:SYNTHETIC_STREAM_END]

    def draw(step: int, n: int) -> np.ndarray:
        first = step * n
        if first + n > len(ids):
            raise ValueError(f"synthetic stream: step {step} x {n} images runs past the {len(ids)} held-out ids")
        return np.stack([renderer.render(ids[first + i], 0, domain) for i in range(n)])

    return draw


def image_folder_set(root: str | Path, input_size: int, limit: int | None = None) -> InMemoryFaceDataset:
    from nptface.core.imagefolder import ImageFolderDataset

    return materialize(ImageFolderDataset(root, image_size=input_size), progress=False, limit=limit, source=str(root))
