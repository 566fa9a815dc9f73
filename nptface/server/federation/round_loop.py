"""The federated server's round loop: a shared proxy bank, NPT fine-tuning on clients, robust rounds.

Written on ``grid.send_and_receive`` rather than as a FedAvg subclass because every client gets a
different message — its own bank rows and negatives chosen for it — and the reply is two
aggregations at once (sample-weighted FedAvg of the backbone; per-row, count-weighted means of
the bank), followed by the FedAwS-style spread-out of the bank. Flower's strategies send one
ArrayRecord to all sampled clients and aggregate one ArrayRecord back; bending them to per-client
payloads would hide the logic instead of expressing it.

A round: register clients not seen before (a query: which identities do you hold?), send each
sampled client the backbone, its rows (rows new to the bank are imprinted by the client) and
negatives (by default the server's own public identities nearest to the client's rows plus a
random sample), collect replies until the round timeout, reject broken updates (errors,
non-finite values, wrong shapes, rows the client does not own, backbone updates whose norm is far
above the round's median) with the node id in the log, aggregate what is left, spread the bank,
evaluate centrally on held-out identities of the client domain and the server domain, and
checkpoint atomically. The round goes on with the replies it has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord

from nptface.client import protocol
from nptface.core.checkpoint import MODEL_FILE, load_backbone, load_proxies
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.pairs import lfw_style_pairs
from nptface.server.federation.config import FedConfig
from nptface.server.federation.state import (
    FedState,
    export_run_directory,
    latest_state,
    save_state,
)
from nptface.server.federation.privacy import calibrate, epsilon_after
from nptface.server.federation.proxy_bank import ProxyBank, RowUpdate

logger = logging.getLogger(__name__)


class FederationError(RuntimeError):
    """The federation cannot proceed (too few nodes, an incompatible checkpoint)."""


@dataclass
class Reply:
    node_id: int
    client: str
    partition: int
    ids: list[str]
    rows: np.ndarray
    counts: np.ndarray
    weights: dict[str, torch.Tensor]
    samples: int
    metrics: dict[str, float]


def config_hash(config: FedConfig) -> str:
    """Settings that change what a round computes, and the starting checkpoint's content."""
    payload = {k: v for k, v in asdict(config).items() if k not in ("num_rounds", "out_dir", "round_timeout_s",
                                                                    "wait_nodes_s")}
    payload["server_checkpoint"] = hashlib.sha256((Path(config.server_run) / MODEL_FILE).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Federation:
    """Server-side state and logic; ``run(grid)`` drives the rounds."""

    def __init__(self, config: FedConfig) -> None:
        self.config = config
        self.out_dir = Path(config.out_dir)
        model, meta = load_backbone(config.server_run)
        self.model_config: MobileFaceNetConfig = model.config
        self.settings = protocol.ClientSettings(**{**asdict(config.client), "image_size": model.config.input_size,
                                                   "model_json": json.dumps(model.config.to_dict())})
        self.rng = np.random.default_rng(config.seed)
        resumed = latest_state(self.out_dir)
        if resumed is not None:
            if resumed.config_hash != config_hash(config):
                raise FederationError(f"{self.out_dir} holds a federated run with other settings; use another out-dir")
            self.state = resumed
            logger.info("resuming %s after round %d", self.out_dir, resumed.round)
        else:
            bank = ProxyBank.from_rows(meta.class_names, load_proxies(config.server_run).numpy(), public=True)
            weights = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
            self.state = FedState(0, weights, bank, {}, [], config_hash(config))
        self._eval_sets = central_eval_sets(config, model.config.input_size)
        self.node_clients: dict[int, tuple[str, int]] = {}
        self._sent_negatives: dict[int, np.ndarray] = {}
        self._gallery_data: list[Any] | None = None
        self.row_privacy = calibrate(config.dp_epsilon, config.dp_delta, config.num_rounds, config.dp_clip) \
            if config.proxy_sharing == "dp" else None

    # ----------------------------------------------------------------- model helpers
    def model(self) -> MobileFaceNet:
        model = MobileFaceNet(self.model_config)
        model.load_state_dict(self.state.backbone, strict=False)
        return model.eval()

    def evaluate(self) -> dict[str, float]:
        return evaluate_backbone(self.model(), self._eval_sets)

    def client_evaluate(self, grid: Any, nodes: list[int]) -> dict[str, float]:
        """Clients verify their own held-out images with the global backbone (sample-weighted mean)."""
        from flwr.app import ConfigRecord, Message, RecordDict

        content = RecordDict({protocol.BACKBONE: ArrayRecord(self.state.backbone),
                              protocol.CONFIG: ConfigRecord(self.settings.to_record())})
        messages = [Message(content, dst_node_id=n, message_type="evaluate") for n in nodes]
        weighted, examples, replies = 0.0, 0.0, 0
        for reply in grid.send_and_receive(messages, timeout=self.config.round_timeout_s):
            if reply.has_error():
                logger.warning("node %d: local evaluation failed: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            try:
                metrics = reply.content[protocol.METRICS]
                n, accuracy = float(metrics["num-examples"]), float(metrics.get("accuracy", float("nan")))
            except (KeyError, TypeError, ValueError) as error:
                logger.warning("node %d: malformed evaluation reply (%s)", reply.metadata.src_node_id, error)
                continue
            if n > 0 and np.isfinite(accuracy) and 0 <= accuracy <= 1:
                weighted += accuracy * n
                examples += n
                replies += 1
        return {"clients-local/accuracy": weighted / examples if examples else float("nan"),
                "clients-local/replies": float(replies)}

    # ----------------------------------------------------------------- messaging
    def _wait_for_nodes(self, grid: Any) -> list[int]:
        deadline = time.monotonic() + self.config.wait_nodes_s
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.config.min_nodes:
                return nodes
            if time.monotonic() > deadline:
                raise FederationError(f"only {len(nodes)} node(s) connected after {self.config.wait_nodes_s:.0f} s; "
                                      f"min-nodes is {self.config.min_nodes} (start more SuperNodes or lower min-nodes)")
            time.sleep(1.0)

    def _register(self, grid: Any, nodes: list[int]) -> None:
        """Ask nodes we have not heard from which client they are and which identities they hold."""
        from flwr.app import ConfigRecord, Message, RecordDict

        unknown = [n for n in nodes if n not in self.node_clients]
        if not unknown:
            return
        config = ConfigRecord(self.settings.to_record())
        messages = [Message(RecordDict({protocol.CONFIG: config}), dst_node_id=n,
                            message_type=f"query.{protocol.ACTION_REGISTER}") for n in unknown]
        for reply in grid.send_and_receive(messages, timeout=self.config.round_timeout_s):
            node = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("node %d: registration failed: %s", node, reply.error.reason)
                continue
            try:
                record = reply.content[protocol.CONFIG]
                partition, ids = int(record["partition"]), [str(i) for i in record["ids"]]
            except (KeyError, TypeError, ValueError) as error:
                logger.warning("node %d: malformed registration (%s); ignored", node, error)
                continue
            problem = self._registration_problem(partition, ids)
            if problem:
                logger.warning("node %d: registration refused: %s", node, problem)
                continue
            client = f"partition-{partition}"  # the server names clients; ownership follows the partition
            self.state.registry[client] = ids
            self.node_clients[node] = (client, partition)

    def _registration_problem(self, partition: int, ids: list[str]) -> str | None:
        client = f"partition-{partition}"
        if any(p == partition for _, p in self.node_clients.values()):
            return f"{client} is already served by another connected node"
        known = self.state.registry.get(client)
        if known is not None and known != ids:
            return f"{client} claims other identities than it registered before"
        if len(set(ids)) != len(ids):
            return "duplicate identity ids"
        held = {i for other, owned in self.state.registry.items() if other != client for i in owned}
        public = set(np.asarray(self.state.bank.ids)[self.state.bank.public_mask()].tolist())
        clash = sorted((held | public) & set(ids))
        if clash:
            return f"identities held by another client or the server: {clash[:3]}"
        return None

    def _negatives(self, own_rows: np.ndarray, own_ids: list[str]) -> np.ndarray:
        """Bank indices of one client's fixed negatives: nearest + random rows of the pool its mode allows.

        ``all``: every row but the client's own (other clients' identities too: the strongest signal,
        no privacy); ``dp``: the same pool, but the server only ever holds noised client rows;
        ``public``: only the server's own identities (no client's template reaches another client);
        ``none`` and ``local-heads``: nothing.
        """
        bank = self.state.bank
        if self.config.proxy_sharing in ("none", "local-heads"):
            return np.zeros(0, np.int64)
        pool_mask = bank.public_mask() if self.config.proxy_sharing == "public" else np.ones(len(bank), bool)
        if own_ids:
            pool_mask = pool_mask.copy()
            pool_mask[bank.index_of(own_ids)] = False
        if not pool_mask.any():
            return np.zeros(0, np.int64)
        chosen: set[int] = set()
        if len(own_rows) and self.config.negatives_nearest:
            chosen.update(bank.nearest(own_rows, self.config.negatives_nearest, candidates=pool_mask).ravel().tolist())
        pool = np.flatnonzero(pool_mask)
        chosen.update(self.rng.choice(pool, size=min(self.config.negatives_random, len(pool)), replace=False).tolist())
        return np.asarray(sorted(chosen), np.int64)

    def _train_messages(self, nodes: list[int], round_number: int) -> list[Any]:
        from flwr.app import Message

        self._sent_negatives = {}
        backbone = ArrayRecord(self.state.backbone)
        in_bank = set(self.state.bank.ids)  # once per round: `ids` copies the list, banks reach 1e5+ rows
        return [Message(self.train_content(node, round_number, backbone, in_bank), dst_node_id=node,
                        message_type="train") for node in nodes]

    def train_content(self, node: int, round_number: int, backbone: ArrayRecord, in_bank: set[str]) -> Any:
        """One client's train message: the backbone, its own rows, its negatives, and the settings."""
        from flwr.app import ConfigRecord, RecordDict

        bank = self.state.bank
        client, _ = self.node_clients[node]
        known = [i for i in self.state.registry[client] if i in in_bank]
        rows = bank.rows[bank.index_of(known)] if known else np.zeros((0, bank.dim), np.float32)
        negatives = self._negatives(rows, known)
        self._sent_negatives[node] = negatives
        privacy: dict[str, Any] = {}
        own_ids, own_rows = known, rows
        if self.row_privacy is not None:
            # dp: the bank holds only noised copies of a client's rows; the client trains on the clean
            # rows it kept itself, so none are sent back to it.
            privacy = {protocol.KEEP_ROWS: True, protocol.DP_NOISE: self.row_privacy.noise_multiplier,
                       protocol.DP_CLIP: self.config.dp_clip}
            own_ids, own_rows = [], np.zeros((0, bank.dim), np.float32)
        config = ConfigRecord({**self.settings.to_record(), "round": round_number, "own_ids": own_ids,
                               "seed": self.config.seed * 100_003 + round_number, **privacy})
        return RecordDict({
            protocol.BACKBONE: backbone,
            protocol.OWN_ROWS: protocol.numpy_record(rows=own_rows.astype(np.float32)),
            protocol.NEGATIVES: protocol.numpy_record(rows=bank.rows[negatives].astype(np.float32)),
            protocol.CONFIG: config,
        })

    def linkage(self, nodes: list[int]) -> dict[str, float]:
        """The proxy-linkage attack from the attacker partition's view of this round (if it was sampled)."""
        from nptface.simulation.attacks.linkage import build_gallery, linkage_attack

        attacker = next((n for n in nodes if self.node_clients[n][1] == self.config.attack_partition), None)
        if attacker is None:
            return {}
        indices = self._sent_negatives[attacker]
        gallery = build_gallery(self.model(), self._gallery_sets())
        bank_ids = self.state.bank.ids
        return linkage_attack(self.state.bank.rows[indices], [bank_ids[i] for i in indices], gallery).to_metrics()

    def _gallery_sets(self) -> list[Any]:
        if self._gallery_data is None:
            from nptface.client.client_app import plan_for
            from nptface.core.datasets import materialize
            from nptface.core.partitions import client_datasets

            plan = plan_for(self.settings)
            self._gallery_data = [
                materialize(held, progress=False) if held is not None else None
                for held in (client_datasets(plan, c.partition_id, self.settings.image_size,
                                             seed=self.settings.partition_seed)[1] for c in plan.clients)]
        return self._gallery_data

    def _parse(self, message: Any) -> Reply | str:
        if message.has_error():
            return f"client error: {message.error.reason}"
        return self.check_reply(message.metadata.src_node_id, message.content)

    def check_reply(self, node: int, content: Any) -> Reply | str:
        """A well-formed update from a registered node, or why it is refused."""
        if node not in self.node_clients:
            return "reply from an unregistered node"
        client, partition = self.node_clients[node]
        try:
            weights = content[protocol.BACKBONE].to_torch_state_dict()
            rows = content[protocol.ROWS_OUT]["rows"].numpy()
            counts = content[protocol.ROWS_OUT]["counts"].numpy()
            ids = list(content[protocol.CONFIG]["ids"])
            metrics = dict(content[protocol.METRICS])
        except (KeyError, TypeError, ValueError) as error:
            return f"malformed reply ({error})"
        expected = self.state.backbone
        if set(weights) != set(expected):
            return f"backbone keys differ from the global model's ({len(set(weights) ^ set(expected))} differ)"
        for name, tensor in weights.items():
            if tensor.shape != expected[name].shape:
                return f"backbone tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            if not torch.isfinite(tensor).all():
                return f"backbone tensor {name} has NaN/inf values"
        foreign = sorted(set(ids) - set(self.state.registry.get(client, [])))
        if foreign:
            return f"rows for identities the client does not hold: {foreign[:3]}"
        if rows.ndim != 2 or counts.shape != (rows.shape[0],) or len(ids) != rows.shape[0]:
            return f"rows {rows.shape}, counts {counts.shape} and {len(ids)} ids do not line up"
        if not np.issubdtype(counts.dtype, np.integer) or (counts < 1).any():
            return "per-row counts must be positive integers"
        # FedAvg weights come from the per-row image counts (validated), never from a free-form metric.
        return Reply(node, client, partition, ids, rows, counts, weights, int(counts.sum()), metrics)

    # ----------------------------------------------------------------- aggregation
    def aggregate(self, replies: list[Reply]) -> dict[str, Any]:
        """Screen, then FedAvg the backbone and average the bank rows; the order of arrival does not matter."""
        replies = sorted(replies, key=lambda r: r.partition)
        global_weights = self.state.backbone
        norms = [torch.sqrt(sum(((r.weights[k] - global_weights[k]) ** 2).sum() for k in global_weights)).item()
                 for r in replies]
        median = float(np.median(norms)) if norms else 0.0
        kept, rejected = [], []
        row_limit = self.config.row_norm_limit or None
        for reply, norm in zip(replies, norms, strict=True):
            if self.config.norm_screen and len(replies) >= 3 and median > 0 and norm > self.config.norm_screen * median:
                rejected.append((reply.node_id, f"update norm {norm:.3g} > {self.config.norm_screen} x median {median:.3g}"))
                continue
            update = RowUpdate(reply.partition, reply.ids, reply.rows, reply.counts)
            problems = self.state.bank.validate(update, norm_limit=row_limit)
            if problems:
                rejected.append((reply.node_id, "; ".join(problems)))
                continue
            kept.append(reply)
        for node, reason in rejected:
            logger.warning("round update from node %d rejected: %s", node, reason)
        new_backbone = global_weights
        if kept:
            new_backbone = combine_backbones([r.weights for r in kept], [r.samples for r in kept],
                                             self.config.backbone_aggregation, self.config.trim_fraction)
            # In local-heads mode the bank only stores each client's rows for it (one owner per row,
            # so the "mean" is the client's own row): no negatives are shared and nothing is spread.
            stats = self.state.bank.aggregate([RowUpdate(r.partition, r.ids, r.rows, r.counts) for r in kept])
        spread = None
        if kept and self.config.proxy_sharing != "local-heads" and self.config.spread_steps:
            frozen = self.state.bank.public_mask() if self.config.spread_freeze_public else None
            spread = self.state.bank.spread_out(min_sq_distance=self.config.client.delta, steps=self.config.spread_steps,
                                                frozen=frozen)
        self.state.backbone = new_backbone  # only once the bank steps have succeeded
        return {"accepted": len(kept), "rejected": len(rejected), "rejected_nodes": [n for n, _ in rejected],
                "rows_updated": stats.updated if kept else 0, "rows_registered": stats.registered if kept else 0,
                "spread_min_sq_before": spread.before_min_sq_distance if spread else None,
                "spread_violations_before": spread.violating_pairs_before if spread else None,
                "spread_violations_after": spread.violating_pairs_after if spread else None,
                "min_sq_distance": self.state.bank.min_sq_distance(),
                "local_loss_first": float(np.mean([r.metrics.get("loss_first", np.nan) for r in kept])) if kept else None,
                "local_loss_last": float(np.mean([r.metrics.get("loss_last", np.nan) for r in kept])) if kept else None,
                # rows the clients had to imprint afresh (new identities; in dp mode also lost client state)
                "rows_imprinted": int(sum(r.metrics.get("imprinted", 0.0) for r in kept))}

    def _privacy_spent(self, round_number: int) -> dict[str, float]:
        """Epsilon of one identity's row after this round: at most one release per round (no sampling claimed)."""
        if self.row_privacy is None:
            return {}
        return {"dp/epsilon": epsilon_after(self.row_privacy.noise_multiplier, round_number, self.config.dp_delta),
                "dp/noise_multiplier": self.row_privacy.noise_multiplier}

    def _aggregate_timed(self, parsed: list[Reply]) -> dict[str, Any]:
        started = time.perf_counter()
        summary = self.aggregate(parsed)
        return {**summary, "aggregate_seconds": time.perf_counter() - started}

    # ----------------------------------------------------------------- the loop
    def run(self, grid: Any) -> FedState:
        if self.state.round == 0 and not self.state.history:
            self.state.history.append({"round": 0, **self.evaluate(), "min_sq_distance": self.state.bank.min_sq_distance(),
                                       "bank_rows": len(self.state.bank), "seconds": 0.0})
            save_state(self.out_dir, self.state)
        for round_number in range(self.state.round + 1, self.config.num_rounds + 1):
            started = time.perf_counter()
            # Seeded per round, so a resumed run samples exactly as an uninterrupted one would.
            self.rng = np.random.default_rng([self.config.seed, round_number])
            nodes = self._wait_for_nodes(grid)
            self._register(grid, nodes)
            eligible = [n for n in nodes if n in self.node_clients]
            if len(eligible) < self.config.min_nodes:
                raise FederationError(f"round {round_number}: {len(eligible)} registered node(s), min-nodes is "
                                      f"{self.config.min_nodes}")
            n_sample = max(self.config.min_nodes, int(round(self.config.fraction_train * len(eligible))))
            picks = self.rng.choice(len(eligible), size=min(n_sample, len(eligible)), replace=False)
            sampled = sorted(eligible[int(i)] for i in picks)  # node ids exceed int64: never via numpy
            sent = time.perf_counter()
            messages = self._train_messages(sampled, round_number)
            attack = self.linkage(sampled) if self.config.attack_linkage else {}
            replies = list(grid.send_and_receive(messages, timeout=self.config.round_timeout_s))
            received = time.perf_counter()
            parsed: list[Reply] = []
            failures = 0
            for message in replies:
                result = self._parse(message)
                if isinstance(result, str):
                    failures += 1
                    logger.warning("round %d: node %d: %s", round_number, message.metadata.src_node_id, result)
                else:
                    parsed.append(result)
            summary = self._aggregate_timed(parsed)
            evaluated = time.perf_counter()
            metrics = self.evaluate()
            every = self.config.client_eval_every
            if every and (round_number % every == 0 or round_number == self.config.num_rounds):
                metrics.update(self.client_evaluate(grid, sampled))
            self.state.round = round_number
            record = {"round": round_number, "sampled": len(sampled), "replies": len(replies),
                      "timed_out": len(sampled) - len(replies), "failed": failures, **summary,
                      "bank_rows": len(self.state.bank), **metrics, **attack, **self._privacy_spent(round_number),
                      "train_seconds": received - sent, "client_seconds_max": max(
                          (r.metrics.get("seconds", 0.0) for r in parsed), default=0.0),
                      "eval_seconds": time.perf_counter() - evaluated, "seconds": time.perf_counter() - started,
                      "ended_unix": time.time()}
            # Strict JSON: a metric that could not be measured (no client answered, a NaN loss) is null.
            record = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()}
            self.state.history.append(record)
            save_state(self.out_dir, self.state)
            logger.info("round %d: %s", round_number, {k: v for k, v in record.items() if not isinstance(v, list)})
        export_run_directory(self.out_dir, self.model(), self.state.bank,
                             {"federated_rounds": self.state.round, "proxy_sharing": self.config.proxy_sharing})
        return self.state


def combine_backbones(updates: list[dict[str, torch.Tensor]], samples: list[int], method: str,
                      trim_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """One backbone from the clients' ones: sample-weighted FedAvg, or Flower's coordinate-wise median /
    trimmed mean (robust to a minority of poisoned updates; they ignore sample counts by design)."""
    names = list(updates[0])
    if method == "fedavg":
        total = sum(max(n, 1) for n in samples)
        return {k: sum(u[k] * (max(n, 1) / total) for u, n in zip(updates, samples, strict=True)) for k in names}
    from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

    arrays = [([u[k].numpy() for k in names], n) for u, n in zip(updates, samples, strict=True)]
    if method == "median":
        combined = aggregate_median(arrays)
    elif method == "trimmed-mean":
        combined = aggregate_trimmed_avg(arrays, trim_fraction)
    else:
        raise ValueError(f"backbone aggregation must be fedavg, median or trimmed-mean, got {method!r}")
    return {k: torch.as_tensor(np.asarray(a, dtype=np.float32)) for k, a in zip(names, combined, strict=True)}


def central_eval_sets(config: FedConfig, image_size: int) -> dict[str, tuple[Any, Any]]:
    """Held-out identities nobody trains on, in the clients' domain and in the server's (forgetting)."""
    from nptface.core.datasets import SyntheticFaceDataset, materialize
    from nptface.core.synthetic import HELDOUT_IDS

    ids = HELDOUT_IDS[200:200 + config.central_eval_identities]  # never a client's, never the export gate's
    domains = [("server-domain", config.central_eval_domain)]
    sets = {}
    if config.client.source == "synthetic":
        domains.insert(0, ("client-domain", config.client.domains.split(",")[0].strip()))
    else:  # the folder's identities that no client holds
        sets["client-domain"] = _with_pairs(_held_out_folder(config, image_size))
    for name, domain in domains:
        sets[name] = _with_pairs(materialize(SyntheticFaceDataset(ids, config.central_eval_images, domain, 4242,
                                                                  image_size), progress=False))
    return dict(sorted(sets.items()))


def _held_out_folder(config: FedConfig, image_size: int) -> Any:
    from nptface.client.client_app import plan_for
    from nptface.core.datasets import materialize
    from nptface.core.identities import ClassSubset
    from nptface.core.imagefolder import ImageFolderDataset

    plan = plan_for(replace(config.client, image_size=image_size))
    if len(plan.held_out) < 2:
        raise FederationError(f"{config.client.source}: central evaluation needs >= 2 held-out identities "
                              "(folder-held-out-identities)")
    folder = ImageFolderDataset(config.client.source, image_size=image_size)
    labels = [folder.class_names.index(name) for name in plan.held_out]
    return materialize(ClassSubset(folder, labels), progress=False)


def _with_pairs(data: Any) -> tuple[Any, Any]:
    _, counts = np.unique(data.labels, return_counts=True)
    genuine = int((counts * (counts - 1) // 2).sum())
    return data, lfw_style_pairs(data.labels, per_fold=min(300, genuine // 10), seed=0)


def evaluate_backbone(model: MobileFaceNet, sets: dict[str, tuple[Any, Any]]) -> dict[str, float]:
    """Held-out verification per set. A backbone that yields non-finite embeddings (a poisoned
    aggregate can) cannot verify anything: it scores chance accuracy, TAR 0, and is flagged."""
    from nptface.core.embedding import embed_dataset
    from nptface.core.evaluation import evaluate_embeddings

    out = {}
    for name, (data, pairs) in sets.items():
        embeddings = embed_dataset(model.eval(), data)
        if not np.isfinite(embeddings).all():
            logger.warning("%s: the global backbone gives non-finite embeddings; scored as chance", name)
            out.update({f"{name}/accuracy": 0.5, f"{name}/tar@far=1e-2": 0.0, f"{name}/non-finite": 1.0})
            continue
        result = evaluate_embeddings(embeddings, np.asarray(data.labels), pairs)
        out[f"{name}/accuracy"] = result.verification.accuracy.mean
        tar = result.verification.tar_at_far.get(1e-2)
        out[f"{name}/tar@far=1e-2"] = float("nan") if tar is None or tar.tar is None else tar.tar
    return out


def run_federation(grid: Any, config: FedConfig) -> FedState:
    return Federation(config).run(grid)
