"""Where an exported model came from: what it was trained on, and what it was fine-tuned from.

The model card must say plainly whether the faces a model learned from were real or rendered,
because that decides what its numbers mean on real faces. The run directory records it: the
trainer and the centralised baseline write ``training_data`` (and ``init`` when fine-tuned) into
``checkpoint.json``; older runs have the resolved config in ``config.json`` beside it; a federated
run was fine-tuned on the clients' private data, which the server never sees. The chain of
``init`` runs is followed (a few levels) so that a model fine-tuned on real faces from a
synthetic-trained start is described as both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nptface.core.checkpoint import CheckpointError, CheckpointMeta, load_meta

MAX_INIT_DEPTH = 4


def training_data(run_dir: Path, meta: CheckpointMeta, depth: int = 0) -> dict[str, Any]:
    """``{"kind": synthetic | imagefolder | recordio | federated | unknown, ...}`` with ``init``: the
    same description of the run it was fine-tuned from, when known."""
    recorded = meta.extra.get("training_data")
    if isinstance(recorded, dict) and "kind" in recorded:
        data = dict(recorded)
    elif "federated_rounds" in meta.extra:
        data = {"kind": "federated", "rounds": meta.extra["federated_rounds"]}
    else:
        data = _from_config(run_dir / "config.json")
    data.setdefault("identities", len(meta.class_names))
    init = meta.extra.get("init")
    if isinstance(init, dict) and isinstance(init.get("path"), str):
        data["init"] = _init_data(init["path"], depth)
    return data


def _from_config(path: Path) -> dict[str, Any]:
    try:
        section = json.loads(path.read_text())["config"]["data"]
        return {"kind": str(section["kind"]), "path": section.get("path", ""), "domain": section.get("domain")}
    except (OSError, ValueError, KeyError, TypeError):
        return {"kind": "unknown"}


def _init_data(path: str, depth: int) -> dict[str, Any]:
    source = Path(path)
    run_dir = source.parent if source.suffix == ".safetensors" else source
    if depth >= MAX_INIT_DEPTH:
        return {"kind": "unknown", "path": path}
    try:
        return {"path": path, **training_data(run_dir, load_meta(run_dir), depth + 1)}
    except CheckpointError:
        return {"kind": "unknown", "path": path}


def ever_synthetic(data: dict[str, Any]) -> bool:
    """Whether synthetic faces trained this model at any stage (its own data or any run it started from)."""
    return data.get("kind") == "synthetic" or (isinstance(data.get("init"), dict) and ever_synthetic(data["init"]))


def only_synthetic(data: dict[str, Any]) -> bool:
    """Whether every stage that is known trained on synthetic faces, and none is unknown."""
    if data.get("kind") != "synthetic":
        return False
    return not isinstance(data.get("init"), dict) or only_synthetic(data["init"])
