"""How the server judges a global backbone: held-out identities nobody trains on, and the clients' own view.

Central evaluation verifies identities that no client holds and no export gate uses, in two
domains: the clients' (does federated fine-tuning help where the clients are?) and the server's
(does it forget what the server model knew?). With an ImageFolder source the client domain is
the folder's identities that the partition plan keeps from every client. Folds are LFW-style and
as large as each set allows. The clients' own view is their local verification accuracy on their
held-out images, pooled weighted by how many images each client evaluated.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from nptface.client import protocol
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.pairs import largest_lfw_style_pairs
from nptface.server.federation.config import FedConfig, FedConfigError

logger = logging.getLogger(__name__)

EvalSets = dict[str, tuple[Any, Any]]  # name -> (materialised dataset, verification pairs)
NON_FINITE = "non-finite"  # metric suffix: the set's embeddings were not all finite


def central_eval_sets(config: FedConfig, image_size: int) -> EvalSets:
    """Held-out identities nobody trains on, in the clients' domain and in the server's (forgetting)."""
    from nptface.core.datasets import SyntheticFaceDataset, materialize
    from nptface.core.synthetic import HELDOUT_IDS

    ids = HELDOUT_IDS[200 : 200 + config.central_eval_identities]  # never a client's, never the export gate's
    domains = [("server-domain", config.central_eval_domain)]
    sets = {}
    if config.client.source == "synthetic":
        domains.insert(0, ("client-domain", config.client.domains.split(",")[0].strip()))
    else:  # the folder's identities that no client holds
        sets["client-domain"] = _with_pairs(_held_out_folder(config, image_size), "client-domain")
    for name, domain in domains:
        sets[name] = _with_pairs(
            materialize(
                SyntheticFaceDataset(ids, config.central_eval_images, domain, 4242, image_size), progress=False
            ),
            name,
        )
    return dict(sorted(sets.items()))


def _held_out_folder(config: FedConfig, image_size: int) -> Any:
    from nptface.core.datasets import materialize
    from nptface.core.identities import ClassSubset
    from nptface.core.imagefolder import ImageFolderDataset

    plan = replace(config.client, image_size=image_size).plan()
    if len(plan.held_out) < 2:
        raise FedConfigError(
            f"{config.client.source}: central evaluation needs >= 2 held-out identities (folder-held-out-identities)"
        )
    folder = ImageFolderDataset(config.client.source, image_size=image_size)
    labels = [folder.class_names.index(name) for name in plan.held_out]
    return materialize(ClassSubset(folder, labels), progress=False)


def _with_pairs(data: Any, name: str) -> tuple[Any, Any]:
    return data, largest_lfw_style_pairs(data.labels, seed=0, where=f"central evaluation set {name}")


def evaluate_backbone(model: MobileFaceNet, sets: EvalSets) -> dict[str, float]:
    """Held-out verification per set. A backbone that yields non-finite embeddings (a poisoned
    aggregate can) cannot verify anything: it scores chance accuracy, TAR 0, and is flagged."""
    from nptface.core.embedding import embed_dataset
    from nptface.core.evaluation import evaluate_embeddings

    out = {}
    for name, (data, pairs) in sets.items():
        embeddings = embed_dataset(model.eval(), data)
        if not np.isfinite(embeddings).all():
            logger.warning("%s: the backbone gives non-finite embeddings; scored as chance", name)
            out.update({f"{name}/accuracy": 0.5, f"{name}/tar@far=1e-2": 0.0, f"{name}/{NON_FINITE}": 1.0})
            continue
        result = evaluate_embeddings(embeddings, np.asarray(data.labels), pairs)
        out[f"{name}/accuracy"] = result.verification.accuracy.mean
        tar = result.verification.tar_at_far.get(1e-2)
        out[f"{name}/tar@far=1e-2"] = float("nan") if tar is None or tar.tar is None else tar.tar
    return out


def non_finite_sets(metrics: dict[str, float]) -> list[str]:
    """The evaluation sets on which :func:`evaluate_backbone` found non-finite embeddings."""
    return sorted(key.rpartition("/")[0] for key in metrics if key.endswith(f"/{NON_FINITE}"))


def read_client_evaluation(content: Any) -> tuple[float, float]:
    """(images evaluated, accuracy) from an evaluate reply; KeyError/TypeError/ValueError if malformed."""
    metrics = content[protocol.METRICS]
    return float(metrics["num-examples"]), float(metrics.get("accuracy", float("nan")))


def pool_client_accuracy(reports: list[tuple[float, float]]) -> dict[str, float]:
    """Image-weighted mean of the clients' local accuracies; reports without images or a valid accuracy are skipped."""
    valid = [(n, accuracy) for n, accuracy in reports if n > 0 and np.isfinite(accuracy) and 0 <= accuracy <= 1]
    examples = sum(n for n, _ in valid)
    weighted = sum(accuracy * n for n, accuracy in valid)
    return {
        "clients-local/accuracy": weighted / examples if examples else float("nan"),
        "clients-local/replies": float(len(valid)),
    }
