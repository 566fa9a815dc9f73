"""The federated server's checkpoint: one folder per completed round, committed by its state file.

After every round the server writes ``rounds/round-NNNN/`` with the backbone (safetensors), the
proxy bank (rows + identity list + owners), the registry of which client holds which
identities, and the metrics history; ``state.json`` is written last, so a round folder without
it is an interrupted write and is ignored. Re-running the same command after a SIGKILL resumes
from the newest complete round and loses nothing. The final model is also written as a standard
nptface run directory (``checkpoint.json`` + ``model.safetensors`` + ``proxies.safetensors``, the
bank's identities as class names), so ``nptface export --run`` and ``nptface eval`` take it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nptface.core.atomic import atomic_path, atomic_write_json
from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.server.federation.proxy_bank import ProxyBank

STATE_FILE = "state.json"
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


def round_dir(out_dir: Path, round_number: int) -> Path:
    return out_dir / "rounds" / f"round-{round_number:04d}"


def save_state(out_dir: Path, state: FedState) -> Path:
    directory = round_dir(out_dir, state.round)
    if directory.exists():
        shutil.rmtree(directory)  # a leftover without state.json, or a round being redone
    directory.mkdir(parents=True)
    with atomic_path(directory / BACKBONE_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in state.backbone.items()}, tmp)
    state.bank.save(directory / "bank")
    atomic_write_json(directory / STATE_FILE, {"round": state.round, "registry": state.registry,
                                               "history": state.history, "config_hash": state.config_hash})
    for old in sorted((out_dir / "rounds").glob("round-*"))[:-KEEP_ROUNDS]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def latest_state(out_dir: Path) -> FedState | None:
    """The newest round folder whose state.json exists, or None for a fresh run."""
    rounds = sorted((out_dir / "rounds").glob("round-*"), reverse=True) if (out_dir / "rounds").is_dir() else []
    for directory in rounds:
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            continue
        try:
            meta = json.loads(state_path.read_text())
            backbone = load_file(directory / BACKBONE_FILE)
        except (OSError, json.JSONDecodeError) as error:
            raise FedStateError(f"{directory}: unreadable federated checkpoint ({error})") from None
        return FedState(int(meta["round"]), backbone, ProxyBank.load(directory / "bank"),
                        {k: list(v) for k, v in meta["registry"].items()}, list(meta["history"]),
                        str(meta.get("config_hash", "")))
    return None


def export_run_directory(out_dir: Path, model: MobileFaceNet, bank: ProxyBank, extra: dict[str, Any]) -> Path:
    """The federated model as a standard nptface run directory (for export, eval, the demo)."""
    meta = CheckpointMeta(model=model.config.to_dict(), head="npt", head_hparams={}, class_names=list(bank.ids),
                          extra=extra)
    return save_checkpoint(out_dir, model, torch.from_numpy(bank.rows.copy()), meta)
