"""Quantisation-aware fine-tuning for the int8 variants with 8-bit activations (``nptface export --qat``).

Post-training int8 with 8-bit activations leaves an error spread evenly over the ~50
convolutions of MobileFaceNet, and no calibration or bias remedy cuts it far enough for the
gate's decision-flip limit. Here the BN-folded model the ONNX file is made from is fine-tuned
for a few hundred steps through fake quantisation that mimics onnxruntime's static QDQ scheme
(per-channel symmetric weights on ``reduce_range``'s 7-bit grid, per-tensor asymmetric int8
activations at every Conv, Add and PRelu input and output, the PReLU slope per-tensor on the
weights' grid), so the
weights learn to sit where rounding hurts least. The training signal needs no head and no
labels: the fp32 model's own embeddings (distillation, loss ``1 - cosine``) of the calibration
images, or of a stream of fresh images (``fresh``: a new batch every step, e.g. synthetic faces of
identities nothing else uses), which keeps the student from fitting the few hundred calibration
images instead of the input distribution. Fake quantisation is inserted by torchao's PT2E QAT (``prepare_qat_pt2e``)
with a quantizer written for this scheme: the library's XNNPACK and x86 quantizers use full
8-bit weights and do not cover the same tensors. The activation ranges the fake quantisers
settled on travel to ``quantize_static`` as ``TensorQuantOverrides`` (``onnx_tensor_ranges``).
The same fine-tuned weights also make ``tflite-int8-qat``: LiteRT's 8-bit per-channel weight grid
is about twice as fine as the 7-bit one trained for, and LiteRT calibrates its own activation ranges.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nptface.core.preprocess import normalize

logger = logging.getLogger(__name__)

# FX op -> the ONNX op it exports to; tensors are matched by (op, position among that op's nodes).
_ONNX_OPS = {
    torch.ops.aten.conv2d.default: "Conv",
    torch.ops.aten.add.Tensor: "Add",
    torch.ops.aten.prelu.default: "PRelu",
}
INPUT_KEY = ("input", 0)


@dataclass(frozen=True)
class QatSettings:
    """How long and how hard to fine-tune. On the quickstart model (64 px) 1500 steps at lr 1e-4 with
    cosine decay, distilled on fresh synthetic faces, were the first setting to pass the gate (0.95 %
    decision flips; 600 steps at constant lr 5e-5: 1.39 %), though on a second quickstart run they
    missed it (1.12 %); they took 16-18 minutes on one busy CPU thread. A constant 3e-4 drifted
    further from the fp32 embeddings than it recovered."""

    steps: int = 1500
    lr: float = 1e-4
    batch_size: int = 32
    freeze_ranges_at: float = 0.5  # share of steps after which activation ranges stop moving
    cosine_decay: bool = True  # learning rate from lr down to 0 along a half cosine
    # distil on fresh synthetic faces of this domain (new identities every step) instead of the calibration images
    synthetic_domain: str | None = None
    reduce_range: bool = True  # 7-bit weight grid, as the int8 recipes quantise (onnx_export.Int8Recipe)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"qat steps: expected a positive integer, got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"qat lr: expected > 0, got {self.lr!r}")
        if self.batch_size < 1:
            raise ValueError(f"qat batch_size: expected >= 1, got {self.batch_size!r}")
        if not 0.0 <= self.freeze_ranges_at <= 1.0:
            raise ValueError(f"qat freeze_ranges_at: expected a share in [0, 1], got {self.freeze_ranges_at!r}")
        from nptface.core.synthetic import DOMAINS

        if self.synthetic_domain is not None and self.synthetic_domain not in DOMAINS:
            raise ValueError(
                f"qat synthetic_domain: expected one of {', '.join(DOMAINS)}, got {self.synthetic_domain!r}"
            )
        from nptface.edge_export.evalset import SYNTHETIC_STREAM_SIZE

        if self.synthetic_domain is not None and self.steps * self.batch_size > SYNTHETIC_STREAM_SIZE:
            raise ValueError(
                f"qat steps: {self.steps} steps x {self.batch_size} fresh synthetic faces need more than the "
                f"{SYNTHETIC_STREAM_SIZE} identities set aside for them; use at most "
                f"{SYNTHETIC_STREAM_SIZE // self.batch_size} steps, or --qat-images calibration"
            )

    def describe(self) -> str:
        images = (
            "the calibration images"
            if self.synthetic_domain is None
            else f"fresh synthetic faces ({self.synthetic_domain}, {self.steps * self.batch_size} held-out identities)"
        )
        rate = f"lr {self.lr:g}" + (" cosine-decayed" if self.cosine_decay else "")
        return (
            f"QAT: {self.steps} steps of fake-quant fine-tuning (Adam, {rate}, batch {self.batch_size}), "
            f"distilled to the fp32 embeddings of {images}"
        )


@dataclass
class QatResult:
    model: nn.Module  # the fine-tuned BN-folded model, plain fp32 (no fake quantisation left in it)
    fake_quant: nn.Module  # the same weights through the fake quantisers, activation ranges frozen
    ranges: dict[tuple[str, int], tuple[float, float]]  # (ONNX op or "input", position) -> (rmin, rmax)
    seconds: float
    first_loss: float  # mean 1 - cosine over the first tenth of the steps
    last_loss: float  # and over the last tenth


def _quantizer(reduce_range: bool) -> object:
    from torchao.quantization.pt2e import FakeQuantize, MovingAverageMinMaxObserver
    from torchao.quantization.pt2e import MovingAveragePerChannelMinMaxObserver as PerChannel
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    activation = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
    )
    # onnxruntime's symmetric int8 weights: [-64, 64] with reduce_range, else [-127, 127].
    limit = 64 if reduce_range else 127
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-limit,
        quant_max=limit,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        # averaging 1.0: each step's scale comes from the current weights, as onnxruntime's will from the final ones
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=PerChannel, averaging_constant=1.0),
    )
    # onnxruntime stores a PRelu slope like an activation (one scale and zero point for the tensor,
    # asymmetric) on the weight type's grid: [-64, 64] with reduce_range, else [-128, 127].
    slope = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-64 if reduce_range else -128,
        quant_max=64 if reduce_range else 127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, averaging_constant=1.0),
    )

    class OnnxQdqQuantizer(Quantizer):
        """Annotates what onnxruntime's QDQ quantiser quantises in this network: Conv, Add and PRelu, inputs
        and outputs (``onnx_export`` adds PRelu to onnxruntime's op types for 8-bit activations)."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op != "call_function":
                    continue
                if node.target == torch.ops.aten.conv2d.default:
                    inputs = {node.args[0]: activation, node.args[1]: weight}
                elif node.target == torch.ops.aten.prelu.default:
                    inputs = {node.args[0]: activation, node.args[1]: slope}
                elif node.target == torch.ops.aten.add.Tensor:
                    inputs = {arg: activation for arg in node.args[:2] if isinstance(arg, torch.fx.Node)}
                else:
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=inputs, output_qspec=activation, _annotated=True
                )
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            return None

    return OnnxQdqQuantizer()


def _freeze_activation_ranges(model: torch.fx.GraphModule) -> None:
    """Stop the observers of computed tensors; those of parameters (weights, PReLU slopes) keep following them."""
    for node in model.graph.nodes:
        if node.op == "call_module" and isinstance(node.args[0], torch.fx.Node) and node.args[0].op != "get_attr":
            quantiser = model.get_submodule(node.target)
            if hasattr(quantiser, "disable_observer"):
                quantiser.disable_observer()


def _learned_ranges(prepared: torch.fx.GraphModule) -> dict[tuple[str, int], tuple[float, float]]:
    """The range each activation fake quantiser settled on, keyed by the producing op's ONNX name and position."""
    counts: dict[str, int] = {}
    keys: dict[str, tuple[str, int]] = {}
    for node in prepared.graph.nodes:
        if node.op == "placeholder":
            keys[node.name] = INPUT_KEY
        elif node.op == "call_function" and node.target in _ONNX_OPS:
            op = _ONNX_OPS[node.target]
            keys[node.name] = (op, counts.get(op, 0))
            counts[op] = counts.get(op, 0) + 1
    ranges = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or not isinstance(node.args[0], torch.fx.Node):
            continue
        source = node.args[0]
        quantiser = prepared.get_submodule(node.target)
        observer = getattr(quantiser, "activation_post_process", None)
        if (
            source.name in keys
            and observer is not None
            and getattr(quantiser, "qscheme", None) == torch.per_tensor_affine
        ):
            ranges[keys[source.name]] = (float(observer.min_val), float(observer.max_val))
    return ranges


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """More inputs than the few hundred calibration images: flips, shifts, contrast, and pairs blended.

    The student only has to match the teacher on whatever it is shown, so inputs need not be
    real faces: blends of two faces widen the set without labels. Measured on the quickstart
    model, the fake-quant error on held-out faces was 1.6x that on the calibration images
    without augmentation.
    """
    n, size = len(batch), batch.shape[-1]
    flip = torch.as_tensor(rng.random(n) < 0.5)[:, None, None, None]
    batch = torch.where(flip, batch.flip(3), batch)
    shift = max(1, size // 16)
    dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
    batch = torch.roll(batch, (dy, dx), dims=(2, 3))
    gain = torch.as_tensor(rng.uniform(0.8, 1.2, (n, 1, 1, 1)), dtype=batch.dtype)
    offset = torch.as_tensor(rng.uniform(-0.1, 0.1, (n, 1, 1, 1)), dtype=batch.dtype)
    batch = (batch * gain + offset).clamp(-1, 1)
    weight = torch.as_tensor(rng.uniform(0.0, 0.5, (n, 1, 1, 1)), dtype=batch.dtype)
    return (1 - weight) * batch + weight * batch[torch.as_tensor(rng.permutation(n))]


def fine_tune(
    fused: nn.Module,
    images: np.ndarray,
    settings: QatSettings,
    fresh: Callable[[int, int], np.ndarray] | None = None,
) -> QatResult:
    """Fine-tune a copy of the BN-folded ``fused`` through ONNX-like fake quantisation on uint8 ``images``.

    Each step draws a batch (augmented: :func:`_augment`) from ``images``, or takes ``fresh(step,
    batch_size)`` (uint8 images never shown before) when given, and moves the fake-quantised student's
    embeddings towards the untouched fp32 model's. Returns the fine-tuned fp32 weights in a copy of ``fused``.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    teacher = fused.eval()
    inputs = normalize(images)
    example = inputs[: min(2, len(inputs))]
    any_batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(
        copy.deepcopy(fused).eval(), (example,), dynamic_shapes=({0: any_batch},), strict=False
    ).module()
    student = prepare_qat_pt2e(exported, _quantizer(settings.reduce_range))
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.steps) if settings.cosine_decay else None
    freeze_at = int(round(settings.freeze_ranges_at * settings.steps))
    losses = []
    for step in range(settings.steps):
        if step == freeze_at:
            _freeze_activation_ranges(student)
        if fresh is None:
            index = rng.choice(len(inputs), size=min(settings.batch_size, len(inputs)), replace=False)
            batch = _augment(inputs[index], rng)
        else:
            batch = _augment(normalize(fresh(step, settings.batch_size)), rng)
        with torch.no_grad():
            target = teacher(batch)
        loss = (1 - nn.functional.cosine_similarity(student(batch), target, dim=1)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if schedule is not None:
            schedule.step()
        losses.append(float(loss.detach()))
    tuned = copy.deepcopy(fused).eval()
    weights = {k: v for k, v in student.state_dict().items() if k in tuned.state_dict()}
    tuned.load_state_dict(weights, strict=True)
    seconds = time.perf_counter() - started
    window = max(1, len(losses) // 10)
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    logger.info("QAT: %d steps in %.1f s, loss %.5f -> %.5f", settings.steps, seconds, first, last)
    _freeze_activation_ranges(student)
    return QatResult(tuned, student, _learned_ranges(student), seconds, first, last)


def onnx_tensor_ranges(
    model_path: object, ranges: dict[tuple[str, int], tuple[float, float]]
) -> dict[str, list[dict[str, float]]]:
    """``ranges`` as onnxruntime ``TensorQuantOverrides`` for the float ONNX file at ``model_path``.

    The exported graph keeps PyTorch's op order, so the k-th Conv/Add/PRelu of the file is the
    k-th of the QAT graph; a count mismatch means the file is not this model and is refused.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    by_op: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in _ONNX_OPS.values():
            by_op.setdefault(node.op_type, []).append(node.output[0])
    expected: dict[str, int] = {}
    for op, position in ranges:
        if op != INPUT_KEY[0]:
            expected[op] = max(expected.get(op, 0), position + 1)
    for op, count in expected.items():
        if len(by_op.get(op, [])) != count:
            raise ValueError(f"{model_path}: has {len(by_op.get(op, []))} {op} nodes, the QAT graph {count}")
    overrides = {}
    for (op, position), (low, high) in ranges.items():
        name = graph.input[0].name if (op, position) == INPUT_KEY else by_op[op][position]
        overrides[name] = [{"rmin": np.float32(min(low, 0.0)), "rmax": np.float32(max(high, 0.0))}]
    return overrides
