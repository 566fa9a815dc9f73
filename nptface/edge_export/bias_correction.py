"""Empirical bias correction: cancel the mean shift that int8 rounding adds to each convolution's output.

Rounding weights and activations to 8 bits adds an error to every conv output whose per-channel
mean is not zero (asymmetric ranges, a skewed input after PReLU), and a deep network carries
these shifts forward: the embedding drifts as a whole, which costs more cosine than zero-mean
rounding noise. The fix needs no training: run the float graph and the quantised graph on the
calibration images and, one Conv at a time in graph order, move its int32 bias by the difference
of the per-channel output means. It must go in order, with the upstream convs already corrected:
a conv's measured shift includes what it inherits from above, so correcting every conv at once by
its whole shift corrects the inherited part twice (measured: worse than no correction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def add_missing_biases(model_path: Path) -> None:
    """Give every bias-less Conv a zero bias (the exporter drops all-zero ones) so the quantiser makes it int32."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) < 3:
            if node.input[1] not in initializers:
                raise ValueError(f"{model_path}: Conv {node.name} has weights that are not a constant initializer")
            channels = numpy_helper.to_array(initializers[node.input[1]]).shape[0]
            bias = numpy_helper.from_array(np.zeros(channels, np.float32), f"{node.name}_zero_bias")
            model.graph.initializer.append(bias)
            node.input.append(bias.name)
    onnx.save(model, str(model_path))


def output_means(model: object, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel mean (over images and positions) of each named tensor of an ONNX model (a ModelProto)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # type: ignore[arg-type]
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names if name not in present
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the named tensors
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums = {name: np.zeros(0) for name in names}
    count = 0
    for feed in feeds:
        count += len(next(iter(feed.values())))
        for name, value in zip(names, session.run(names, feed), strict=True):
            channel_sums = value.reshape(value.shape[0], value.shape[1], -1).mean(axis=2).sum(axis=0)
            sums[name] = channel_sums if not sums[name].size else sums[name] + channel_sums
    return {name: total / count for name, total in sums.items()}


def correct_biases(float_path: Path, quantised_path: Path, feeds: list[dict[str, np.ndarray]]) -> int:
    """Correct, in place and in graph order, the int32 bias of every quantised Conv of ``quantised_path``.

    ``float_path`` is the float model it was quantised from (same tensor names). Returns the number
    of convs corrected; a Conv whose bias is not a DequantizeLinear of a constant is left alone.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(quantised_path))
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    corrections = []  # (conv output, int32 bias initializer, its scale)
    for node in model.graph.node:
        dequantise = producers.get(node.input[2]) if node.op_type == "Conv" and len(node.input) == 3 else None
        if dequantise is not None and dequantise.op_type == "DequantizeLinear":
            if dequantise.input[0] in initializers and dequantise.input[1] in initializers:
                scale = numpy_helper.to_array(initializers[dequantise.input[1]]).astype(np.float64)
                corrections.append((node.output[0], initializers[dequantise.input[0]], scale))
    reference = output_means(onnx.load(str(float_path)), [name for name, _, _ in corrections], feeds)
    for name, bias, scale in corrections:
        shift = output_means(model, [name], feeds)[name] - reference[name]
        values = numpy_helper.to_array(bias).astype(np.int64) - np.round(shift / scale).astype(np.int64)
        info = np.iinfo(np.int32)
        bias.CopyFrom(numpy_helper.from_array(np.clip(values, info.min, info.max).astype(np.int32), bias.name))
    onnx.save(model, str(quantised_path))
    return len(corrections)
