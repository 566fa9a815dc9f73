"""Claim: on real photos, detect + five-point align gives a trained model higher verification accuracy than
the detector's box or a centre crop, and brings a face pasted anywhere in a frame back to its crop's accuracy.

``bench_alignment.py`` measures landmarks; this measures what they buy, with a trained run (``--run``,
loaded as ``nptface eval --run`` loads it) on the real sets in ``../shared/data`` (never shipped):

1. ``celeba``: raw in-the-wild photos (``--photos``, an ImageFolder; ``--ids``, a file of folder names or
   a folder whose sub-folder names are taken, restricts it to held-out identities) scored on one set of
   LFW-style pairs (10 folds, the eval sets' protocol seed, as ``nptface eval --pair-protocol lfw``) for
   four inputs: (a) detect + align, the shipped path (``nptface eval --align``); (b) the detector's box,
   square, upright, resized; (b') the same box widened and raised to the aligned crop's mean framing, so
   that only rotation and landmark registration differ from (a); (c) the photo's centre square, resized.
   Photos where no face is found have no (a) or (b) crop: they are left out with their pairs for every
   input, so all four are scored on the same pairs, and the count is reported.
2. ``orl-paste``: ORL faces pasted into 320x320 backgrounds at a random similarity (face height 20-80 %
   of the frame, rotation within +-30 degrees, random offset; ``bench_alignment``'s paste, one placement
   per ``--seeds`` seed), then detected and aligned, against the original 92x112 crops detected and
   aligned the same way (``nptface data align``) and fed as they are (resized), with the same model on
   the same LFW-style pairs (as large as ORL allows). A pasted face without a detection, or an original
   without one, leaves out its pairs for all of them. The goal: pasted + aligned within 1 point of the
   original crops aligned. A control separates the detector from the paste: the original crops aligned
   on the points the detector finds with the crop centred on a grey canvas three times its size
   (``bench_alignment``'s reference points; the face a third of the frame's height, within the pasted
   range), warped from the original pixels: what landmarks found on a smaller face cost, without the paste.

Every crop goes through the one warp (:func:`nptface.core.alignment.warp_face`, bilinear), so the inputs
differ in where they look, not in how they are resampled.

    .venv/bin/python benchmarks/prepare_real_faces.py && nptface train real-faces
    .venv/bin/python benchmarks/bench_alignment_gain.py [--run runs/real-faces] \\
        [--ids data/real-faces/celeba-heldout] [--photos ../shared/data/celeba_wild] [--seeds 0 1 2] \\
        [--threads 1] [--out runs/bench_alignment_gain]

Without the real sets, the run or the held-out list it prints what is missing and exits 0 (``./dev
bench`` runs every script with its defaults).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_alignment import DATA, background, paste, paste_transform, reference_points  # noqa: E402
from machine import describe  # noqa: E402

from nptface.core.alignment import align_face, warp_face  # noqa: E402
from nptface.core.atomic import atomic_write_json  # noqa: E402
from nptface.core.checkpoint import load_backbone  # noqa: E402
from nptface.core.embedding import embed_dataset  # noqa: E402
from nptface.core.imagefolder import ImageFolderDataset  # noqa: E402
from nptface.core.pairs import Pairs, largest_lfw_style_pairs  # noqa: E402
from nptface.core.preprocess import to_rgb_array  # noqa: E402
from nptface.core.tables import markdown_table, percent  # noqa: E402
from nptface.core.verification import VerificationReport, evaluate_pairs  # noqa: E402
from nptface.on_device.aligned_eval_set import align_eval_set  # noqa: E402
from nptface.on_device.face_crops import FaceCropper  # noqa: E402
from nptface.on_device.face_detection import Face, FaceDetector  # noqa: E402
from nptface.on_device.images import load_photo  # noqa: E402
from nptface.server.training.config import EvalSet  # noqa: E402
from nptface.server.training.data import build_eval_set  # noqa: E402

# Where the aligned crop sits around the detector's box, measured with this detector on 98 of 100
# glint_aligned crops (already on the template, 112 px): a 94.7 px box centred at (55.6, 66.7).
TEMPLATE_BOX_SCALE = 112 / 94.7  # the aligned crop's side over the box's side
TEMPLATE_BOX_RAISE = (66.7 - 55.5) / 94.7  # its centre sits this share of the box's side above the box's
FARS = (1e-2, 1e-3)


def square_crop(photo: Image.Image, centre: tuple[float, float], side: float, size: int) -> np.ndarray:
    """The upright square of ``side`` pixels centred at ``centre`` (pixel-centre coordinates), as ``size`` px."""
    scale = size / side
    middle = (size - 1) / 2
    matrix = np.array([[scale, 0.0, middle - scale * centre[0]], [0.0, scale, middle - scale * centre[1]]])
    return to_rgb_array(warp_face(photo, matrix, size), size)


def box_crop(photo: Image.Image, face: Face, size: int, scale: float = 1.0, raise_by: float = 0.0) -> np.ndarray:
    """The square on the detector's box (its longer side times ``scale``, raised by ``raise_by`` of it)."""
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0)
    return square_crop(photo, ((x0 + x1) / 2, (y0 + y1) / 2 - raise_by * side), scale * side, size)


def centre_crop(photo: Image.Image, size: int) -> np.ndarray:
    """The photo's centre square (side: its shorter side)."""
    return square_crop(photo, ((photo.width - 1) / 2, (photo.height - 1) / 2), min(photo.size), size)


def embed(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    return embed_dataset(model, [(image, 0) for image in images])


def verify(embeddings: np.ndarray, pairs: Pairs) -> VerificationReport:
    return evaluate_pairs(embeddings[pairs.index_a], embeddings[pairs.index_b], pairs.is_same, fars=FARS)


def accuracy_cell(report: VerificationReport) -> str:
    return f"{percent(report.accuracy.mean)} ± {percent(report.accuracy.std)}"


def tar_cell(report: VerificationReport, far: float) -> str:
    result = report.tar_at_far[far]
    return percent(result.tar) if result.supported else "n/a"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def identity_names(ids: Path) -> list[str]:
    """Folder names from a folder's sub-folders or from a file, one a line (blank lines and ``#`` ignored)."""
    if ids.is_dir():
        return sorted(entry.name for entry in ids.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not ids.is_file():
        raise SystemExit(f"--ids {ids}: no such file or folder; expected folder names, one a line, or a folder")
    lines = (line.strip() for line in ids.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def restricted_folder(photos: Path, names: list[str], workdir: Path) -> Path:
    """A folder of links to ``photos``' identity folders named in ``names``: the ImageFolder to score."""
    missing = [name for name in names if not (photos / name).is_dir()]
    if missing:
        raise SystemExit(f"--ids: {len(missing)} identities have no folder in {photos}: {', '.join(missing[:5])}")
    root = workdir / "photos"
    root.mkdir()
    for name in names:
        (root / name).symlink_to((photos / name).resolve(), target_is_directory=True)
    return root


def celeba_part(model: torch.nn.Module, detector: FaceDetector, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = model.config.input_size
    root = args.photos if args.ids is None else restricted_folder(args.photos, identity_names(args.ids), work)
    spec = EvalSet(kind="imagefolder", path=str(root), pair_protocol="lfw", per_fold=args.per_fold, seed=EvalSet.seed)
    data = build_eval_set(spec, size)
    start = time.perf_counter()
    aligned = align_eval_set(data.dataset, data.pairs, FaceCropper(detector, size), work / "aligned")
    photo_of = {crop: photo for photo, crop in aligned.report.crops.items()}
    inputs: dict[str, list[np.ndarray]] = {"box": [], "box, template framing": [], "centre crop": []}
    for crop, _ in aligned.dataset.samples:
        photo = load_photo(photo_of[crop])
        face = detector.detect(photo)[0]  # the face the aligned crop was cut around: detection is deterministic
        inputs["box"].append(box_crop(photo, face, size))
        inputs["box, template framing"].append(box_crop(photo, face, size, TEMPLATE_BOX_SCALE, TEMPLATE_BOX_RAISE))
        inputs["centre crop"].append(centre_crop(photo, size))
    seconds = (time.perf_counter() - start) / len(data.dataset)
    reports = {"detect + align": verify(embed_dataset(model, aligned.dataset), aligned.pairs)}
    reports |= {name: verify(embed(model, images), aligned.pairs) for name, images in inputs.items()}

    identities = data.dataset.num_classes
    print(f"\n## celeba: {len(data.dataset)} raw photos of {identities} identities in {args.photos}")
    print(aligned.summary_line())
    print(
        f"pairs: {len(aligned.pairs)} of {len(data.pairs)} (LFW-style, 10 folds of {args.per_fold} + {args.per_fold}, "
        f"protocol seed {EvalSet.seed}), the same for every input; "
        f"two detections + crops: {1000 * seconds:.0f} ms per photo"
    )
    best = reports["detect + align"].accuracy.mean
    rows = [
        [
            name,
            accuracy_cell(report),
            tar_cell(report, 1e-2),
            tar_cell(report, 1e-3),
            points(best - report.accuracy.mean),
        ]
        for name, report in reports.items()
    ]
    print(markdown_table(["input", "10-fold accuracy", "TAR@FAR=1e-2", "TAR@FAR=1e-3", "aligned − this (pt)"], rows))
    return {
        "photos": str(args.photos),
        "ids": None if args.ids is None else str(args.ids),
        "identities": identities,
        "pairs_drawn": len(data.pairs),
        "alignment": aligned.to_dict(),
        "template_box": {"scale": TEMPLATE_BOX_SCALE, "raise": TEMPLATE_BOX_RAISE},
        "inputs": {name: report.to_dict() for name, report in reports.items()},
        "gain_points": {name: 100 * (best - report.accuracy.mean) for name, report in reports.items()},
    }


def crop_arrays(crops: list[Image.Image | None], size: int) -> list[np.ndarray]:
    """The aligned crops as the model sees them; a blank stand-in where none was found (its pairs are left out)."""
    return [np.zeros((size, size, 3), np.uint8) if crop is None else to_rgb_array(crop, size) for crop in crops]


def on_canvas(detector: FaceDetector, face: Image.Image, size: int) -> Image.Image | None:
    """``face`` aligned on the points found with it centred on a grey canvas three times its size."""
    found = reference_points(detector, face)
    return None if found is None else align_face(face, found, size, mouth="centre")[0]


PASTED, ALIGNED, ON_CANVAS, AS_IS = (
    "pasted, detect + align",
    "original, detect + align",
    "original, 3x canvas",
    "original as-is",
)


def orl_part(model: torch.nn.Module, detector: FaceDetector, seeds: list[int]) -> dict[str, Any]:
    size = model.config.input_size
    folder = ImageFolderDataset(DATA / "orl_faces", image_size=size)
    pairs = largest_lfw_style_pairs(folder.labels, seed=EvalSet.seed, where=str(folder.root))
    cropper = FaceCropper(detector, size)
    faces = [load_photo(path) for path, _ in folder.samples]
    originals = {
        ALIGNED: [None if (crop := cropper.crop(face)) is None else crop.image for face in faces],
        ON_CANVAS: [on_canvas(detector, face, size) for face in faces],
    }
    embedded = {name: embed(model, crop_arrays(crops, size)) for name, crops in originals.items()}
    embedded[AS_IS] = embed_dataset(model, folder)
    found_in = {name: sum(crop is not None for crop in crops) for name, crops in originals.items()}
    print(
        f"\n## orl-paste: {len(faces)} ORL faces of {folder.num_classes} people, {len(pairs)} LFW-style pairs "
        f"(10 folds of {len(pairs) // 20} + {len(pairs) // 20}); originals with a face found: "
        + ", ".join(f"{found}/{len(faces)} ({name})" for name, found in found_in.items())
    )
    rows, results = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pasted = []
        for face in faces:
            frame = background(rng)
            paste(frame, face, paste_transform(rng, face.size, (0.2, 0.8), (0.0, 1.0)))
            pasted.append(None if (crop := cropper.crop(frame)) is None else crop.image)
        found = np.all([[crop is not None for crop in crops] for crops in (pasted, *originals.values())], axis=0)
        kept = pairs.reindexed(np.where(found, np.arange(len(faces)), -1))
        reports = {PASTED: verify(embed(model, crop_arrays(pasted, size)), kept)}
        reports |= {name: verify(embedded[name], kept) for name in (ALIGNED, ON_CANVAS, AS_IS)}
        accuracy = {name: report.accuracy.mean for name, report in reports.items()}
        pasted_found = sum(crop is not None for crop in pasted)
        rows.append(
            [seed, f"{pasted_found}/{len(faces)}", len(kept)]
            + [accuracy_cell(report) for report in reports.values()]
            + [points(accuracy[PASTED] - accuracy[ALIGNED]), points(accuracy[PASTED] - accuracy[AS_IS])]
        )
        results.append(
            {
                "seed": seed,
                "pasted_found": pasted_found,
                "pairs_kept": len(kept),
                "inputs": {name: report.to_dict() for name, report in reports.items()},
            }
        )
    mean = {name: float(np.mean([r["inputs"][name]["accuracy"]["mean"] for r in results])) for name in reports}
    gap = mean[PASTED] - mean[ALIGNED]
    rows.append(
        ["mean", "", ""]
        + [percent(value) for value in mean.values()]
        + [points(gap), points(mean[PASTED] - mean[AS_IS])]
    )
    header = ["seed", "pasted faces found", "pairs", *reports, "pasted − original aligned (pt)", "pasted − as-is (pt)"]
    print(markdown_table(header, rows))
    verdict = "within" if abs(gap) <= 0.01 else "not within"
    print(f"pasted + aligned is {points(gap)} points from the original crops aligned: {verdict} 1 point")
    return {
        "faces": len(faces),
        "pairs_drawn": len(pairs),
        "originals_found": found_in,
        "seeds": results,
        "mean_accuracy": mean,
        "pasted_minus_original_aligned_points": 100 * gap,
        "within_one_point": abs(gap) <= 0.01,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("runs/real-faces"),
        help="training run directory (model.safetensors + checkpoint.json); `nptface train real-faces` makes the default",
    )
    parser.add_argument("--detector-runtime", choices=("onnxruntime", "litert"), default="onnxruntime")
    parser.add_argument("--parts", nargs="+", choices=("celeba", "orl-paste"), default=["celeba", "orl-paste"])
    parser.add_argument("--photos", type=Path, default=DATA / "celeba_wild", help="ImageFolder of raw photos")
    parser.add_argument(
        "--ids",
        type=Path,
        default=Path("data/real-faces/celeba-heldout"),
        help="identities of --photos to score: a file of folder names or a folder of folders "
        "(default: the real-faces run's held-out CelebA people; 'all' for every folder of --photos)",
    )
    parser.add_argument("--per-fold", type=int, default=300, help="celeba: pairs of each kind per fold")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="orl-paste: one placement per seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_alignment_gain"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ids == Path("all"):
        args.ids = None
    missing = [
        f"{path}: {why}"
        for path, why in (
            (DATA, "the real face sets (../shared/data)"),
            (
                args.run / "model.safetensors",
                "a trained run: benchmarks/prepare_real_faces.py, then nptface train real-faces",
            ),
            (args.ids, "the held-out identities (benchmarks/prepare_real_faces.py writes them)"),
        )
        if path is not None and not path.exists()
    ]
    if missing:  # `./dev bench` runs every script with its defaults: say what is missing and move on
        print("bench_alignment_gain: not run, missing " + "; ".join(missing))
        return
    print(describe())
    model, _ = load_backbone(args.run)
    detector = FaceDetector(args.detector_runtime)
    print(f"model: {args.run} ({model.config.input_size} px input) on torch; detector: {detector.path.name}")
    results: dict[str, Any] = {"machine": describe(), "run": str(args.run), "input_size": model.config.input_size}
    with tempfile.TemporaryDirectory(prefix="bench-alignment-gain-") as work:
        if "celeba" in args.parts:
            results["celeba"] = celeba_part(model, detector, args, Path(work))
    if "orl-paste" in args.parts:
        results["orl_paste"] = orl_part(model, detector, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "alignment_gain.json", results)
    print(f"\nresults: {args.out / 'alignment_gain.json'}")


if __name__ == "__main__":
    main()
