"""``nptface export``: checkpoint -> every requested variant -> parity gate -> bundle.

The order is fixed so that each step can trust the previous one: the fp32 reference is computed
from the unmodified trained model; each variant is built into a staging folder, embedded on the
evaluation images with its own runtime and compared with the reference; int8 variants that miss
the gate are retried with the known remedies (other calibration methods, first/last layers in
float) and the attempt that passed is named in the report. A true int8 variant (8-bit
activations, what phone NPUs run) that still fails is followed by a ``w8a16`` fallback with int16
activations, under its own name. ``--qat`` adds ``onnx-int8-qat`` and ``tflite-int8-qat``, both
quantised from one fake-quant fine-tune (``qat``). Variants that still fail go to ``rejected/``
with their parity report, never to ``models/``; an attempt whose converter or runtime raises is
a failed attempt (the error is its report), so one tool's crash never costs the other variants.
The manifest is
written last and the staging folder renamed into place, so a bundle either exists complete or
not at all.
"""

from __future__ import annotations

import copy
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.checkpoint import MODEL_FILE, load_backbone
from nptface.core.datasets import InMemoryFaceDataset
from nptface.core.mobilefacenet import fuse_bn
from nptface.core.pairs import largest_lfw_style_pairs
from nptface.core.preprocess import MEAN, STD
from nptface.core.tables import markdown_table, percent
from nptface.edge_export import bundle as bundle_io
from nptface.edge_export import coreml_export, onnx_export, qat, tflite_export
from nptface.edge_export.evalset import REFERENCE_FILE, compute_reference, save_reference, synthetic_stream
from nptface.edge_export.latency import cpu_name, median_latency_ms
from nptface.edge_export.model_card import render_model_card
from nptface.edge_export.numerics import FP16, FP32, W8_DYNAMIC, W8A8, W8A16, Numerics, precision_label, variant_name
from nptface.edge_export.parity import (
    DEFAULT_LIMITS,
    EvalScores,
    GateLimits,
    ParityReport,
    compare,
    score_embeddings,
    verdict,
)
from nptface.edge_export.provenance import training_data
from nptface.edge_export.runtimes import Embedder, LiteRTEmbedder, OnnxEmbedder, TorchEmbedder

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
MIN_CALIBRATION_IMAGES = 200


class ExportError(ValueError):
    """The export could not run at all (as opposed to a variant failing the gate)."""


@dataclass
class ExportOptions:
    formats: tuple[str, ...] = FORMATS
    precisions: tuple[str, ...] = PRECISIONS
    tflite_nhwc: bool = True
    allow_partial: bool = False
    overwrite: bool = False
    latency_repeats: int = 30
    limits: dict[str, GateLimits] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    onnx_int8_recipes: tuple[onnx_export.Int8Recipe, ...] = onnx_export.INT8_RECIPES
    tflite_int8_recipes: tuple[tflite_export.TFLiteRecipe, ...] = tflite_export.INT8_RECIPES
    min_calibration_images: int = MIN_CALIBRATION_IMAGES
    # the face detector shipped in the bundle (nptface.on_device.face_detection.bundled_detector()); None: none
    detector: bundle_io.BundledDetector | None = None
    # also build onnx-int8-qat and tflite-int8-qat from one fake-quant fine-tune, each through the same gate
    qat: qat.QatSettings | None = None

    def __post_init__(self) -> None:
        for name, values, allowed in (("formats", self.formats, FORMATS), ("precisions", self.precisions, PRECISIONS)):
            unknown = sorted(set(values) - set(allowed))
            if unknown or not values:
                raise ValueError(f"{name}: expected a non-empty subset of {','.join(allowed)}, got {','.join(values)}")
        if self.qat is not None and not (
            ("onnx" in self.formats or "tflite" in self.formats) and "int8" in self.precisions
        ):
            raise ValueError(
                "qat: builds onnx-int8-qat and tflite-int8-qat, so formats must include onnx or tflite "
                "and precisions int8"
            )


@dataclass
class Attempt:
    label: str
    recipe: str
    report: ParityReport | None  # None: the attempt could not be built or run (``error`` says why)
    failures: list[str]
    numerics: Numerics = FP32
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "label": self.label,
            "recipe": self.recipe,
            **self.numerics.to_dict(),
            "parity": None if self.report is None else self.report.to_dict(),
            "failures": self.failures,
            "passed": not self.failures,
        }
        return {**out, "error": self.error} if self.error else out


@dataclass
class VariantResult:
    name: str
    format: str
    precision: str
    file: str  # relative to the bundle root
    recipe: str
    scored_by: str
    attempts: list[Attempt]
    limits: GateLimits
    shipped: bool = False
    latency_ms: float | None = None
    latency_note: str = ""
    size_bytes: int = 0
    io: dict[str, Any] = field(default_factory=dict)
    recipe_label: str = ""

    @property
    def final(self) -> Attempt:
        return next((a for a in self.attempts if a.label == self.recipe_label), self.attempts[-1])

    @property
    def passed(self) -> bool:
        return not self.final.failures

    @property
    def built(self) -> bool:
        """False when no attempt produced a file (each one's build or runtime raised)."""
        return bool(self.file)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "precision": self.precision,
            **self.final.numerics.to_dict(),
            "file": self.file,
            "recipe": self.recipe,
            "size_bytes": self.size_bytes,
            "scored_by": self.scored_by,
            "parity": None if self.final.report is None else self.final.report.to_dict(),
            "limits": self.limits.to_dict(),
            "verdict": "pass" if self.passed else "fail",
            "failures": self.final.failures,
            "attempts": [a.to_dict() for a in self.attempts],
            "latency_ms_1thread_batch1": self.latency_ms,
            "latency_note": self.latency_note,
            **self.io,
        }


@dataclass
class ExportResult:
    bundle_dir: Path
    variants: list[VariantResult]
    reference_scores: EvalScores
    table: str
    torch_ms: float  # the unfused PyTorch fp32 model, same latency protocol, same process

    @property
    def rejected(self) -> list[VariantResult]:
        return [v for v in self.variants if not v.passed]

    @property
    def shipped(self) -> list[VariantResult]:
        return [v for v in self.variants if v.shipped]

    @property
    def unmet(self) -> list[VariantResult]:
        """Rejected variants whose format and precision no passing variant delivers.

        ``onnx-int8`` (post-training) rejected beside a passing ``onnx-int8-qat`` still ships an
        8-bit-activation ONNX model: the request is met, the rejected attempt stays in ``rejected/``.
        A rejected ``onnx-int8`` beside a passing ``onnx-w8a16`` is not met: int16 activations are
        not what an int8 NPU runs.
        """
        delivered = {(v.format, v.precision) for v in self.variants if v.passed}
        return [v for v in self.rejected if (v.format, v.precision) not in delivered]


def _dir_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in (
        "nptface",
        "torch",
        "numpy",
        "onnx",
        "onnxruntime",
        "litert-torch",
        "ai-edge-litert",
        "ai-edge-quantizer",
        "coremltools",
    ):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


class _Exporter:
    """Holds what every variant needs: the models, the images, the reference and the staging folder."""

    def __init__(
        self,
        run_dir: Path,
        staging: Path,
        eval_set: InMemoryFaceDataset,
        calibration: InMemoryFaceDataset,
        options: ExportOptions,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.progress = progress
        self.model, self.meta = load_backbone(run_dir)
        self.fused = fuse_bn(self.model).eval()
        self.size = self.model.config.input_size
        self.staging = staging
        self.eval_set = eval_set
        self.calibration = calibration.images
        self.options = options
        self.models_dir = staging / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.work = staging / ".work"
        self.work.mkdir()
        self.pairs = largest_lfw_style_pairs(eval_set.labels, where=f"evaluation set {eval_set.source}")
        self._qat: qat.QatResult | Exception | None = None

    def qat_tuned(self) -> qat.QatResult:
        """The fake-quant fine-tune both ``*-int8-qat`` variants start from, run once (it takes minutes).

        Called from the variants' build steps, so a failing fine-tune is those attempts' failure; it is
        not retried: the same error is raised again for every attempt that needs it.
        """
        settings = self.options.qat
        assert settings is not None, "qat_tuned() needs ExportOptions.qat"
        if isinstance(self._qat, Exception):
            raise self._qat
        if self._qat is None:
            if settings.synthetic_domain is None:
                fresh, images = None, f"{len(self.calibration)} calibration images"
            else:
                fresh = synthetic_stream(self.size, settings.synthetic_domain)
                images = f"{settings.steps * settings.batch_size} fresh synthetic faces"
            self.say(f"qat: fine-tuning {settings.steps} steps on {images}")
            try:
                tuned = qat.fine_tune(self.fused, self.calibration, settings, fresh)
            except Exception as error:
                self._qat = error
                raise
            self._qat = tuned
            self.say(
                f"qat: {tuned.seconds:.1f} s, 1 - cos under fake quantisation "
                f"{tuned.first_loss:.5f} -> {tuned.last_loss:.5f}"
            )
        return self._qat

    def say(self, line: str) -> None:
        """A progress line: to ``progress`` (the CLI prints it: an export runs for minutes), else the log."""
        if self.progress is not None:
            self.progress(line)
        else:
            logger.info("%s", line)

    def set_reference(self, embeddings: np.ndarray) -> None:
        self.reference = embeddings
        self.reference_scores = score_embeddings(embeddings, self.eval_set.labels, self.pairs)

    def judge(self, embedder: Embedder, precision: str) -> tuple[ParityReport, list[str]]:
        return self.judge_embeddings(embedder.embed(self.eval_set.images), precision)

    def judge_embeddings(self, embeddings: np.ndarray, precision: str) -> tuple[ParityReport, list[str]]:
        report = compare(self.reference, embeddings, self.eval_set.labels, self.pairs, self.reference_scores)
        return report, verdict(report, self.options.limits[precision])

    def variant(
        self,
        name: str,
        fmt: str,
        precision: str,
        path: Path,
        scored_by: str,
        attempts: list[tuple[str, str, Callable[[Path], None], Callable[[Path], Embedder], Numerics]],
        try_all: int = 1,
    ) -> VariantResult:
        """Build and judge attempts in order; the first ``try_all`` are all tried, then stop at a pass.

        The best passing attempt (highest mean cosine) is kept at ``path``; with none passing,
        the last attempt that was built is kept for ``rejected/``. An attempt whose converter,
        quantiser or runtime raises is recorded as failed with the error, and the next one is
        tried: one tool's failure costs that recipe, not the export. With no attempt built, the
        variant is rejected without a file.
        """
        done: list[Attempt] = []
        best: tuple[float, Path, str, str] | None = None
        last: tuple[Path, str, str] | None = None
        for index, (label, recipe, build, runtime, numerics) in enumerate(attempts):
            candidate = self.work / f"{name}.{label}{path.suffix}"
            started = time.perf_counter()
            self.say(f"{name} [{label}]: building ({recipe})")
            try:  # only the tools: a bug in our own scoring below must not pass for a converter failure
                build(candidate)
                self.say(f"{name} [{label}]: gating on {len(self.eval_set)} images")
                embeddings = runtime(candidate).embed(self.eval_set.images)
            except Exception as error:  # noqa: BLE001 - converters and runtimes raise anything; the export goes on
                message = (f"{type(error).__name__}: {error}".strip().splitlines() or [""])[0][:500]
                logger.warning("%s [%s] could not be built or run", name, label, exc_info=True)
                done.append(Attempt(label, recipe, None, [f"could not be built or run: {message}"], numerics, message))
                self.say(f"{name} [{label}]: could not be built or run: {message}")
                if candidate.exists():
                    _remove(candidate)
                if best is not None and index + 1 >= try_all:
                    break
                continue
            report, failures = self.judge_embeddings(embeddings, precision)
            done.append(Attempt(label, recipe, report, failures, numerics))
            self.say(
                f"{name} [{label}]: {'pass' if not failures else 'fail: ' + '; '.join(failures)} (mean cos "
                f"{report.mean_cos:.5f}, p1 {report.p1_cos:.5f}, acc drop {report.accuracy_drop:+.2f} pt, "
                f"flips {report.flip_share * 100:.2f}%; {time.perf_counter() - started:.1f} s)"
            )
            last = (candidate, label, recipe)
            if not failures and (best is None or report.mean_cos > best[0]):
                best = (report.mean_cos, candidate, label, recipe)
            if best is not None and index + 1 >= try_all:
                break
        if last is None:  # every attempt raised: rejected, with nothing to keep
            return VariantResult(
                name,
                fmt,
                precision,
                "",
                done[-1].recipe,
                scored_by,
                done,
                self.options.limits[precision],
                recipe_label=done[-1].label,
            )
        _, keep, label, recipe = best if best is not None else (0.0, *last)
        _move(keep, path)
        result = VariantResult(
            name,
            fmt,
            precision,
            path.relative_to(self.staging).as_posix(),
            recipe,
            scored_by,
            done,
            self.options.limits[precision],
            recipe_label=label,
        )
        result.size_bytes = _dir_size(path)
        return result


def _move(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def _onnx_variants(ex: _Exporter, card: dict[str, str]) -> list[VariantResult]:
    size, precisions, out = ex.size, ex.options.precisions, []
    onnx_runtime = lambda p: OnnxEmbedder(p, size)  # noqa: E731
    base = ex.models_dir / "onnx-fp32.onnx"
    fp32 = ex.variant(
        "onnx-fp32",
        "onnx",
        "fp32",
        base,
        "onnxruntime (CPU)",
        [
            (
                "fp32",
                "BN folded, dynamic batch, opset 18",
                lambda p: onnx_export.export_fp32(ex.fused, p, size, card),
                onnx_runtime,
                FP32,
            )
        ],
    )
    fp32.io = {
        "layout": "NCHW",
        "batch": "dynamic",
        "input_dtype": "float32",
        "input_name": onnx_export.INPUT_NAME,
        "output_name": onnx_export.OUTPUT_NAME,
    }
    out.append(fp32)
    if not fp32.built:
        ex.say("onnx: no fp32 file, so no variant is quantised from it")
        return out
    if "fp16" in precisions:
        v = ex.variant(
            "onnx-fp16",
            "onnx",
            "fp16",
            ex.models_dir / "onnx-fp16.onnx",
            "onnxruntime (CPU)",
            [
                (
                    "fp16",
                    "fp16 weights and compute, float32 inputs/outputs (onnxruntime converter)",
                    lambda p: onnx_export.convert_fp16(base, p),
                    onnx_runtime,
                    FP16,
                )
            ],
        )
        v.io = dict(fp32.io)
        out.append(v)
    if "int8" in precisions:

        def build(numerics: Numerics, recipes: list[onnx_export.Int8Recipe]) -> VariantResult:
            name = variant_name("onnx", numerics)
            attempts = [
                (
                    r.label,
                    r.describe(),
                    lambda p, r=r: onnx_export.quantize_int8(base, p, ex.calibration, r),
                    onnx_runtime,
                    r.numerics,
                )
                for r in recipes
            ]
            methods = sum(1 for r in recipes if not (r.keep_float or r.bias_correction))  # remedies only on a miss
            v = ex.variant(
                name,
                "onnx",
                precision_label(numerics),
                ex.models_dir / f"{name}.onnx",
                "onnxruntime (CPU)",
                attempts,
                methods,
            )
            v.io = dict(fp32.io)
            return v

        settings = ex.options.qat
        also = None if settings is None else lambda: _onnx_qat_variant(ex, settings, card, fp32.io)
        out += _int8_then_fallback(ex.options.onnx_int8_recipes, build, also)
    return out


QAT_RECIPE = onnx_export.Int8Recipe("qat", "MinMax")  # the grid QAT trains for: per-channel, reduce_range, int8


def _onnx_qat_variant(
    ex: _Exporter, settings: qat.QatSettings, card: dict[str, str], io: dict[str, Any]
) -> VariantResult:
    """``onnx-int8-qat``: fine-tune the folded model through fake quantisation, then quantise and gate it like any int8.

    Two attempts, both judged: plain MinMax calibration of the fine-tuned weights, and the
    activation ranges learned in QAT (``TensorQuantOverrides``); the better passing one ships, and
    with neither passing the QAT ranges (the last attempt) go to ``rejected/``.
    """
    source = ex.work / "onnx-qat-fp32.onnx"
    ranges: dict[str, Any] = {}

    def fine_tuned() -> Path:
        """The fine-tuned model as fp32 ONNX and its learned ranges, made on the first attempt's build."""
        if not ranges:
            tuned = ex.qat_tuned()
            onnx_export.export_fp32(tuned.model, source, ex.size, card)
            ranges.update(qat.onnx_tensor_ranges(source, tuned.ranges))
        return source

    trained = settings.describe()
    runtime = lambda p: OnnxEmbedder(p, ex.size)  # noqa: E731
    v = ex.variant(
        "onnx-int8-qat",
        "onnx",
        "int8",
        ex.models_dir / "onnx-int8-qat.onnx",
        "onnxruntime (CPU)",
        [
            (
                "qat-minmax",
                f"{trained}; {QAT_RECIPE.describe()}",
                lambda p: onnx_export.quantize_int8(fine_tuned(), p, ex.calibration, QAT_RECIPE),
                runtime,
                W8A8,
            ),
            (
                "qat-ranges",
                f"{trained}; {QAT_RECIPE.describe()}, activation ranges learned in QAT",
                lambda p: onnx_export.quantize_int8(fine_tuned(), p, ex.calibration, QAT_RECIPE, ranges),
                runtime,
                W8A8,
            ),
        ],
        try_all=2,
    )
    v.io = dict(io)
    return v


def _int8_then_fallback(
    recipes: tuple[Any, ...],
    build: Callable[..., VariantResult],
    also_eight: Callable[[], VariantResult] | None = None,
) -> list[VariantResult]:
    """``<fmt>-int8`` from the 8-bit-activation recipes, then ``also_eight``'s 8-bit variant (``<fmt>-int8-qat``);
    ``<fmt>-w8a16`` (int16 activations) only if every 8-bit variant fails."""
    eight = [r for r in recipes if r.activation_bits == 8]
    sixteen = [r for r in recipes if r.activation_bits == 16]
    out = [build(W8A8, eight)] if eight else []
    if also_eight is not None:
        out.append(also_eight())
    if sixteen and not any(v.passed for v in out):
        out.append(build(W8A16, sixteen))
    return out


def _tflite_variants(ex: _Exporter) -> list[VariantResult]:
    size, precisions, out = ex.size, ex.options.precisions, []
    runtime = lambda p: LiteRTEmbedder(p, size)  # noqa: E731
    base = ex.models_dir / "tflite-fp32.tflite"
    layout = "NHWC" if ex.options.tflite_nhwc else "NCHW"
    fp32 = ex.variant(
        "tflite-fp32",
        "tflite",
        "fp32",
        base,
        "LiteRT interpreter (XNNPACK)",
        [
            (
                "fp32",
                f"litert-torch, BN folded, batch 1, {layout}",
                lambda p: tflite_export.export_fp32(ex.fused, p, size, ex.options.tflite_nhwc),
                runtime,
                FP32,
            )
        ],
    )
    io = {"layout": layout, "batch": 1, "input_dtype": "float32"}
    fp32.io = io
    out.append(fp32)
    if not fp32.built:
        ex.say("tflite: no fp32 file, so no variant is quantised from it")
        return out

    def source(recipe: tflite_export.TFLiteRecipe) -> Path:
        """The fp32 flatbuffer ``recipe`` quantises: ``base``, or one exported with integer-friendly PReLUs."""
        if not recipe.integer_prelu:
            return base
        path = ex.work / "tflite-fp32-integer-prelu.tflite"
        if not path.exists():
            tflite_export.export_fp32(ex.fused, path, size, ex.options.tflite_nhwc, integer_prelu=True)
        return path

    def build(numerics: Numerics, recipes: list[tflite_export.TFLiteRecipe]) -> VariantResult:
        name = variant_name("tflite", numerics)
        attempts = [
            (
                r.label,
                r.describe(),
                lambda p, r=r: tflite_export.quantize(source(r), p, r, ex.calibration),
                runtime,
                r.numerics,
            )
            for r in recipes
        ]
        v = ex.variant(
            name,
            "tflite",
            precision_label(numerics),
            ex.models_dir / f"{name}.tflite",
            "LiteRT interpreter (XNNPACK)",
            attempts,
        )
        v.io = _tflite_io(ex, v, io)
        return v

    if "fp16" in precisions:
        out.append(build(FP16, [tflite_export.FP16]))
    if "int8" in precisions:
        also = None if ex.options.qat is None else lambda: _tflite_qat_variant(ex, io)
        out += _int8_then_fallback(ex.options.tflite_int8_recipes, build, also)
        out.append(build(W8_DYNAMIC, [tflite_export.DYNAMIC_RANGE]))
    return out


def _tflite_qat_variant(ex: _Exporter, io: dict[str, Any]) -> VariantResult:
    """``tflite-int8-qat``: the weights ``onnx-int8-qat`` was fine-tuned to, full-integer quantised by LiteRT.

    The fine-tune trains for onnxruntime's grid (7-bit per-channel weights, on which LiteRT's 8-bit
    per-channel grid is about twice as fine, and int8 per-tensor activations, as LiteRT's), so its
    weights carry over; LiteRT calibrates its own activation ranges. Both
    PReLU forms of the post-training recipes are tried and judged, the better passing one ships.
    """
    settings = ex.options.qat
    assert settings is not None
    trained = settings.describe()
    runtime = lambda p: LiteRTEmbedder(p, ex.size)  # noqa: E731
    recipes = [r for r in tflite_export.INT8_RECIPES if r.activation_bits == 8]

    def build(recipe: tflite_export.TFLiteRecipe, path: Path) -> None:
        source = ex.work / f"tflite-qat-fp32.{recipe.label}.tflite"
        if not source.exists():
            tflite_export.export_fp32(
                ex.qat_tuned().model, source, ex.size, ex.options.tflite_nhwc, integer_prelu=recipe.integer_prelu
            )
        tflite_export.quantize(source, path, recipe, ex.calibration)

    v = ex.variant(
        "tflite-int8-qat",
        "tflite",
        "int8",
        ex.models_dir / "tflite-int8-qat.tflite",
        "LiteRT interpreter (XNNPACK)",
        [
            (f"qat-{r.label}", f"{trained}; {r.describe()}", lambda p, r=r: build(r, p), runtime, r.numerics)
            for r in recipes
        ],
        try_all=len(recipes),
    )
    v.io = _tflite_io(ex, v, io)
    return v


def _tflite_io(ex: _Exporter, v: VariantResult, io: dict[str, Any]) -> dict[str, Any]:
    """The manifest's I/O for a quantised .tflite: the fp32 layout plus the dtypes and scales in the file."""
    if not v.built:
        return dict(io)
    details = LiteRTEmbedder(ex.staging / v.file, ex.size)
    return {
        **io,
        "input_dtype": np.dtype(details.input["dtype"]).name,
        "input_quantization": [float(x) for x in details.input["quantization"]],
        "output_dtype": np.dtype(details.output["dtype"]).name,
        "output_quantization": [float(x) for x in details.output["quantization"]],
    }


def _coreml_variants(ex: _Exporter, card: dict[str, str]) -> list[VariantResult]:
    out = []
    scored_by = (
        "Core ML predict (macOS)"
        if coreml_export.can_predict()
        else "stored weights read back into a BN-folded PyTorch copy (weight compression only; "
        "Core ML predict needs macOS)"
    )
    for recipe in coreml_export.RECIPES:
        if recipe.precision not in ex.options.precisions:
            continue
        name = variant_name("coreml", recipe.numerics)

        def runtime(p: Path) -> Embedder:
            if coreml_export.can_predict():
                return coreml_export.CoreMLEmbedder(p, ex.size)
            return TorchEmbedder(coreml_export.weights_model(p, ex.fused), ex.size)

        v = ex.variant(
            name,
            "coreml",
            precision_label(recipe.numerics),
            ex.models_dir / f"{name}.mlpackage",
            scored_by,
            [
                (
                    recipe.label,
                    recipe.describe(),
                    lambda p, r=recipe: coreml_export.export(ex.fused, p, ex.size, r, card),
                    runtime,
                    recipe.numerics,
                )
            ],
        )
        v.io = {
            "layout": "NCHW",
            "batch": "1..64",
            "input_dtype": "float32",
            "input_name": coreml_export.INPUT_NAME,
            "output_name": coreml_export.OUTPUT_NAME,
        }
        out.append(v)
    return out


def _latency(ex: _Exporter, variant: VariantResult, repeats: int) -> None:
    path = ex.staging / variant.file
    image = ex.eval_set.images[0]
    if variant.format == "coreml":
        if not coreml_export.can_predict():
            variant.latency_note = "Core ML runs only on Apple devices"
            return
        embedder: Embedder = coreml_export.CoreMLEmbedder(path, ex.size)
    elif variant.format == "onnx":
        embedder = OnnxEmbedder(path, ex.size, threads=1)
    else:
        embedder = LiteRTEmbedder(path, ex.size, threads=1)
    variant.latency_ms = median_latency_ms(embedder, image, repeats)


def _table(variants: list[VariantResult], reference: EvalScores, torch_ms: float) -> str:
    header = [
        "variant",
        "precision",
        "recipe",
        "size",
        "x fp32 size",
        "ms (1 thread, batch 1)",
        "mean cos",
        "p1 cos",
        "min cos",
        "acc drop (pt)",
        "TAR@1e-3 drop (pt)",
        "flips",
        "top-1 agree",
        "gate",
    ]
    rows: list[list[object]] = [
        [
            "PyTorch fp32 (reference)",
            "fp32",
            "unfused",
            "-",
            "-",
            f"{torch_ms:.2f}",
            1,
            1,
            1,
            f"acc {percent(reference.accuracy)}",
            f"TAR {percent(reference.tar_at_gate_far)}",
            "-",
            "-",
            "-",
        ]
    ]
    # The size goal for quantised files (<= 0.3x) is read against the same format's fp32 file.
    fp32_bytes = {v.format: v.size_bytes for v in variants if v.precision == "fp32" and v.size_bytes}
    for v in variants:
        r = v.final.report
        base = fp32_bytes.get(v.format)
        if r is None:
            rows.append([v.name, v.precision, v.recipe_label, "-", "-", "n/a", *["n/a"] * 7, "NOT BUILT"])
            continue
        rows.append(
            [
                v.name,
                v.precision,
                v.recipe_label,
                f"{v.size_bytes / 1024:.0f} KiB",
                "-" if not base else f"{v.size_bytes / base:.2f}x",
                "n/a" if v.latency_ms is None else f"{v.latency_ms:.2f}",
                f"{r.mean_cos:.5f}",
                f"{r.p1_cos:.5f}",
                f"{r.min_cos:.5f}",
                f"{r.accuracy_drop:+.2f}",
                "n/a" if r.tar_drop is None else f"{r.tar_drop:+.2f}",
                percent(r.flip_share),
                percent(r.top1_agreement, digits=1),
                "pass" if v.passed else "REJECTED",
            ]
        )
    return markdown_table(header, rows)


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    eval_set: InMemoryFaceDataset,
    calibration: InMemoryFaceDataset,
    options: ExportOptions | None = None,
    command: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the checkpoint in ``run_dir`` to every requested variant and write the bundle ``out``;
    ``progress`` gets a line as each variant is built, gated and judged (default: the log)."""
    options = options or ExportOptions()
    run_dir, out = Path(run_dir), Path(out)
    if len(calibration) < options.min_calibration_images:
        raise ExportError(
            f"calibration set {calibration.source} has {len(calibration)} images; int8 calibration "
            f"needs at least {options.min_calibration_images} face images"
        )
    if out.exists() and not options.overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    staging = bundle_io.staging_dir(out)
    try:
        result = _export(run_dir, out, staging, eval_set, calibration, options, command or [], progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _export(
    run_dir: Path,
    out: Path,
    staging: Path,
    eval_set: InMemoryFaceDataset,
    calibration: InMemoryFaceDataset,
    options: ExportOptions,
    command: list[str],
    progress: Callable[[str], None] | None,
) -> ExportResult:
    ex = _Exporter(run_dir, staging, eval_set, calibration, options, progress)
    ex.say(f"reference: fp32 PyTorch embeddings of {len(eval_set)} evaluation images")
    if eval_set.images.shape[1:3] != (ex.size, ex.size):
        raise ExportError(
            f"evaluation images {eval_set.source} are {eval_set.images.shape[1:3]}, the model "
            f"expects {ex.size}x{ex.size}"
        )
    reference, device = compute_reference(copy.deepcopy(ex.model), eval_set)  # may move it to a GPU
    save_reference(staging / REFERENCE_FILE, eval_set, reference, device)
    ex.set_reference(reference)
    if f"{1e-3:.0e}" not in ex.reference_scores.thresholds:
        raise ExportError(
            f"evaluation set {eval_set.source} has too few impostor pairs to calibrate FAR=1e-3 "
            "(needs >= 1000); add identities"
        )
    checkpoint_sha = bundle_io.sha256_file(run_dir / MODEL_FILE)
    card = {
        "nptface_format": f"{bundle_io.FORMAT}/{bundle_io.VERSION}",
        "source_checkpoint_sha256": checkpoint_sha,
        "input": f"RGB {ex.size}x{ex.size}, (x - {MEAN}) / {STD}",
        "embedding_size": str(ex.model.config.embedding_dim),
        "metric": "cosine",
        "threshold_far_1e-3": f"{ex.reference_scores.thresholds['1e-03']:.6f}",
        "description": f"nptface MobileFaceNet face embedder ({ex.model.config.embedding_dim}-d, cosine)",
    }
    # The BN folding every variant starts from, checked on its own so a folding bug is not blamed on a runtime.
    folded, folded_failures = ex.judge(TorchEmbedder(ex.fused, ex.size), "fp32")
    if folded_failures:
        raise ExportError(f"the BN-folded PyTorch model already misses the fp32 gate: {folded_failures}")

    variants: list[VariantResult] = []
    if "onnx" in options.formats:
        variants += _onnx_variants(ex, card)
    if "tflite" in options.formats:
        variants += _tflite_variants(ex)
    if "coreml" in options.formats:
        variants += _coreml_variants(ex, card)

    torch_ms = median_latency_ms(
        TorchEmbedder(ex.model, ex.size, threads=1), eval_set.images[0], options.latency_repeats
    )
    internal = []
    for v in variants:
        if v.precision == "fp32" and "fp32" not in options.precisions and v.passed:
            _remove(staging / v.file)  # built only as the source of fp16/int8
            internal.append(v)
            continue
        # an fp32 source that failed or was not built is reported even when fp32 was not asked for:
        # the variants made from it could not be made or trusted
        if v.passed:
            ex.say(f"{v.name}: timing ({options.latency_repeats} runs, 1 thread, batch 1)")
            _latency(ex, v, options.latency_repeats)
            v.shipped = True
        elif v.built:
            target = staging / "rejected" / v.name / Path(v.file).name
            _move(staging / v.file, target)
            v.file = target.relative_to(staging).as_posix()
            atomic_write_json(target.parent / "report.json", v.to_dict())
        else:
            atomic_write_json(staging / "rejected" / v.name / "report.json", v.to_dict())
    listed = [v for v in variants if v not in internal and (v.shipped or not v.passed)]
    shutil.rmtree(ex.work)

    table = _table(listed, ex.reference_scores, torch_ms)
    manifest = _manifest(ex, listed, device, checkpoint_sha, run_dir, command, torch_ms)
    if options.detector is not None:
        manifest["detector"] = bundle_io.add_detector(staging, options.detector, ex.size)
    atomic_write_bytes(staging / "report.md", _report(ex, table, listed).encode())
    atomic_write_bytes(staging / "README.md", render_model_card(manifest).encode())
    bundle_io.write_manifest(staging, manifest)
    bundle_io.commit(staging, out, options.overwrite)
    return ExportResult(out, listed, ex.reference_scores, table, torch_ms)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _manifest(
    ex: _Exporter,
    variants: list[VariantResult],
    device: str,
    checkpoint_sha: str,
    run_dir: Path,
    command: list[str],
    torch_ms: float,
) -> dict[str, Any]:
    config = ex.model.config
    ref = ex.reference_scores
    return {
        "format": bundle_io.FORMAT,
        "version": bundle_io.VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "producer": {"command": command, "versions": _versions()},
        "source": {
            "run": str(run_dir),
            "checkpoint_sha256": checkpoint_sha,
            "head": ex.meta.head,
            "head_hparams": ex.meta.head_hparams,
            "training_identities": len(ex.meta.class_names),
            "training_data": training_data(run_dir, ex.meta),
        },
        "model": {
            "architecture": "MobileFaceNet",
            **config.to_dict(),
            "parameters": sum(p.numel() for p in ex.model.parameters()),
        },
        "input": {
            "size": [config.input_size, config.input_size],
            "channels": "RGB",
            "dtype": "float32",
            "normalization": {"mean": MEAN, "std": STD, "formula": f"(x - {MEAN}) / {STD}", "range": [-1, 1]},
            "alignment": "aligned, tightly cropped face (the training crops); resized bilinearly to the input size",
            "preprocessing": "nptface.core.preprocess.to_rgb_array + normalize",
        },
        "embedding": {
            "size": config.embedding_dim,
            "metric": "cosine",
            "comparison": "L2-normalise both embeddings, score = dot product; accept if score >= threshold",
        },
        "thresholds": {
            "cosine": ref.thresholds,
            "calibrated_on": ex.eval_set.source,
            "note": "the reference fp32 model's thresholds on the evaluation set's all-pairs; "
            "recalibrate on your own data when you can",
        },
        "evaluation": {
            "source": ex.eval_set.source,
            "images": len(ex.eval_set),
            "identities": int(len(np.unique(ex.eval_set.labels))),
            "images_sha256": ex.eval_set.content_hash(),
            "pairs": len(ex.pairs),
            "reference_device": device,
            "reference_file": REFERENCE_FILE,
            "reference_accuracy": ref.accuracy,
            "reference_tar_at_far_1e-3": ref.tar_at_gate_far,
            "protocol": "accuracy: mean over 10 LFW-style folds of as many genuine as impostor pairs "
            "(at most 300 of each a fold, protocol seed 0), each fold judged at the threshold "
            "best on the other nine; TAR@FAR and the thresholds: every pair of the set",
        },
        "calibration": {"images": int(len(ex.calibration))},
        "latency": {
            "cpu": cpu_name(),
            "machine": platform.machine(),
            "threads": 1,
            "batch": 1,
            "repeats": ex.options.latency_repeats,
            "statistic": "median",
            "pytorch_fp32_ms": torch_ms,
        },
        "variants": [v.to_dict() for v in variants if v.shipped],
        "rejected": [v.to_dict() for v in variants if not v.passed],
    }


def _report(ex: _Exporter, table: str, variants: list[VariantResult]) -> str:
    lines = [
        "# Export report",
        "",
        f"Evaluation: {ex.eval_set.source} ({len(ex.eval_set)} images, "
        f"{len(ex.pairs)} verification pairs); calibration: {len(ex.calibration)} images.",
        f"Latency: median of single-thread batch-1 runs on {cpu_name()}.",
        "",
        table,
        "",
    ]
    for v in variants:
        if len(v.attempts) > 1 or v.final.report is None:
            lines.append(f"`{v.name}` attempts:")
            for a in v.attempts:
                state = "pass" if not a.failures else "fail: " + "; ".join(a.failures)
                if a.report is None:
                    lines.append(f"- {a.label} ({a.recipe}): {state}")
                    continue
                lines.append(
                    f"- {a.label} ({a.recipe}): mean cos {a.report.mean_cos:.5f}, p1 {a.report.p1_cos:.5f},"
                    f" acc drop {a.report.accuracy_drop:+.2f} pt, flips {percent(a.report.flip_share)} — {state}"
                )
            lines.append(f"  shipped recipe: {v.recipe_label}" if v.passed else "  none passed: rejected")
            lines.append("")
    coreml = [v for v in variants if v.format == "coreml"]
    if coreml:
        lines.append(f"Core ML variants were scored by {coreml[0].scored_by}.")
    return "\n".join(lines) + "\n"


def export_run(
    run_dir: str | Path,
    out: str | Path,
    calibration: str = "synthetic",
    evaluation: str = "synthetic",
    domain: str = "wild",
    options: ExportOptions | None = None,
    command: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """:func:`export_bundle` with its image sets named as on the command line.

    ``"synthetic"`` renders held-out identities (evaluation and calibration from disjoint ones);
    anything else is an ImageFolder. The same folder for both is refused: a gate that judges a
    variant on its own calibration images flatters it.
    """
    from nptface.edge_export.evalset import image_folder_set, synthetic_sets

    size = load_backbone(run_dir)[0].config.input_size
    if calibration != "synthetic" and Path(calibration).resolve() == Path(evaluation).resolve():
        raise ExportError(f"--calibration and --eval are the same folder ({calibration}); use disjoint images")
    synthetic_eval, synthetic_calibration = (
        synthetic_sets(size, domain) if "synthetic" in (calibration, evaluation) else (None, None)
    )
    eval_set = synthetic_eval if evaluation == "synthetic" else image_folder_set(evaluation, size)
    calibration_set = synthetic_calibration if calibration == "synthetic" else image_folder_set(calibration, size)
    assert eval_set is not None and calibration_set is not None
    return export_bundle(run_dir, out, eval_set, calibration_set, options, command, progress)
