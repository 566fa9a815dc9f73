"""The on-disk contract of a trained model: what training writes and everything else reads.

A run directory holds ``model.safetensors`` (backbone weights), ``proxies.safetensors`` (the
``[C, d]`` proxy matrix of the head) and ``checkpoint.json`` (format name and version, the
architecture, the head and its hyper-parameters, and the class names that map proxy rows to
identities). Weights are safetensors and the metadata is JSON, so loading a checkpoint never
unpickles anything; every file is written to a temporary name and renamed, so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from nptface.core.atomic import atomic_write_json
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.tensor_files import write_safetensors
from nptface.core.versioned_json import read_versioned_json

FORMAT = "nptface-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
PROXIES_FILE = "proxies.safetensors"
META_FILE = "checkpoint.json"


class CheckpointError(ValueError):
    """A run directory that is missing a file, or whose files disagree with the contract."""


@dataclass
class CheckpointMeta:
    model: dict[str, Any]
    head: str
    head_hparams: dict[str, Any]
    class_names: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION


def save_checkpoint(run_dir: str | Path, model: MobileFaceNet, proxies: torch.Tensor, meta: CheckpointMeta) -> Path:
    """Write the three files of the contract into ``run_dir``; metadata last, as the commit mark."""
    run_dir = Path(run_dir)
    if proxies.shape[0] != len(meta.class_names):
        raise CheckpointError(f"{len(meta.class_names)} class names for {proxies.shape[0]} proxy rows")
    tag = {"format": FORMAT, "version": str(VERSION)}
    write_safetensors(run_dir / MODEL_FILE, model.state_dict(), tag)
    write_safetensors(run_dir / PROXIES_FILE, {"proxies": proxies}, tag)
    atomic_write_json(run_dir / META_FILE, meta.__dict__)
    return run_dir


def load_meta(run_dir: str | Path) -> CheckpointMeta:
    path = Path(run_dir) / META_FILE
    payload = read_versioned_json(
        path, FORMAT, VERSION, CheckpointError, f"{Path(run_dir)} is not an nptface run directory"
    )
    try:
        return CheckpointMeta(**payload)
    except TypeError as error:
        raise CheckpointError(f"{path}: unexpected or missing fields ({error})") from None


def load_backbone(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[MobileFaceNet, CheckpointMeta]:
    """Rebuild the backbone from a run directory (weights only: nothing is unpickled)."""
    run_dir = Path(run_dir)
    meta = load_meta(run_dir)
    try:
        config = MobileFaceNetConfig(**meta.model)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{run_dir / META_FILE}: field 'model' is not a MobileFaceNet config ({error})") from None
    model = MobileFaceNet(config)
    weights_path = run_dir / MODEL_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} not found")
    try:
        model.load_state_dict(load_file(weights_path, device=str(device)))
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path} does not match the architecture in {META_FILE}: {error}") from None
    return model.to(device).eval(), meta


def load_proxies(run_dir: str | Path) -> torch.Tensor:
    path = Path(run_dir) / PROXIES_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    return load_file(path)["proxies"]
