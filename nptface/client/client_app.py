"""The Flower ClientApp: register, fine-tune locally with NPT, evaluate on local held-out images.

Images never leave the client: it sends back backbone weights, the rows of the bank for its own
identities (with the number of images behind each) and metrics. Its data is its partition of
the plan described by the settings in the message (``partition-id`` from the node config picks
which), so the same ClientApp serves simulation and real SuperNodes.
"""

from __future__ import annotations

import json
import random
import time

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

from nptface.client import protocol
from nptface.client.local_training import LocalConfig, fine_tune, imprint
from nptface.simulation.attacks.poison import FlippedLabels, parse_poison, poison_update
from nptface.client.row_privacy import noised_rows
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig

app = ClientApp()

STATE_ROWS = "nptface-own-rows"  # context.state: the clean rows a dp-mode client keeps to itself


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("node config has no 'partition-id'; start the SuperNode with "
                         "--node-config \"partition-id=N num-partitions=M\"")
    return int(context.node_config["partition-id"])


def _datasets(settings: protocol.ClientSettings, partition: int):  # type: ignore[no-untyped-def]
    from nptface.core.partitions import client_datasets

    return client_datasets(plan_for(settings), partition, settings.image_size, seed=settings.partition_seed)


def plan_for(settings: protocol.ClientSettings):  # type: ignore[no-untyped-def]
    from nptface.core.partitions import image_folder_plan, synthetic_plan

    if settings.source == "synthetic":
        return synthetic_plan(settings.num_clients, settings.client_identities, seed=settings.partition_seed,
                              sizes=settings.sizes, images_per_identity=settings.images_per_identity,
                              few_shot_share=settings.few_shot_share, eval_images=settings.eval_images,
                              domains=tuple(d.strip() for d in settings.domains.split(",") if d.strip()))
    return image_folder_plan(settings.source, settings.num_clients, seed=settings.partition_seed, sizes=settings.sizes,
                             eval_images=settings.eval_images,
                             held_out_identities=settings.folder_held_out_identities)


@app.query(protocol.ACTION_REGISTER)
def register(msg: Message, context: Context) -> Message:
    settings = protocol.ClientSettings.from_record(msg.content[protocol.CONFIG])
    partition = _partition(context)
    train, _ = _datasets(settings, partition)
    record = ConfigRecord({"partition": partition, "ids": list(train.class_names)})
    return Message(RecordDict({protocol.CONFIG: record}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content[protocol.CONFIG]
    settings = protocol.ClientSettings.from_record(config)
    partition = _partition(context)
    if settings.failure_rate and random.Random(f"{config['seed']}-{partition}").random() < settings.failure_rate:
        raise RuntimeError(f"injected failure (failure-rate={settings.failure_rate}) on partition {partition}")
    if partition == settings.slow_partition:
        time.sleep(settings.slow_seconds)  # injected straggler
    model = MobileFaceNet(MobileFaceNetConfig(**json.loads(settings.model_json)))
    model.load_state_dict(msg.content[protocol.BACKBONE].to_torch_state_dict(), strict=False)
    model.eval()
    train_set, _ = _datasets(settings, partition)
    ids = list(train_set.class_names)
    keep_rows = bool(config.get(protocol.KEEP_ROWS, False))
    given = _kept_rows(context) if keep_rows else dict(
        zip(list(config["own_ids"]), msg.content[protocol.OWN_ROWS]["rows"].numpy(), strict=True))
    rows = imprint(model, train_set)  # new identities start as their mean embedding
    for index, identity in enumerate(ids):
        if identity in given:
            rows[index] = given[identity]
    seed = int(config["seed"]) + partition
    attack = parse_poison(settings.poison).get(partition)
    local = LocalConfig(epochs=settings.local_epochs, lr=settings.lr, batch_size=settings.batch_size, k=settings.k,
                        delta=settings.delta, fedprox_mu=settings.fedprox_mu, seed=seed)
    # Only the scale/noise attackers need the weights they were sent; honest rounds skip the copy.
    global_weights = {k: v.detach().clone() for k, v in model.state_dict().items()
                      if v.is_floating_point()} if attack in ("scale", "noise") else {}
    data = FlippedLabels(train_set, seed) if attack == "flip" else train_set
    result = fine_tune(model, rows, msg.content[protocol.NEGATIVES]["rows"].numpy(), data, local)
    weights, sent_rows = result.weights, result.rows
    if keep_rows:
        context.state[STATE_ROWS] = ArrayRecord({"rows": Array(np.ascontiguousarray(sent_rows, np.float32))})
        context.state[STATE_ROWS + "-ids"] = ConfigRecord({"ids": ids})
    noise = float(config.get(protocol.DP_NOISE, 0.0))
    if noise > 0:  # only the noised copy leaves the client
        sent_rows = noised_rows(sent_rows, float(config[protocol.DP_CLIP]), noise, np.random.default_rng([seed, 7]))
    if attack in ("scale", "noise"):
        weights, sent_rows = poison_update(attack, weights, global_weights, sent_rows, seed)
    content = RecordDict({
        protocol.BACKBONE: ArrayRecord(weights),
        protocol.ROWS_OUT: protocol.numpy_record(rows=np.asarray(sent_rows, np.float32), counts=result.counts),
        protocol.CONFIG: ConfigRecord({"ids": ids, "imprinted": len(ids) - len(given)}),
        protocol.METRICS: MetricRecord({**{k: float(v) for k, v in result.metrics.items()},
                                        "imprinted": float(len(ids) - len(given))}),
    })
    return Message(content, reply_to=msg)


def _kept_rows(context: Context) -> dict[str, np.ndarray]:
    """The clean rows this node kept from its last round (empty on its first round or after a restart)."""
    if STATE_ROWS not in context.state:
        return {}
    rows = context.state[STATE_ROWS]["rows"].numpy()
    ids = list(context.state[STATE_ROWS + "-ids"]["ids"])
    return dict(zip(ids, rows, strict=True))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local verification on this client's held-out images (never used for training)."""
    from nptface.core.evaluation import evaluate_model
    from nptface.core.pairs import all_genuine_pairs

    settings = protocol.ClientSettings.from_record(msg.content[protocol.CONFIG])
    model = MobileFaceNet(MobileFaceNetConfig(**json.loads(settings.model_json)))
    model.load_state_dict(msg.content[protocol.BACKBONE].to_torch_state_dict(), strict=False)
    _, held_out = _datasets(settings, _partition(context))
    metrics = {"num-examples": 0.0}
    if held_out is not None and len(held_out) >= 4:
        pairs = all_genuine_pairs(held_out.labels, seed=0)
        result = evaluate_model(model.eval(), held_out, pairs, n_folds=min(10, len(pairs) // 2))
        metrics = {"num-examples": float(len(held_out)), "accuracy": result.verification.accuracy.mean}
    return Message(RecordDict({protocol.METRICS: MetricRecord(metrics)}), reply_to=msg)
