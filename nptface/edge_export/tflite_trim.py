"""Exact size trims of a written .tflite: identical vectors and buffers stored once, internal tensor names shortened.

A per-channel int8 file carries, besides its int8 weights, one float32 scale and one int64 zero
point per output channel for every weight and again for every int32 bias, and the schema wants
the zero-point vector as long as the scale vector even when all of it is zero: on the full-size
MobileFaceNet those zero points were 160 KB, 11 % of the file. Flatbuffers lets tables share a
vector, so each distinct vector (all-zero zero points of one channel count, duplicated weights)
is written once and referenced from every table that holds it, and weight buffers of equal bytes
(ai-edge-quantizer appends them after the flatbuffer, 16-byte aligned, at an offset) share one
copy; the runtime reads the same values.
litert-torch names every tensor by its module path (about 100 KB here); the quantised files keep
the names of the signature's inputs and outputs, and the others become their index — nothing
reads them, and the float recipes that match layers by name read the fp32 file, not these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def trim(path: Path) -> None:
    """Rewrite the .tflite at ``path`` in place with shared vectors and buffers and index names for internal tensors."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    for subgraph in model.subgraphs:
        kept = {*subgraph.inputs, *subgraph.outputs}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in kept:
                tensor.name = str(index)
    appended = {i: data[b.offset : b.offset + b.size] for i, b in enumerate(model.buffers) if b.offset}
    blobs = list(dict.fromkeys(appended.values()))
    for i in appended:  # placeholders, so that the offset fields are written and keep their size
        model.buffers[i].offset, model.buffers[i].size = 1, 1
    start = _round_up_16(len(_pack(model)))
    offsets, position = {}, start
    for blob in blobs:
        offsets[blob] = position
        position = _round_up_16(position + len(blob))
    for i, blob in appended.items():
        model.buffers[i].offset, model.buffers[i].size = offsets[blob], len(blob)
    packed = _pack(model)
    if len(packed) > start:
        raise RuntimeError(f"{path}: the flatbuffer grew into its appended buffers when their offsets were filled in")
    out = bytearray(packed) + bytes(position - len(packed))
    for blob, offset in offsets.items():
        out[offset : offset + len(blob)] = blob
    path.write_bytes(bytes(out))


def _round_up_16(n: int) -> int:
    return (n + 15) // 16 * 16


def _pack(model: object) -> bytes:
    builder = _sharing_builder()
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")  # type: ignore[attr-defined]
    return bytes(builder.Output())


def _sharing_builder() -> object:
    """A flatbuffers builder that writes each numpy vector (inline buffers, shapes, scales, zero points) once per content."""
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self) -> None:
            super().__init__(1024)
            self.written: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers' name)
            key = (x.dtype.str, x.tobytes())
            if key not in self.written:
                self.written[key] = super().CreateNumpyVector(x)
            return self.written[key]

    return SharingBuilder()
