"""The Flower ClientApp: register, fine-tune locally with NPT, evaluate on local held-out images.

Images never leave the client: it sends back backbone weights, the rows of the bank for its own
identities (with the number of images behind each) and metrics. Its data is the ImageFolder its
node config names (``data-path``, :mod:`~nptface.client.node_data`: a real device's own photos),
or else its partition of the plan described by the settings in the message (``partition-id``
from the node config picks which), so the same ClientApp serves simulation and real SuperNodes. :func:`make_client_app`
takes Flower mods because Flower binds an app's mods when its handlers are registered: the
simulation wraps these same handlers in its fault and attack mods; ``app`` has none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from nptface.client import protocol
from nptface.client.local_training import LocalConfig, fine_tune
from nptface.client.node_data import data_path, node_datasets
from nptface.client.row_privacy import noised_rows
from nptface.core.imprinting import imprint
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.partitions import client_datasets

STATE_ROWS = "nptface-own-rows"  # context.state: the clean rows a dp-mode client keeps to itself


def partition_of(context: Context) -> int:
    """This node's partition of the plan, from its node config."""
    if "partition-id" not in context.node_config:
        raise ValueError(
            "node config has no 'partition-id'; start the SuperNode with "
            '--node-config "partition-id=N num-partitions=M"'
        )
    return int(context.node_config["partition-id"])


def _datasets(settings: protocol.ClientSettings, context: Context) -> tuple[Any, Any]:
    """(train, held-out) of this node: its own folder when its node config names one, else its partition."""
    partition = partition_of(context)
    own_folder = data_path(context.node_config)
    if own_folder is not None:
        return node_datasets(own_folder, partition, settings.image_size, settings.eval_images)
    return client_datasets(settings.plan(), partition, settings.image_size, seed=settings.partition_seed)


def _model(settings: protocol.ClientSettings, backbone: ArrayRecord) -> MobileFaceNet:
    model = MobileFaceNet(MobileFaceNetConfig(**json.loads(settings.model_json)))
    model.load_state_dict(backbone.to_torch_state_dict(), strict=False)
    return model.eval()


def register(msg: Message, context: Context) -> Message:
    settings = protocol.ClientSettings.from_record(msg.content[protocol.CONFIG])
    partition = partition_of(context)
    train, _ = _datasets(settings, context)
    record = ConfigRecord({"partition": partition, "ids": list(train.class_names)})
    return Message(RecordDict({protocol.CONFIG: record}), reply_to=msg)


def train(msg: Message, context: Context) -> Message:
    config = msg.content[protocol.CONFIG]
    settings = protocol.ClientSettings.from_record(config)
    partition = partition_of(context)
    model = _model(settings, msg.content[protocol.BACKBONE])
    train_set, _ = _datasets(settings, context)
    ids = list(train_set.class_names)
    keep_rows = bool(config.get(protocol.KEEP_ROWS, False))
    given = (
        _kept_rows(context)
        if keep_rows
        else dict(zip(list(config["own_ids"]), msg.content[protocol.OWN_ROWS]["rows"].numpy(), strict=True))
    )
    rows = imprint(model, train_set)  # new identities start as their mean embedding
    for index, identity in enumerate(ids):
        if identity in given:
            rows[index] = given[identity]
    seed = int(config["seed"]) + partition
    local = LocalConfig(
        epochs=settings.local_epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        k=settings.k,
        delta=settings.delta,
        fedprox_mu=settings.fedprox_mu,
        bn_frozen=settings.bn_mode == "frozen",
        seed=seed,
    )
    result = fine_tune(model, rows, msg.content[protocol.NEGATIVES]["rows"].numpy(), train_set, local)
    sent_rows = result.rows
    if keep_rows:
        context.state[STATE_ROWS] = ArrayRecord({"rows": Array(np.ascontiguousarray(sent_rows, np.float32))})
        context.state[STATE_ROWS + "-ids"] = ConfigRecord({"ids": ids})
    noise = float(config.get(protocol.DP_NOISE, 0.0))
    if noise > 0:  # only the noised copy leaves the client
        sent_rows = noised_rows(sent_rows, float(config[protocol.DP_CLIP]), noise, np.random.default_rng([seed, 7]))
    content = RecordDict(
        {
            protocol.BACKBONE: ArrayRecord(result.weights),
            protocol.ROWS_OUT: protocol.numpy_record(rows=np.asarray(sent_rows, np.float32), counts=result.counts),
            protocol.CONFIG: ConfigRecord({"ids": ids, "imprinted": len(ids) - len(given)}),
            protocol.METRICS: MetricRecord(
                {**{k: float(v) for k, v in result.metrics.items()}, "imprinted": float(len(ids) - len(given))}
            ),
        }
    )
    return Message(content, reply_to=msg)


def _kept_rows(context: Context) -> dict[str, np.ndarray]:
    """The clean rows this node kept from its last round (empty on its first round or after a restart)."""
    if STATE_ROWS not in context.state:
        return {}
    rows = context.state[STATE_ROWS]["rows"].numpy()
    ids = list(context.state[STATE_ROWS + "-ids"]["ids"])
    return dict(zip(ids, rows, strict=True))


def evaluate(msg: Message, context: Context) -> Message:
    """Local verification on this client's held-out images (never used for training)."""
    from nptface.core.evaluation import evaluate_model
    from nptface.core.pairs import all_genuine_pairs

    settings = protocol.ClientSettings.from_record(msg.content[protocol.CONFIG])
    model = _model(settings, msg.content[protocol.BACKBONE])
    _, held_out = _datasets(settings, context)
    metrics = {"num-examples": 0.0}
    # Verification needs impostors: a one-owner phone cannot verify on its own images.
    if held_out is not None and len(held_out) >= 4 and len(np.unique(held_out.labels)) >= 2:
        pairs = all_genuine_pairs(held_out.labels, seed=0)
        result = evaluate_model(model, held_out, pairs, n_folds=min(10, len(pairs) // 2))
        metrics = {"num-examples": float(len(held_out)), "accuracy": result.verification.accuracy.mean}
    return Message(RecordDict({protocol.METRICS: MetricRecord(metrics)}), reply_to=msg)


def make_client_app(mods: Sequence[Mod] = ()) -> ClientApp:
    """The ClientApp with its three handlers, wrapped in ``mods`` (outermost first)."""
    client_app = ClientApp(mods=list(mods))
    client_app.query(protocol.ACTION_REGISTER)(register)
    client_app.train()(train)
    client_app.evaluate()(evaluate)
    return client_app


app = make_client_app()
