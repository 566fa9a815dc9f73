"""The NPT paper's optimiser recipe for MobileFaceNet: SGD parameter groups with layer-wise weight decay.

The recipe decays the proxies at 5e-4, the embedding layer at 1e-4 and the rest of the backbone
at 1e-5, and puts no decay on PReLU slopes (decaying them pushes the activation towards a ReLU)
or on BatchNorm's affine terms (which only rescale). Central training and every federated client
build their SGD groups here, so a client fine-tunes with the recipe the server trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nptface.core.mobilefacenet import MobileFaceNet

PROXY_GROUP = "proxies"  # the parameter group holding the proxy rows (sharded training finds it by name)


@dataclass(frozen=True)
class WeightDecay:
    """Weight decay per parameter group; the defaults are the paper's."""

    proxies: float = 5e-4
    embedding: float = 1e-4
    backbone: float = 1e-5


def parameter_groups(model: MobileFaceNet, proxies: nn.Parameter, decay: WeightDecay = WeightDecay()) -> list[dict]:
    """SGD parameter groups in a fixed order: backbone, embedding, no_decay, proxies.

    Every parameter of ``model`` is in exactly one group; ``proxies`` (the head's rows, or one
    rank's shard of them, or a client's own rows) form the last.
    """
    embedding_ids = {id(p) for p in model.embedding_parameters()}
    no_decay = {
        id(p)
        for module in model.modules()
        if isinstance(module, (nn.PReLU, nn.BatchNorm2d))
        for p in module.parameters(recurse=False)
    }
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "embedding": [], "no_decay": []}
    for p in model.parameters():
        groups["no_decay" if id(p) in no_decay else "embedding" if id(p) in embedding_ids else "backbone"].append(p)
    return [
        {"name": "backbone", "params": groups["backbone"], "weight_decay": decay.backbone},
        {"name": "embedding", "params": groups["embedding"], "weight_decay": decay.embedding},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
        {"name": PROXY_GROUP, "params": [proxies], "weight_decay": decay.proxies},
    ]
