"""Claim: single-thread, batch-1 fp32 latency of the full-size MobileFaceNet per runtime, against PyTorch and the compute limit.

The full-size model (112 px, width 1.0, 256-d, untrained: latency only) runs as PyTorch eager
(NCHW and channels_last, with and without BatchNorm folded), as onnxruntime sessions over the
exported file (the exporter's PReLU graph) and over the graph ``OnnxEmbedder`` loads (PReLU
decomposed, see ``onnx_prelu``) at each graph optimisation level, as ``OnnxEmbedder``'s own
session, and as LiteRT fp32 (XNNPACK). All variants live in one process and are timed
round-robin, one call each per round, the starting variant rotating, so that load from other jobs
hits them alike; medians over rounds of wall time and of the thread's CPU time (which leaves out
the time other jobs held the core) are reported. The compute limit is the model's FLOPs
(2 x MACs) at the peak of one core: the widest FMA vector's fp32 lanes x 2 (multiply and add) x
FMA instructions per cycle x clock, the clock as /proc/cpuinfo reports it (a virtual machine
shows the nominal clock, not boost). The optimised graphs' node counts show what onnxruntime made
of each graph. There is no fp32 NHWC variant: onnxruntime's NhwcTransformer rewrites only
quantised (and, on ARM, fp16) convolutions; x86's fp32 layout pass is NCHWc, on at ``all``.

``--int8`` adds the quantised variants the export builds, made here from the same untrained model
by the export's own recipes with a small synthetic calibration set (latency only: an untrained
model has no parity to gate): LiteRT full-integer int8 (8-bit activations) and w8a16 (int16
activations), LiteRT w8-dynamic, and onnxruntime static QDQ int8 and w8a16, each beside its fp32
file, with file sizes and the graph each runtime runs (onnxruntime's optimised nodes; how many
XNNPACK partitions the .tflite falls into, one meaning XNNPACK runs it all). On x86 these run XNNPACK's and MLAS's x86 int8 kernels (AVX-512 VNNI where
the CPU has it); they say how the graph quantises and what it costs here, not a phone's speed: an
ARM core runs other kernels (dotprod/i8mm), and an NPU or GPU delegate is not represented at all.

    .venv/bin/python benchmarks/bench_inference.py [--rounds 50] [--no-litert] [--int8] [--calibration 16]
        [--fma-per-cycle 1]
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nptface.core.complexity import count_macs  # noqa: E402
from nptface.core.mobilefacenet import MobileFaceNet, fuse_bn  # noqa: E402
from nptface.core.preprocess import normalize  # noqa: E402
from nptface.edge_export import onnx_export, tflite_export  # noqa: E402
from nptface.edge_export.onnx_prelu import decompose_prelu  # noqa: E402
from nptface.edge_export.runtimes import OnnxEmbedder  # noqa: E402

SIZE = 112
BASE = "pytorch eager NCHW"
LEVELS = ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
NO_NCHWC = {"optimization.disable_specified_optimizers": "NchwcTransformer"}
DEPTHWISE_SLIDING = {"mlas.nchwc_depthwise_sliding": "1"}


def cpu_peak(fma_per_cycle: int) -> tuple[float, str]:
    """Peak fp32 FLOP/s of one core and how it was derived, from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2 FMA") if "fma" in flags else (4, "SSE")
    ghz = float(fields.get("cpu MHz", "nan")) / 1000
    peak = lanes * 2 * fma_per_cycle * ghz * 1e9
    how = (
        f"{fields.get('model name', 'unknown CPU')}: {isa} {lanes} fp32 lanes x 2 FLOP/FMA x {fma_per_cycle} FMA/cycle "
        f"x {ghz:.3f} GHz (cpuinfo) = {peak / 1e9:.1f} GFLOP/s per core"
    )
    return peak, how


def ort_session(path: Path, level: str, config: dict[str, str] | None = None, dump: Path | None = None) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # dumping an NCHWc graph warns that it is machine-specific
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if dump is not None:
        options.optimized_model_filepath = str(dump)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def node_counts(path: Path) -> str:
    counts = collections.Counter()
    for node in onnx.load(str(path)).graph.node:
        fused = [a.s.decode() for a in node.attribute if a.name == "activation"]
        domain = "nchwc:" if node.domain == "com.microsoft.nchwc" else "" if node.domain in ("", "ai.onnx") else "ms:"
        counts[domain + node.op_type + (f"+{fused[0]}" if fused else "")] += 1
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())


def litert_call(path: Path, image: np.ndarray) -> Callable[[], object]:
    """One invocation on a ready input; a full-integer model's input is quantised once, outside the timing."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    index, out = details["index"], interpreter.get_output_details()[0]["index"]
    nhwc = np.ascontiguousarray(image.transpose(0, 2, 3, 1))
    if details["dtype"] != np.float32:
        scale, zero_point = details["quantization"]
        info = np.iinfo(details["dtype"])
        nhwc = np.clip(np.round(nhwc / scale + zero_point), info.min, info.max).astype(details["dtype"])

    def call() -> object:
        interpreter.set_tensor(index, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return call


def xnnpack_partitions(path: Path) -> str:
    """How many pieces XNNPACK takes the .tflite in: one means it runs the whole graph, more that ops fall back."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    delegated = ops.pop("DELEGATE", 0)
    return f"{delegated} XNNPACK partition(s) over {sum(ops.values())} ops"


def calibration_faces(count: int) -> np.ndarray:
    """``count`` synthetic held-out faces (uint8, 112 px), one per identity, as the export calibrates on."""
    from nptface.edge_export.evalset import synthetic_sets

    return synthetic_sets(SIZE, eval_identities=2, eval_images=1, calibration_identities=count, calibration_images=1)[
        1
    ].images


def int8_variants(
    prelu: Path, tflite: Path | None, integer: Path | None, tmp: Path, faces: np.ndarray, x: np.ndarray
) -> tuple[dict[str, Callable[[], object]], list[tuple[str, Path, Path, float, str]]]:
    """The export's quantised variants of the untrained model: timed calls, and (name, file, its fp32 file, build s,
    what the runtime made of the graph).

    The ONNX recipes are the export's first 8-bit and first 16-bit-activation ones (MinMax). onnxruntime
    runs each as ``OnnxEmbedder`` loads it (``decompose_prelu``, which leaves a quantised graph as it
    is, then ``all``, one thread), LiteRT as ``litert_call`` feeds it (a full-integer input quantised
    beforehand, as an app's camera path would hand it over).
    """
    eight, sixteen = (next(r for r in onnx_export.INT8_RECIPES if r.activation_bits == bits) for bits in (8, 16))
    builds: list[tuple[str, Callable[[Path], None], Path, str]] = [
        ("onnx-int8", lambda p: onnx_export.quantize_int8(prelu, p, faces, eight), prelu, "onnx"),
        ("onnx-w8a16", lambda p: onnx_export.quantize_int8(prelu, p, faces, sixteen), prelu, "onnx"),
    ]
    if tflite is not None:
        int8_integer, int8, int16 = (
            next(r for r in tflite_export.INT8_RECIPES if r.label == label)
            for label in ("int8-integer-prelu", "int8", "int8-int16-activations")
        )
        builds += [
            ("tflite-int8", lambda p: tflite_export.quantize(integer, p, int8_integer, faces), tflite, "tflite"),
            (
                "tflite-int8-pytorch-prelu",
                lambda p: tflite_export.quantize(tflite, p, int8, faces),
                tflite,
                "tflite",
            ),
            ("tflite-w8a16", lambda p: tflite_export.quantize(tflite, p, int16, faces), tflite, "tflite"),
            (
                "tflite-w8-dynamic",
                lambda p: tflite_export.quantize(tflite, p, tflite_export.DYNAMIC_RANGE),
                tflite,
                "tflite",
            ),
        ]
    feed = {onnx_export.INPUT_NAME: x}
    calls: dict[str, Callable[[], object]] = {}
    files = []
    for name, build, fp32, suffix in builds:
        path = tmp / f"{name}.{suffix}"
        start = time.perf_counter()
        build(path)
        seconds = time.perf_counter() - start
        if suffix == "onnx":
            decomposed, dump = tmp / f"{name}-decomposed.onnx", tmp / f"{name}-optimised.onnx"
            onnx.save(decompose_prelu(onnx.load(str(path))), str(decomposed))
            session = ort_session(decomposed, "ORT_ENABLE_ALL", dump=dump)  # OnnxEmbedder's session, dumped
            calls[f"onnxruntime {name}, as OnnxEmbedder loads it"] = lambda s=session: s.run(None, feed)
            graph = node_counts(dump)
        else:
            calls[f"LiteRT {name} (XNNPACK), NHWC input"] = litert_call(path, x)
            graph = xnnpack_partitions(path)
        files.append((name, path, fp32, seconds, graph))
    return calls, files


def round_robin(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 5
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and thread CPU seconds of each call, per variant.

    Every runtime here computes on the calling thread (one thread, no pool), so the thread's CPU
    time leaves out the time other jobs held the core: on a loaded machine it is the better
    estimate of an idle machine's latency, though shared caches still slow it.
    """
    names = list(variants)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    with torch.no_grad():
        for name in names:
            for _ in range(warmup):
                variants[name]()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                wall, cpu = time.perf_counter(), time.thread_time()
                variants[name]()
                times[name][1].append(time.thread_time() - cpu)
                times[name][0].append(time.perf_counter() - wall)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50, help="timed calls per variant (one per round)")
    parser.add_argument("--no-litert", action="store_true", help="skip the LiteRT export (about a minute)")
    parser.add_argument("--int8", action="store_true", help="add the export's int8 and w8a16 variants (minutes)")
    parser.add_argument("--calibration", type=int, default=16, help="synthetic calibration faces for --int8")
    parser.add_argument(
        "--fma-per-cycle", type=int, default=1, help="FMA instructions of the widest width one core issues per cycle"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe())
    peak, how = cpu_peak(args.fma_per_cycle)
    torch.manual_seed(0)
    model = MobileFaceNet().eval()
    flops = 2 * count_macs(model, (3, SIZE, SIZE))
    limit_ms = flops / peak * 1000
    print(f"peak: {how}\nmodel: {flops / 1e9:.3f} GFLOP per face -> compute limit {limit_ms:.2f} ms")

    fused = fuse_bn(model)
    pixels = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    x = normalize(pixels)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model_cl = fuse_bn(model).to(memory_format=torch.channels_last)
    unfused_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    feed = {onnx_export.INPUT_NAME: x.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        prelu, decomposed = Path(tmp) / "prelu.onnx", Path(tmp) / "decomposed.onnx"
        onnx_export.export_fp32(fused, prelu, SIZE, {})
        onnx.save(decompose_prelu(onnx.load(str(prelu))), str(decomposed))
        variants: dict[str, Callable[[], object]] = {
            BASE: lambda: model(x),
            "pytorch eager NCHW, BN folded": lambda: fused(x),
            "pytorch eager channels_last": lambda: unfused_cl(x_cl),
            "pytorch eager channels_last, BN folded": lambda: model_cl(x_cl),
        }
        graphs = []
        for label, path in (("PReLU graph (file)", prelu), ("PReLU decomposed", decomposed)):
            settings = [(level.removeprefix("ORT_ENABLE_").lower(), level, None) for level in LEVELS]
            settings += [("all without NCHWc", "ORT_ENABLE_ALL", NO_NCHWC)]
            if path == decomposed:
                settings += [("all, depthwise sliding", "ORT_ENABLE_ALL", DEPTHWISE_SLIDING)]
            for name, level, config in settings:
                dump = Path(tmp) / f"{path.stem}-{name.replace(' ', '_').replace(',', '')}.onnx"
                session = ort_session(path, level, config, dump)
                variants[f"onnxruntime {label}, {name}"] = lambda s=session: s.run(None, feed)
                graphs.append((f"{label}, {name}", node_counts(dump)))
        embedder = OnnxEmbedder(prelu, SIZE, threads=1)
        variants["onnxruntime, OnnxEmbedder's session"] = lambda: embedder.session.run(None, feed)
        tflite = None
        if not args.no_litert:
            tflite = Path(tmp) / "model.tflite"
            tflite_export.export_fp32(fused, tflite, SIZE)
            variants["LiteRT fp32 (XNNPACK), NHWC input"] = litert_call(tflite, x.numpy())
        quantised = []
        if args.int8:
            integer = None
            if tflite is not None:  # the flatbuffer tflite-int8's first recipe quantises (PReLU as integer MUL/ADD)
                integer = Path(tmp) / "model-integer-prelu.tflite"
                tflite_export.export_fp32(fused, integer, SIZE, integer_prelu=True)
            faces = calibration_faces(args.calibration)
            calls, quantised = int8_variants(prelu, tflite, integer, Path(tmp), faces, x.numpy())
            variants.update(calls)

        print(f"\nonnxruntime graphs after optimisation (exported: {node_counts(prelu)})")
        for label, counts in graphs:
            print(f"- {label}: {counts}")

        load_before = os.getloadavg()
        times = round_robin(variants, args.rounds)
        load_after = os.getloadavg()
        if quantised:
            print(
                f"\nquantised files of the untrained model ({args.calibration} synthetic calibration faces; "
                "size against the fp32 file of the same format)"
            )
            print("| variant | KiB | fp32 KiB | x fp32 size | build s | graph as the runtime runs it |")
            print("|---|---|---|---|---|---|")
            for name, path, fp32, seconds, graph in quantised:
                size, base = path.stat().st_size / 1024, fp32.stat().st_size / 1024
                print(f"| {name} | {size:.0f} | {base:.0f} | {size / base:.2f} | {seconds:.0f} | {graph} |")
            if tflite is not None:
                print(f"- tflite-fp32 for comparison: {xnnpack_partitions(tflite)}")

    wall = {name: statistics.median(t[0]) * 1000 for name, t in times.items()}
    cpu = {name: statistics.median(t[1]) * 1000 for name, t in times.items()}
    print(
        f"\nfull-size MobileFaceNet ({SIZE} px, width 1.0, 256-d), fp32, batch 1, 1 thread, {args.rounds} rounds "
        f"round-robin; load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{' '.join(f'{v:.2f}' for v in load_after)} after"
    )
    print(
        "| variant | median ms (wall) | median ms (CPU) | x PyTorch eager NCHW (wall) | x PyTorch (CPU) "
        "| x compute limit (CPU) | GFLOP/s (CPU) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in times:
        print(
            f"| {name} | {wall[name]:.2f} | {cpu[name]:.2f} | {wall[name] / wall[BASE]:.2f} | {cpu[name] / cpu[BASE]:.2f} "
            f"| {cpu[name] / limit_ms:.2f} | {flops / cpu[name] / 1e6:.1f} |"
        )
    best = min(cpu, key=cpu.get)
    print(
        f"\nbest: {best}, {cpu[best] / limit_ms:.2f}x the compute limit ({limit_ms:.2f} ms) in CPU time, "
        f"{wall[best] / limit_ms:.2f}x in wall time"
    )


if __name__ == "__main__":
    main()
