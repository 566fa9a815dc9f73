"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory ``checkpoints/step-XXXXXXXX/`` with ``state.safetensors`` (model,
the full proxy matrix and optimizer momentum even when the proxies are sharded across ranks, RNG
states: tensors only) and ``state.json`` (position in the data, optimizer hyper-parameters, config
and its hash, the epoch history). The directories are written, committed, found and pruned by
:mod:`nptface.core.checkpoint_dirs`: a kill at any instant leaves a complete checkpoint to resume
from, also when an epoch ends on a checkpoint step and that step is written a second time.
Nothing is unpickled on load.

bf16 autocast needs no gradient scaler, and fp16 training is not offered, so there is no AMP
scaler state to save. The learning rate is a pure function of the step (no scheduler state).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nptface.core.checkpoint_dirs import CheckpointDirs
from nptface.core.versioned_json import read_versioned_json

STATE_FORMAT = "nptface-train-state"
STATE_VERSION = 1


class TrainStateError(ValueError):
    """A training checkpoint that cannot be read, or was written by a run of another config."""


@dataclass
class TrainPosition:
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # global batches of that epoch already consumed
    global_step: int = 0
    samples_seen: int = 0
    # Running sums of the epoch in progress, so a resumed epoch reports the same loss/accuracy.
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0


@dataclass
class TrainState:
    position: TrainPosition
    config: dict[str, Any]
    config_hash: str
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StoredTrainState:
    """A checkpoint as read: state dicts to load (full proxies whatever the writer's world size)."""

    model: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    train: TrainState
    rng: dict[str, torch.Tensor]

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng["torch"])
        cuda_states = [self.rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in self.rng]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)


def _optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, values in structure["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": structure["param_groups"]}


def save_train_state(
    checkpoints_dir: Path,
    model_state: dict[str, torch.Tensor],
    head_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: TrainState,
    keep: int = 2,
) -> Path:
    """Write and commit one checkpoint directory, make it the latest, prune all but the newest ``keep``.

    The states are ``state_dict()``s; a sharded head passes its gathered full matrix and momentum
    (:mod:`nptface.server.training.sharding.proxy_shard`), so every checkpoint has the layout of a one-process run.
    """
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update({f"head.{k}": v for k, v in head_state.items()})
    optimizer_tensors, optimizer_structure = _optimizer_to_tensors(optimizer_state)
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "position": state.position.__dict__,
        "config": state.config,
        "config_hash": state.config_hash,
        "history": state.history,
        "optimizer": optimizer_structure,
    }
    checkpoints = CheckpointDirs(checkpoints_dir, keep)
    name = f"step-{state.position.global_step:08d}"
    with checkpoints.write(name) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, staging / "state.safetensors")
        (staging / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return checkpoints_dir / name


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint to resume from (see :meth:`CheckpointDirs.current`), or None when there is none."""
    return CheckpointDirs(checkpoints_dir).current()


def read_train_state(path: Path, expected_hash: str | None) -> StoredTrainState:
    """Read a checkpoint (nothing is loaded into modules); refuse one of another config."""
    meta = read_versioned_json(path / "state.json", STATE_FORMAT, STATE_VERSION, TrainStateError)
    if expected_hash is not None and meta["config_hash"] != expected_hash:
        raise TrainStateError(
            f"{path} was written by a run with config hash {meta['config_hash']}, but this run's config hashes to "
            f"{expected_hash}: resuming would mix two different trainings (start a new run name instead)"
        )
    tensors = load_file(path / "state.safetensors")

    def section(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return StoredTrainState(
        model=section("model."),
        head=section("head."),
        optimizer=_optimizer_from_tensors(tensors, meta["optimizer"]),
        train=TrainState(TrainPosition(**meta["position"]), meta["config"], meta["config_hash"], meta["history"]),
        rng=section("rng."),
    )
