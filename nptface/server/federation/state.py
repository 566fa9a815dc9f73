"""The federated server's checkpoint: one folder per completed round, committed atomically.

After every round the server writes ``rounds/round-NNNN/`` with the backbone (safetensors), the
proxy bank (rows + identity list + owners), and ``state.json`` (format ``nptface-fed-state``:
the round, the registry of which client holds which identities, the metrics history and the
config hash). The folders are written, committed, found and pruned by
:mod:`nptface.core.checkpoint_dirs`, so re-running the same command after a SIGKILL resumes
from the newest complete round and loses nothing. The final model is also written as a standard
nptface run directory (``checkpoint.json`` + ``model.safetensors`` + ``proxies.safetensors``, the
bank's identities as class names), so ``nptface export --run`` and ``nptface eval`` take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
from nptface.core.checkpoint_dirs import CheckpointDirs
from nptface.core.metrics_json import write_metrics_json
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.versioned_json import read_versioned_json
from nptface.server.federation.proxy_bank import ProxyBank

STATE_FILE = "state.json"
STATE_FORMAT = "nptface-fed-state"
STATE_VERSION = 1
BACKBONE_FILE = "backbone.safetensors"
KEEP_ROUNDS = 2


class FedStateError(ValueError):
    """A federated checkpoint that cannot be resumed (names the file and the problem)."""


@dataclass
class FedState:
    round: int  # last completed round (0 = the starting point, before any federated round)
    backbone: dict[str, torch.Tensor]
    bank: ProxyBank
    registry: dict[str, list[str]] = field(default_factory=dict)  # client name -> identity ids it holds
    history: list[dict[str, Any]] = field(default_factory=list)
    config_hash: str = ""


def _rounds(out_dir: Path) -> CheckpointDirs:
    return CheckpointDirs(out_dir / "rounds", keep=KEEP_ROUNDS)


def save_state(out_dir: Path, state: FedState) -> Path:
    """Commit ``state`` as ``rounds/round-NNNN/`` and prune all but the newest rounds."""
    name = f"round-{state.round:04d}"
    with _rounds(out_dir).write(name) as staging:
        save_file({k: v.contiguous() for k, v in state.backbone.items()}, staging / BACKBONE_FILE)
        state.bank.save(staging / "bank")
        meta = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "round": state.round,
            "registry": state.registry,
            "history": state.history,
            "config_hash": state.config_hash,
        }
        write_metrics_json(staging / STATE_FILE, meta)
    return out_dir / "rounds" / name


def latest_state(out_dir: Path) -> FedState | None:
    """The newest complete round, or None for a fresh run."""
    directory = _rounds(out_dir).current()
    if directory is None:
        return None
    state_path = directory / STATE_FILE
    meta = read_versioned_json(state_path, STATE_FORMAT, STATE_VERSION, FedStateError)
    try:
        round_number, config_hash = int(meta["round"]), str(meta["config_hash"])
        registry = {str(k): list(v) for k, v in meta["registry"].items()}
        history = list(meta["history"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FedStateError(
            f"{state_path}: expected fields round, registry, history and config_hash ({error!r})"
        ) from None
    try:
        backbone = load_file(directory / BACKBONE_FILE)
    except (OSError, SafetensorError) as error:
        raise FedStateError(f"{directory / BACKBONE_FILE}: unreadable federated checkpoint ({error})") from None
    return FedState(round_number, backbone, ProxyBank.load(directory / "bank"), registry, history, config_hash)


def export_run_directory(out_dir: Path, model: MobileFaceNet, bank: ProxyBank, extra: dict[str, Any]) -> Path:
    """The federated model as a standard nptface run directory (for export, eval, the demo)."""
    meta = CheckpointMeta(
        model=model.config.to_dict(), head="npt", head_hparams={}, class_names=list(bank.ids), extra=extra
    )
    return save_checkpoint(out_dir, model, torch.from_numpy(bank.rows.copy()), meta)
