"""Fine-tuning from an existing model (``model.init``): its backbone, and its proxies where they fit.

Starting from a trained backbone is how most face models are made: a few epochs on one's own
identities instead of weeks from scratch. ``model.init`` names a run directory, or a
``model.safetensors`` with its ``checkpoint.json`` beside it; its architecture is checked against
the config's model section when the config is loaded, before any data is read. The proxies come
along only when the training identities are exactly the ones the source was trained on (same
class names, same order), since a proxy row means one identity; otherwise every row is imprinted
(:func:`nptface.core.imprinting.imprint`) from the training images under the loaded backbone.
Rows are ``[C, d]`` under every head, so this works for any head. Only a fresh run loads
``model.init``: a resumed one continues from its own checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.utils.data import Dataset

from nptface.core.checkpoint import MODEL_FILE, CheckpointMeta, load_meta, load_proxies
from nptface.core.heads import ProxyHead
from nptface.core.imprinting import imprint
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitSource:
    """Where ``model.init`` points: the run directory (metadata, proxies) and the weights file."""

    run_dir: Path
    weights: Path
    meta: CheckpointMeta


def resolve_init(init: str) -> InitSource:
    """The run ``init`` names, or a ``ValueError`` saying what was expected there."""
    path = Path(init)
    if path.is_dir():
        run_dir, weights = path, path / MODEL_FILE
    elif path.is_file() and path.suffix == ".safetensors":
        run_dir, weights = path.parent, path
    else:
        raise ValueError(
            f"{init!r} is neither a run directory nor a .safetensors file "
            f"(expected a run directory, or a {MODEL_FILE} with checkpoint.json beside it)"
        )
    if not weights.is_file():
        raise ValueError(f"{weights} not found")
    return InitSource(run_dir, weights, load_meta(run_dir))


def check_init(init: str, expected: MobileFaceNetConfig) -> InitSource:
    """Resolve ``init`` and require its architecture to be ``expected`` (the config's model section)."""
    source = resolve_init(init)
    found = source.meta.model
    wanted = expected.to_dict()
    if found != wanted:
        differences = ", ".join(
            f"{key} {found.get(key)!r} there, {value!r} here"
            for key, value in wanted.items()
            if found.get(key) != value
        )
        raise ValueError(
            f"{source.run_dir} holds a MobileFaceNet of another architecture ({differences or found}); "
            f"set model.width, model.input_size and model.embedding_dim to its values"
        )
    return source


def reuses_proxies(source: InitSource, class_names: list[str]) -> bool:
    """Whether the source's proxy rows are this run's: the very same identities in the same order."""
    return list(source.meta.class_names) == list(class_names)


def init_record(init: str, class_names: list[str]) -> dict[str, Any]:
    """What the run's checkpoint records of its starting point: path, weights' sha256 and proxy origin."""
    source = resolve_init(init)
    digest = hashlib.sha256(source.weights.read_bytes()).hexdigest()
    return {
        "path": init,
        "model_sha256": digest,
        "proxies": "reused" if reuses_proxies(source, class_names) else "imprinted",
        "source_run": source.meta.extra.get("run"),
    }


def warm_start(
    init: str, backbone: MobileFaceNet, head: ProxyHead, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> str:
    """Load ``init``'s backbone into ``backbone`` and set ``head``'s proxies from it; returns how the
    proxies were set (``"reused"`` or ``"imprinted"``). Imprinting embeds ``dataset`` on the
    backbone's device."""
    source = check_init(init, backbone.config)
    try:
        backbone.load_state_dict(load_file(source.weights, device=str(next(backbone.parameters()).device)))
    except (RuntimeError, SafetensorError) as error:
        raise ValueError(
            f"model.init: {source.weights} does not hold the weights of the architecture in "
            f"{source.run_dir / 'checkpoint.json'}: {error}"
        ) from None
    class_names = list(dataset.class_names)
    with torch.no_grad():
        if reuses_proxies(source, class_names):
            head.proxies.copy_(load_proxies(source.run_dir))
            logger.info("model.init %s: backbone and its %d proxies loaded", init, len(class_names))
            return "reused"
        logger.info(
            "model.init %s: backbone loaded; imprinting %d proxies from %d training images (the source "
            "was trained on other identities)",
            init,
            len(class_names),
            len(dataset),
        )
        rows = imprint(backbone, dataset, batch_size=batch_size, num_workers=num_workers)
        head.proxies.copy_(torch.from_numpy(rows).to(head.proxies))
    return "imprinted"
