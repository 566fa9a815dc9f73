"""Claim: what one photo costs on this CPU from decoded pixels to an embedding, and how much of it is the embedder.

A device verifying a face runs more than the embedder: the photo is decoded, BlazeFace finds the
face (letterbox to 192 px, the network, anchor decoding and weighted NMS in numpy), the face is
warped onto the template (:mod:`nptface.core.alignment`), and only then is it embedded. This
times each step on real photos (CelebA in-the-wild, ``../shared/data/celeba_wild``; skipped with
a message when absent) with the bundle's own detector and its fp32 ONNX and TFLite variants,
through the classes the device commands use (``FaceDetector``, ``FaceCropper``, the bundle's
embedders), on onnxruntime and on LiteRT:

- decode: the JPEG read, EXIF-rotated and converted to RGB (``load_photo``), runtime-independent;
- detector network: BlazeFace alone on an already letterboxed input (its normalisation included);
- detect: ``FaceDetector.detect`` (letterbox, network, decoding, NMS);
- detect + align: ``FaceCropper.crop`` (the above plus the similarity warp);
- embed: the embedder alone on the aligned crop (normalisation and L2 norm included);
- detect + align + embed: the whole path from the decoded photo to the embedding.

``--full-size`` adds the full-size model (112 px, width 1.0, untrained: latency only), exported
here as the export does, for the embed and whole-path rows. Batch 1, one thread, round-robin with
``bench_inference``'s helper (medians of wall and of the calling thread's CPU time); each variant
walks the photos in the same order, so ``--rounds`` a multiple of ``--photos`` weighs them alike.

``--browser`` times the page's own steps in headless Chromium (Debian's ``/usr/bin/chromium`` via
Playwright, as ``tests/on_device/test_browser.py`` drives it): the page's modules (``detect.js``,
``align.js``, ``preprocess.js``) with the bundle's detector and onnx-fp32 on onnxruntime-web's
wasm backend (one thread, as the page runs it), the same JPEG files decoded as the page decodes
them; medians of ``performance.now()``, the page's only clock (wall time, no CPU time).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_face_pipeline.py --bundle bundles/quickstart
        [--photos 8] [--rounds 24] [--full-size] [--browser]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import round_robin  # noqa: E402
from machine import describe  # noqa: E402

from nptface.edge_export.bundle import Bundle, load_bundle  # noqa: E402
from nptface.edge_export.runtimes import RUNTIME_FORMATS, Embedder, LiteRTEmbedder, OnnxEmbedder  # noqa: E402
from nptface.on_device.face_crops import FaceCropper  # noqa: E402
from nptface.on_device.face_detection import INPUT_SIZE, letterbox  # noqa: E402
from nptface.on_device.images import load_photo  # noqa: E402
from nptface.on_device.runtime import face_detector  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba_wild"
FULL_SIZE = 112


def sample_photos(count: int) -> list[Path]:
    """``count`` photos spread evenly over the sorted set (deterministic, several identities)."""
    photos = sorted(p for p in DATA.glob("*/*") if p.is_file())
    step = max(len(photos) // count, 1)
    return photos[::step][:count]


def cycling(function: Callable[[Any], object], items: Sequence[Any]) -> Callable[[], object]:
    """A call that takes the next item each time, so a variant walks all photos in order."""
    items = itertools.cycle(items)
    return lambda: function(next(items))


def full_size_files(folder: Path) -> dict[str, Path]:
    """The untrained full-size model exported as the export does (BN folded; ONNX and NHWC TFLite)."""
    from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn
    from nptface.edge_export import onnx_export, tflite_export

    torch.manual_seed(0)
    fused = fuse_bn(MobileFaceNet().eval())
    files = {"onnx": folder / "full-fp32.onnx", "tflite": folder / "full-fp32.tflite"}
    onnx_export.export_fp32(fused, files["onnx"], FULL_SIZE, {})
    tflite_export.export_fp32(fused, files["tflite"], FULL_SIZE)
    return files


def runtime_variants(
    bundle: Bundle, runtime: str, photos: list[Image.Image], full_size: dict[str, Path] | None
) -> tuple[dict[str, Callable[[], object]], int]:
    """The timed steps on ``runtime`` (keyed ``runtime | step``) and how many photos had a face.

    Photos without a face are left out of every step, so that all steps see the same photos.
    """
    fmt = RUNTIME_FORMATS[runtime]
    detector = face_detector(bundle, runtime)
    cropper = FaceCropper(detector, bundle.input_size)
    found = [(photo, crop) for photo in photos if (crop := cropper.crop(photo)) is not None]
    faces = [photo for photo, _ in found]
    crops = [np.array(crop.image)[None] for _, crop in found]
    squares = [letterbox(photo, INPUT_SIZE)[0] for photo in faces]
    embedder = bundle.embedder(f"{fmt}-fp32", threads=1)
    model = f"{bundle.input_size} px bundle fp32"

    def whole(photo: Image.Image, embedder: Embedder = embedder, cropper: FaceCropper = cropper) -> object:
        return embedder.embed(np.array(cropper.crop(photo).image)[None])  # a copy, as DeviceModel's np.stack

    calls = {
        f"{runtime} | detector network": cycling(detector.raw_outputs, squares),
        f"{runtime} | detect": cycling(detector.detect, faces),
        f"{runtime} | detect + align": cycling(cropper.crop, faces),
        f"{runtime} | embed ({model})": cycling(embedder.embed, crops),
        f"{runtime} | detect + align + embed ({model})": cycling(whole, faces),
    }
    if full_size is not None:
        big: Embedder = (OnnxEmbedder if fmt == "onnx" else LiteRTEmbedder)(full_size[fmt], FULL_SIZE, threads=1)
        big_cropper = FaceCropper(detector, FULL_SIZE)
        big_crops = [np.array(big_cropper.crop(photo).image)[None] for photo in faces]
        label = f"{FULL_SIZE} px full-size fp32, untrained"
        calls[f"{runtime} | embed ({label})"] = cycling(big.embed, big_crops)
        calls[f"{runtime} | detect + align + embed ({label})"] = cycling(
            lambda photo: whole(photo, big, big_cropper), faces
        )
    return calls, len(faces)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

# Runs in the page after it is ready: its own modules (the same module instances app.js imported,
# so onnxruntime-web is already set to one wasm thread), the bundle's detector and fp32 ONNX model
# fetched from the demo server. Photos arrive as JPEG bytes; decode is timed as app.js decodes
# (createImageBitmap, canvas, getImageData). Returns each step's times in ms.
PAGE_SCRIPT = """async ([photos, rounds, warmup]) => {
  const ort = await import("/static/vendor/ort.wasm.min.mjs");
  const { FaceDetector } = await import("/static/detect.js");
  const { similarityTransform, warpFace } = await import("/static/align.js");
  const { rgbaToRgb, toInputTensor } = await import("/static/preprocess.js");
  const manifest = await (await fetch("/bundle/manifest.json")).json();
  const bytes = async (file) => new Uint8Array(await (await fetch("/bundle/" + file)).arrayBuffer());
  const spec = manifest.detector;
  const detector = await FaceDetector.create(ort, await bytes(spec.files.onnx), spec);
  const network = detector.run;
  let networkMs = 0; // the detector network's share of detect: its session runs, timed from inside
  detector.run = async (input) => {
    const start = performance.now();
    const out = await network(input);
    networkMs += performance.now() - start;
    return out;
  };
  const variant = manifest.variants.find((v) => v.name === "onnx-fp32");
  const session = await ort.InferenceSession.create(await bytes(variant.file), { executionProviders: ["wasm"] });
  const size = manifest.input.size[0];
  const { mean, std } = manifest.input.normalization;
  const template = spec.alignment.template;
  const blobs = photos.map((b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: "image/jpeg" }));
  const times = { "decode (createImageBitmap, canvas, getImageData)": [], "detector network": [], detect: [],
    "align (similarity + warp)": [],
    [`embed (${size} px bundle onnx-fp32)`]: [], "detect + align + embed": [] };
  for (let r = 0; r < warmup + rounds; r++) {
    const t0 = performance.now();
    const bitmap = await createImageBitmap(blobs[r % blobs.length], { imageOrientation: "from-image",
      colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const { width, height } = bitmap;
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const pixels = context.getImageData(0, 0, width, height).data;
    const t1 = performance.now();
    networkMs = 0;
    const rgb = rgbaToRgb(pixels, width, height);
    const faces = await detector.detect(rgb, width, height);
    const t2 = performance.now();
    if (!faces.length) throw new Error(`photo ${r % blobs.length}: no face found by the page`);
    const matrix = similarityTransform(faces[0].keypoints.slice(0, template.length), template);
    const crop = warpFace(rgb, width, height, matrix, size);
    const t3 = performance.now();
    const input = new ort.Tensor("float32", toInputTensor(crop, size, mean, std), [1, 3, size, size]);
    await session.run({ [session.inputNames[0]]: input });
    const t4 = performance.now();
    if (r < warmup) continue;
    const steps = Object.values(times);
    [t1 - t0, networkMs, t2 - t1, t3 - t2, t4 - t3, t4 - t1].forEach((ms, i) => steps[i].push(ms));
  }
  return times;
}"""


def page_medians(bundle_dir: Path, paths: list[Path], rounds: int, warmup: int = 5) -> dict[str, float]:
    """Medians (ms, ``performance.now()``) of the page's decode, detect, align and embed on ``paths``.

    The steps run one after another on the page's main thread, photo after photo, so there is no
    round-robin between steps here; the wall clock is all a page can read.
    """
    import base64

    from playwright.sync_api import sync_playwright

    from nptface.on_device.server import make_server, serve_in_thread

    server = make_server(bundle_dir, "127.0.0.1", 0)
    thread = serve_in_thread(server)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_selector("#status[data-state=ready]")
            photos = [base64.b64encode(path.read_bytes()).decode() for path in paths]
            times = page.evaluate(PAGE_SCRIPT, [photos, rounds, warmup])
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return {step: statistics.median(values) for step, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, default=Path("bundles/quickstart"), help="a bundle with a detector")
    parser.add_argument("--photos", type=int, default=8, help="CelebA in-the-wild photos, spread over the set")
    parser.add_argument("--rounds", type=int, default=24, help="timed calls per variant (one per round)")
    parser.add_argument("--full-size", action="store_true", help="add the untrained full-size model (112 px)")
    parser.add_argument(
        "--browser", action="store_true", help=f"also time the page in headless Chromium ({CHROMIUM}, playwright)"
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA}: absent (CelebA in-the-wild photos); nothing to time")
        return
    torch.set_num_threads(1)
    print(describe())
    bundle = load_bundle(args.bundle)
    if bundle.detector is None:
        raise SystemExit(f"{args.bundle}: ships no face detector; re-export it with a current nptface")
    paths = sample_photos(args.photos)
    photos = [load_photo(path) for path in paths]
    sizes = [photo.width * photo.height for photo in photos]
    print(
        f"{len(paths)} photos from {DATA}, {min(sizes) / 1e3:.0f}..{max(sizes) / 1e3:.0f} kpixel "
        f"(median {statistics.median(sizes) / 1e3:.0f}); bundle {args.bundle} ({bundle.input_size} px, "
        f"width {bundle.manifest['model']['width']})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        full_size = full_size_files(Path(tmp)) if args.full_size else None
        variants: dict[str, Callable[[], object]] = {"- | decode (load_photo)": cycling(load_photo, paths)}
        for runtime in RUNTIME_FORMATS:
            calls, with_face = runtime_variants(bundle, runtime, photos, full_size)
            print(f"{runtime}: a face found in {with_face} of {len(photos)} photos")
            variants.update(calls)
        load_before = os.getloadavg()
        times = round_robin(variants, args.rounds)
        load_after = os.getloadavg()

    print(
        f"\nbatch 1, 1 thread, {args.rounds} rounds round-robin over {len(variants)} variants; load average "
        f"{' '.join(f'{v:.2f}' for v in load_before)} before, {' '.join(f'{v:.2f}' for v in load_after)} after"
    )
    print("| runtime | step | median ms (wall) | median ms (CPU) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in times.items():
        runtime, step = name.split(" | ")
        print(f"| {runtime} | {step} | {statistics.median(wall) * 1000:.2f} | {statistics.median(cpu) * 1000:.2f} |")

    if args.browser:
        medians = page_medians(args.bundle, paths, args.rounds)
        print(f"\nthe page in headless Chromium (onnxruntime-web wasm), {args.rounds} rounds, performance.now()")
        print("| step | median ms |")
        print("|---|---|")
        for step, ms in medians.items():
            print(f"| {step} | {ms:.2f} |")


if __name__ == "__main__":
    main()
