"""Claim: the shipped detector finds real faces and alignment brings a moved face back onto its crop.

Two parts, on the real sets in ``../shared/data`` (never shipped; see its README):
1. ``celeba_wild`` (uncropped photos): the share of photos with a face found (a seeded sample, or
   all with ``--celeba all``), and a contact sheet of aligned crops next to ``glint_aligned`` ones;
2. ORL pasted into 320x320 backgrounds at a random similarity (face height 20-80 % of the frame,
   rotation within +-30 degrees, random offset), plus frames with two faces and with none: the
   detection rate and the landmark error against the known paste transform. The reference
   landmarks are the detector's own on the original crop padded to three times its size, so the
   error measures how well detection + alignment undo the paste, in pixels of the 112x112 crop
   (the template's eyes are 35.2 px apart there);
3. ``glint_aligned``: where the detector's points fall on crops already aligned to the template,
   a systematic offset between BlazeFace's landmark definitions and the template's.

    .venv/bin/python benchmarks/bench_alignment.py [--runtime onnxruntime] [--celeba 1000] [--out runs/bench_alignment]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.alignment import ARCFACE_TEMPLATE_112, apply_transform, template_points, warp_face  # noqa: E402
from nptface.on_device.face_crops import FaceCropper  # noqa: E402
from nptface.on_device.face_detection import FaceDetector  # noqa: E402
from nptface.on_device.images import load_photo  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FRAME = 320
INTEROCULAR_112 = float(np.linalg.norm(ARCFACE_TEMPLATE_112[1] - ARCFACE_TEMPLATE_112[0]))


def images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_file())


def contact_sheet(left: list[Image.Image], right: list[Image.Image], columns: int = 8) -> Image.Image:
    """Ours on the left, the reference on the right, 112 px tiles, a gap between the two halves."""
    rows = math.ceil(max(len(left), len(right)) / columns)
    sheet = Image.new("RGB", (2 * columns * 112 + 16, rows * 112), (255, 255, 255))
    for offset, tiles in ((0, left), (columns * 112 + 16, right)):
        for index, tile in enumerate(tiles):
            sheet.paste(
                tile.convert("RGB").resize((112, 112)), (offset + (index % columns) * 112, (index // columns) * 112)
            )
    return sheet


def celeba_part(cropper: FaceCropper, sample: str, out: Path) -> None:
    photos = images_under(DATA / "celeba_wild")
    if sample != "all":
        random.Random(0).shuffle(photos)
        photos = sorted(photos[: int(sample)])
    found = several = 0
    crops = []
    start = time.perf_counter()
    every = max(len(photos) // 32, 1)  # the sheet samples the whole set, not its first few people
    for index, path in enumerate(photos):
        crop = cropper.crop(load_photo(path))
        if crop is None:
            continue
        found += 1
        several += crop.faces_found > 1
        if index % every == 0 and len(crops) < 32:
            crops.append(crop.image)
    seconds = (time.perf_counter() - start) / len(photos)
    glint = [Image.open(p) for p in images_under(DATA / "glint_aligned")[::83][:32]]
    contact_sheet(crops, glint).save(out / "celeba_aligned_vs_glint.png")
    print(f"\n## celeba_wild: {len(photos)} photos ({'all' if sample == 'all' else f'seeded sample of {sample}'})")
    print(f"face found: {found}/{len(photos)} = {found / len(photos):.1%}; several faces (largest taken): {several}")
    print(f"load + detect + align: {1000 * seconds:.0f} ms per photo (one thread)")
    print(f"contact sheet (ours left, glint_aligned right): {out / 'celeba_aligned_vs_glint.png'}")


def background(rng: np.random.Generator) -> Image.Image:
    """Smooth random colour with fine noise: clutter without faces."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((FRAME, FRAME), Image.BILINEAR)
    noise = rng.normal(0, 12, (FRAME, FRAME, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + noise, 0, 255).astype(np.uint8))


def paste_transform(
    rng: np.random.Generator,
    crop_size: tuple[int, int],
    height_share: tuple[float, float],
    centre_x: tuple[float, float],
) -> np.ndarray:
    width, height = crop_size
    scale = rng.uniform(*height_share) * FRAME / height
    angle = math.radians(rng.uniform(-30, 30))
    half = (
        0.5
        * scale
        * (abs(math.cos(angle)) * np.array([width, height]) + abs(math.sin(angle)) * np.array([height, width]))
    )
    low, high = half, FRAME - 1 - half
    cx = rng.uniform(
        max(low[0], centre_x[0] * FRAME), max(min(high[0], centre_x[1] * FRAME), max(low[0], centre_x[0] * FRAME))
    )
    cy = rng.uniform(low[1], max(high[1], low[1]))
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    centre_in_crop = np.array([(width - 1) / 2, (height - 1) / 2])
    return np.hstack([rotation, (np.array([cx, cy]) - rotation @ centre_in_crop)[:, None]])


def paste(frame: Image.Image, face: Image.Image, matrix: np.ndarray) -> None:
    moved = warp_face(face.convert("RGB"), matrix, FRAME)
    mask = warp_face(Image.new("L", face.size, 255), matrix, FRAME)
    frame.paste(moved, (0, 0), mask)


def reference_points(detector: FaceDetector, face: Image.Image) -> np.ndarray | None:
    """The detector's four points on the crop, found with the crop centred on a 3x grey canvas."""
    canvas = Image.new("RGB", (3 * face.width, 3 * face.height), (128, 128, 128))
    canvas.paste(face.convert("RGB"), (face.width, face.height))
    faces = detector.detect(canvas)
    return None if not faces else faces[0].alignment_points - [face.width, face.height]


def orl_part(detector: FaceDetector, seed: int, two_faces: int, no_faces: int) -> None:
    rng = np.random.default_rng(seed)
    faces = [Image.open(p) for p in images_under(DATA / "orl_faces")]
    references = [reference_points(detector, face) for face in faces]
    usable = [(face, ref) for face, ref in zip(faces, references) if ref is not None]
    found = 0
    errors = []
    for face, ref in usable:
        frame = background(rng)
        matrix = paste_transform(rng, face.size, (0.2, 0.8), (0.0, 1.0))
        paste(frame, face, matrix)
        detected = detector.detect(frame)
        if not detected:
            continue
        found += 1
        expected = apply_transform(matrix, ref)
        interocular = np.linalg.norm(expected[1] - expected[0])
        errors.append(np.linalg.norm(detected[0].alignment_points - expected, axis=1).mean() / interocular)
    both = 0
    for _ in range(two_faces):
        frame = background(rng)
        for side in ((0.0, 0.5), (0.5, 1.0)):
            face = usable[int(rng.integers(len(usable)))][0]
            paste(frame, face, paste_transform(rng, face.size, (0.25, 0.4), side))
        both += len(detector.detect(frame)) == 2
    empty = sum(not detector.detect(background(rng)) for _ in range(no_faces))
    errors_112 = np.array(errors) * INTEROCULAR_112
    print(f"\n## ORL pasted (seed {seed}): {len(faces)} faces, reference landmarks found on {len(usable)}")
    print(f"face found: {found}/{len(usable)} = {found / len(usable):.1%}")
    print(
        f"landmark error (mean of 4 points, in 112-crop px): mean {errors_112.mean():.2f}, "
        f"median {np.median(errors_112):.2f}, 95th pct {np.percentile(errors_112, 95):.2f}, "
        f"max {errors_112.max():.2f}; as a share of the eye distance: mean {np.mean(errors):.3f}"
    )
    print(f"two faces pasted, both found: {both}/{two_faces}; no face pasted, none found: {empty}/{no_faces}")


def glint_part(detector: FaceDetector, count: int) -> None:
    """Where BlazeFace's points fall on crops already aligned to the template, against the template."""
    crops = images_under(DATA / "glint_aligned")[:: max(len(images_under(DATA / "glint_aligned")) // count, 1)][:count]
    offsets = []
    for path in crops:
        faces = detector.detect(load_photo(path))
        if faces:
            offsets.append(faces[0].alignment_points - template_points(112, mouth="centre"))
    mean = np.mean(offsets, axis=0)
    names = ("right eye", "left eye", "nose tip", "mouth centre")
    print(f"\n## glint_aligned: BlazeFace points on {len(offsets)} of {len(crops)} template-aligned crops")
    print(
        "mean offset from the template (x, y px): "
        + "; ".join(f"{n} ({x:+.1f}, {y:+.1f})" for n, (x, y) in zip(names, mean))
    )
    print(f"spread (std, px): {np.std(offsets, axis=0).mean():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=("onnxruntime", "litert"), default="onnxruntime")
    parser.add_argument("--celeba", default="1000", help="photos to sample from celeba_wild, or 'all'")
    parser.add_argument("--glint", type=int, default=200, help="template-aligned crops to locate BlazeFace's points on")
    parser.add_argument("--two-faces", type=int, default=20)
    parser.add_argument("--no-faces", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_alignment"))
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"bench_alignment: not run, {DATA}: the real face sets are not here")  # `./dev bench` goes on
        return
    print(describe())
    detector = FaceDetector(args.runtime)
    print(f"detector: {detector.path.name} on {args.runtime}")
    args.out.mkdir(parents=True, exist_ok=True)
    glint_part(detector, args.glint)
    orl_part(detector, args.seed, args.two_faces, args.no_faces)
    celeba_part(FaceCropper(detector), args.celeba, args.out)


if __name__ == "__main__":
    main()
