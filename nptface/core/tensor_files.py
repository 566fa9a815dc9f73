"""Safetensors files that are byte-for-byte the same for the same tensors and metadata.

The safetensors writer keeps a file's metadata in a hash map whose order changes from process to
process, so two bit-identical runs wrote different bytes: a gallery or a cache keyed on a
checkpoint's sha256 then refused a bit-identical retrain. Here the header is rewritten with its
metadata keys sorted (tensor entries are already in a fixed order), and the file written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

from nptface.core.atomic import atomic_write_bytes

_ALIGN = 8  # the writer pads the header with spaces to this many bytes


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` keys in sorted order."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % _ALIGN)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor] | Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Atomically write torch tensors (moved to the CPU) or numpy arrays, reproducibly."""
    meta = dict(metadata) if metadata else None
    if all(isinstance(value, torch.Tensor) for value in tensors.values()):
        data = save_torch({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)
    else:
        data = save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)
    atomic_write_bytes(path, canonical_safetensors(data))
