"""The folders the ``real-faces`` training config reads, made from the real sets in ``../shared/data``.

Those sets are research-only and never shipped (``../shared/data/README.md``), so the kit cannot
carry a real-face model or its data; this script lays them out on the user's machine instead.
Every photo goes through the kit's own detect + five-point alignment (``nptface data align``'s
``crop_folder``), so training crops, evaluation crops and what ``nptface enroll`` makes of a
photo share one framing. Identities are split once, by a seeded choice written to
``split.json``, and never move between parts:

- ``train/``: FERET, AR, Georgia Tech and MUCT (625 people) + 150 CelebA people (aligned);
- ``celeba-heldout/``: the other 50 CelebA people, aligned: where the config verifies, and the
  held-out identities of the alignment benchmark (whose raw photos stay in ``celeba_wild``);
- ``orl/``: ORL's 40 people, aligned, never trained on: the calibrate demo and the int8 gate;
- ``glint/``: glint_aligned's 24 people (already on the template): export calibration images.

The parts are folders of symbolic links into ``aligned/``; re-running skips sources already
aligned.

    .venv/bin/python benchmarks/prepare_real_faces.py [--out data/real-faces] [--heldout 50]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from nptface.core.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LOWRES = ("feret", "ar", "gt", "muct")


def align_source(src: Path, dst: Path) -> dict:
    """Aligned crops of one source under ``dst`` (done once: a finished source leaves ``.done``)."""
    done = dst / ".done"
    if done.is_file():
        return json.loads(done.read_text())
    from nptface.on_device.face_crops import FaceCropper, crop_folder  # onnxruntime loads only when aligning
    from nptface.on_device.face_detection import FaceDetector

    report = crop_folder(src, dst, FaceCropper(FaceDetector("onnxruntime"), 112))
    summary = {
        "source": str(src),
        "crops": len(report.crops),
        "no_face": [str(p.relative_to(src)) for p in report.no_face],
        "several_faces": len(report.several_faces),
    }
    atomic_write_json(done, summary)
    print(f"{src.name}: {summary['crops']} crops, {len(summary['no_face'])} photos without a face", flush=True)
    return summary


def people(folder: Path) -> list[str]:
    """Identity folders holding at least one image (a person whose every photo had no face drops out)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(f.is_file() for f in p.iterdir()))


def link_part(part: Path, links: dict[str, Path]) -> None:
    """``part`` as exactly these links: a re-run with another split leaves no stale identity behind."""
    part.mkdir(parents=True, exist_ok=True)
    for old in part.iterdir():
        if not old.is_symlink():
            raise FileExistsError(f"{old}: not a link made by this script; move it out of {part}")
        old.unlink()
    for name, target in links.items():
        (part / name).symlink_to(target.resolve(), target_is_directory=True)


def split_parts(aligned: Path, glint: Path, heldout: int, seed: int) -> dict[str, dict[str, Path]]:
    """Each part's identity folders by name: ``heldout`` CelebA people (a seeded choice) and all of
    ORL and glint stay out of ``train``; a lowres or CelebA name is prefixed with its source, since
    the sources number their people alike."""
    celeba = people(aligned / "celeba")
    if heldout >= len(celeba):
        raise ValueError(f"--heldout {heldout}: {aligned / 'celeba'} has only {len(celeba)} people with a face")
    kept_out = set(random.Random(seed).sample(celeba, heldout))
    train = {f"celeba-{p}": aligned / "celeba" / p for p in celeba if p not in kept_out}
    for name in LOWRES:
        train |= {f"{name}-{p}": aligned / name / p for p in people(aligned / name)}
    return {
        "train": train,
        "celeba-heldout": {p: aligned / "celeba" / p for p in sorted(kept_out)},
        "orl": {p: aligned / "orl" / p for p in people(aligned / "orl")},
        "glint": {p: glint / p for p in people(glint)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the real sets (../shared/data)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "real-faces")
    parser.add_argument("--heldout", type=int, default=50, help="CelebA identities kept out of training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    args = parser.parse_args()
    if not (args.shared / "celeba_wild").is_dir():
        sys.exit(f"{args.shared}: the real face sets (celeba_wild, lowres, orl_faces) are not there")
    out: Path = args.out
    aligned = out / "aligned"
    sources = {name: args.shared / "lowres" / name for name in LOWRES}
    sources |= {"celeba": args.shared / "celeba_wild", "orl": args.shared / "orl_faces"}
    summaries = {name: align_source(src, aligned / name) for name, src in sources.items()}

    parts = split_parts(aligned, args.shared / "glint_aligned", args.heldout, args.seed)
    for name, links in parts.items():
        link_part(out / name, links)
    heldout, train = sorted(parts["celeba-heldout"]), parts["train"]
    split = {
        "seed": args.seed,
        "train_identities": len(train),
        "celeba_heldout": heldout,
        "sources": summaries,
    }
    atomic_write_json(out / "split.json", split)
    print(f"{out}: train {len(train)} identities, celeba-heldout {len(heldout)}, orl, glint (split.json)")


if __name__ == "__main__":
    main()
