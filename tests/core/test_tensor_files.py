"""Safetensors outputs are byte-reproducible: the same tensors and metadata give the same file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file

from nptface.core.tensor_files import write_safetensors

WRITE = """
import sys, torch
from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
from nptface.core.mobilefacenet import MobileFaceNet
torch.manual_seed(0)
model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=8)
save_checkpoint(sys.argv[1], model, torch.ones(2, 8), CheckpointMeta(model={}, head="npt", head_hparams={},
                class_names=["a", "b"], extra={"z": 1, "a": 2}))
"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_processes_saving_the_same_checkpoint_write_identical_bytes(tmp_path):
    # The writer's metadata order changes between processes, so the saves must run in separate ones.
    names = ("first", "second", "third")
    for name in names:
        subprocess.run([sys.executable, "-c", WRITE, str(tmp_path / name)], check=True, timeout=300)
    for file in ("model.safetensors", "proxies.safetensors", "checkpoint.json"):
        assert len({_sha(tmp_path / name / file) for name in names}) == 1, file


def test_canonical_files_still_read_back_with_their_metadata(tmp_path):
    metadata = {f"key{i}": str(i) for i in range(12)}
    write_safetensors(tmp_path / "t.safetensors", {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(1)}, metadata)
    write_safetensors(tmp_path / "n.safetensors", {"rows": np.eye(3, dtype=np.float32)}, metadata)
    assert torch.equal(load_file(tmp_path / "t.safetensors")["w"], torch.arange(6.0).view(2, 3))
    assert np.array_equal(load_numpy(tmp_path / "n.safetensors")["rows"], np.eye(3, dtype=np.float32))
    from safetensors import safe_open

    with safe_open(tmp_path / "t.safetensors", "pt") as handle:
        assert handle.metadata() == metadata
    data = (tmp_path / "t.safetensors").read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    assert header_length % 8 == 0
    assert list(json.loads(data[8 : 8 + header_length])["__metadata__"]) == sorted(metadata)
