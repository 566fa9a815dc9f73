"""The federated server's round loop: a shared proxy bank, NPT fine-tuning on clients, robust rounds.

Written on ``grid.send_and_receive`` rather than as a FedAvg subclass because every client gets a
different message — its own bank rows and negatives chosen for it — and the reply is two
aggregations at once (the backbone; per-row, count-weighted means of the bank), followed by the
FedAwS-style spread-out of the bank. Flower's strategies send one ArrayRecord to all sampled
clients and aggregate one ArrayRecord back; bending them to per-client payloads would hide the
logic instead of expressing it.

A round wires the units of this package: register nodes not seen before
(:mod:`~nptface.server.federation.registration`), send each sampled client the backbone, its rows
(rows new to the bank are imprinted by the client) and its negatives
(:mod:`~nptface.server.federation.negatives`), collect replies until the round timeout, refuse
and screen broken updates with the node id in the log (:mod:`~nptface.server.federation.screening`),
combine what is left into a candidate backbone (:mod:`~nptface.server.federation.aggregation`),
evaluate it centrally (:mod:`~nptface.server.federation.evaluation`), and only if it is a usable
model (:mod:`~nptface.server.federation.validity`, finite embeddings) make it the global backbone
and take the replies' bank rows; otherwise the round is rolled back to the previous global model
and logged. Then the clients evaluate, observers see what the clients were sent
(:mod:`~nptface.server.federation.observer`) and the round is checkpointed atomically. Each phase
is reported as it starts and ends (:mod:`~nptface.server.federation.progress`). The round
goes on with the replies it has. The server never starts from, resumes or exports an unusable
backbone: that is a :class:`FederationError`. Clients are taken in partition order everywhere (never
by node id, which Flower draws at random, nor by arrival), so a seeded run is bit for bit the same
when rerun, as long as the same clients answer in time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from nptface.client import protocol
from nptface.core.checkpoint import MODEL_FILE, load_backbone, load_proxies
from nptface.core.metrics_json import null_non_finite
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.run_settings import settings_hash
from nptface.core.weight_mixing import interpolate_state
from nptface.server.federation import aggregation
from nptface.server.federation.config import FedConfig
from nptface.server.federation.evaluation import (
    central_eval_sets,
    evaluate_backbone,
    non_finite_sets,
    pool_client_accuracy,
    read_client_evaluation,
)
from nptface.server.federation.negatives import own_rows, select_negatives
from nptface.server.federation.observer import ClientView, RoundObserver, RoundView
from nptface.server.federation.privacy import calibrate, epsilon_after
from nptface.server.federation.progress import RoundProgress
from nptface.server.federation.proxy_bank import ProxyBank
from nptface.server.federation.registration import Registry, read_registration
from nptface.server.federation.screening import Reply, read_reply, screen
from nptface.server.federation.state import (
    FedState,
    export_run_directory,
    latest_state,
    save_state,
)
from nptface.server.federation.validity import backbone_problems, summarise

logger = logging.getLogger(__name__)


class FederationError(RuntimeError):
    """The federation cannot proceed (too few nodes, an incompatible checkpoint, an unusable global model)."""


def config_hash(config: FedConfig) -> str:
    """Settings that change what a round computes, and the starting checkpoint's content."""
    payload = {
        k: v for k, v in asdict(config).items() if k not in ("num_rounds", "out_dir", "round_timeout_s", "wait_nodes_s")
    }
    payload["server_checkpoint"] = hashlib.sha256((Path(config.server_run) / MODEL_FILE).read_bytes()).hexdigest()
    return settings_hash(payload)


class Federation:
    """Server-side state of one federated run; ``run(grid)`` drives the rounds."""

    def __init__(
        self, config: FedConfig, observers: Sequence[RoundObserver] = (), progress: RoundProgress | None = None
    ) -> None:
        self.config = config
        self.observers = list(observers)
        self.progress = progress or RoundProgress(config.num_rounds)
        self.out_dir = Path(config.out_dir)
        model, meta = load_backbone(config.server_run)
        self.model_config: MobileFaceNetConfig = model.config
        self.settings = protocol.ClientSettings(
            **{
                **asdict(config.client),
                "image_size": model.config.input_size,
                "model_json": json.dumps(model.config.to_dict()),
            }
        )
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
        problems = backbone_problems(self.state.backbone)
        if problems:
            source = f"{self.out_dir} (round {self.state.round})" if resumed else config.server_run
            raise FederationError(
                f"{source}: the global backbone is not a usable model ({summarise(problems)}); "
                "start from a usable server-run in a fresh out-dir"
            )
        self.registry = Registry(self.state.registry)
        self.eval_sets = central_eval_sets(config, model.config.input_size)
        self.row_privacy = (
            calibrate(config.dp_epsilon, config.dp_delta, config.num_rounds, config.dp_clip)
            if config.proxy_sharing == "dp"
            else None
        )

    def model(self, backbone: dict[str, torch.Tensor]) -> MobileFaceNet:
        model = MobileFaceNet(self.model_config)
        model.load_state_dict(backbone, strict=False)
        return model.eval()

    def evaluate(self, backbone: dict[str, torch.Tensor]) -> dict[str, float]:
        return evaluate_backbone(self.model(backbone), self.eval_sets)

    def judge(self, backbone: dict[str, torch.Tensor]) -> tuple[dict[str, float], list[str]]:
        """(central metrics, why ``backbone`` is unusable): its weights first, then its embeddings on central eval."""
        problems = backbone_problems(backbone)
        if problems:
            return {}, problems
        metrics = self.evaluate(backbone)
        return metrics, [f"non-finite embeddings on {name}" for name in non_finite_sets(metrics)]

    # ----------------------------------------------------------------- messaging
    def wait_for_nodes(self, grid: Any) -> list[int]:
        deadline = time.monotonic() + self.config.wait_nodes_s
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.config.min_nodes:
                return nodes
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} node(s) connected after {self.config.wait_nodes_s:.0f} s; "
                    f"min-nodes is {self.config.min_nodes} (start more SuperNodes or lower min-nodes)"
                )
            time.sleep(1.0)

    def _register(self, grid: Any, nodes: list[int], round_number: int) -> None:
        """Ask nodes we have not heard from which client they are and which identities they hold."""
        unknown = self.registry.unknown(nodes)
        if not unknown:
            return
        config = ConfigRecord(self.settings.to_record())
        messages = [
            Message(
                RecordDict({protocol.CONFIG: config}), dst_node_id=n, message_type=f"query.{protocol.ACTION_REGISTER}"
            )
            for n in unknown
        ]
        announced = []
        for reply in self._exchange(grid, messages, round_number, "register"):
            node = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("node %d: registration failed: %s", node, reply.error.reason)
                continue
            try:
                partition, ids = read_registration(reply.content)
            except (KeyError, TypeError, ValueError) as error:
                logger.warning("node %d: malformed registration (%s); ignored", node, error)
                continue
            announced.append((partition, node, ids))
        for partition, node, ids in sorted(announced, key=lambda a: a[:2]):  # arrival order must not matter
            problem = self.registry.admit(node, partition, ids, self.state.bank)
            if problem:
                logger.warning("node %d: registration refused: %s", node, problem)

    def by_partition(self, nodes: list[int]) -> list[int]:
        """Registered ``nodes`` in partition order.

        Flower draws node ids at random each run, so a seeded run orders by the partition a node
        serves: the sample, the order in which clients draw their random negatives from the round's
        generator, and every sum over clients are then the same in a rerun.
        """
        return sorted((n for n in nodes if n in self.registry.nodes), key=lambda n: self.registry.nodes[n].partition)

    def _sample(self, nodes: list[int], round_number: int) -> list[int]:
        eligible = self.by_partition(nodes)
        if len(eligible) < self.config.min_nodes:
            raise FederationError(
                f"round {round_number}: {len(eligible)} registered node(s), min-nodes is {self.config.min_nodes}"
            )
        n_sample = max(self.config.min_nodes, int(round(self.config.fraction_train * len(eligible))))
        picks = self.rng.choice(len(eligible), size=min(n_sample, len(eligible)), replace=False)
        return [eligible[int(i)] for i in sorted(picks)]  # node ids exceed int64: never via numpy

    def train_content(
        self, node: int, round_number: int, backbone: ArrayRecord, bank_ids: list[str], in_bank: set[str]
    ) -> tuple[RecordDict, ClientView]:
        """One client's train message — the backbone, its own rows, its negatives, the settings — and its view."""
        bank = self.state.bank
        client = self.registry.nodes[node]
        known, rows = own_rows(bank, self.registry.held_by(client), in_bank)
        negatives = select_negatives(
            bank,
            rows,
            known,
            self.config.proxy_sharing,
            self.config.negatives_nearest,
            self.config.negatives_random,
            self.rng,
        )
        negative_rows = bank.rows[negatives].astype(np.float32)
        privacy: dict[str, Any] = {}
        own_ids, own = known, rows
        if self.row_privacy is not None:
            # dp: the bank holds only noised copies of a client's rows; the client trains on the clean
            # rows it kept itself, so none are sent back to it.
            privacy = {
                protocol.KEEP_ROWS: True,
                protocol.DP_NOISE: self.row_privacy.noise_multiplier,
                protocol.DP_CLIP: self.config.dp_clip,
            }
            own_ids, own = [], np.zeros((0, bank.dim), np.float32)
        config = ConfigRecord(
            {
                **self.settings.to_record(),
                "round": round_number,
                "own_ids": own_ids,
                "seed": self.config.seed * 100_003 + round_number,
                **privacy,
            }
        )
        content = RecordDict(
            {
                protocol.BACKBONE: backbone,
                protocol.OWN_ROWS: protocol.numpy_record(rows=own.astype(np.float32)),
                protocol.NEGATIVES: protocol.numpy_record(rows=negative_rows),
                protocol.CONFIG: config,
            }
        )
        return content, ClientView(node, client.partition, [bank_ids[i] for i in negatives], negative_rows)

    def _train_messages(self, nodes: list[int], round_number: int) -> tuple[list[Message], RoundView]:
        backbone = ArrayRecord(self.state.backbone)
        bank_ids = self.state.bank.ids  # once per round: `ids` copies the list, banks reach 1e5+ rows
        in_bank = set(bank_ids)
        messages, views = [], []
        for node in nodes:
            content, view = self.train_content(node, round_number, backbone, bank_ids, in_bank)
            messages.append(Message(content, dst_node_id=node, message_type="train"))
            views.append(view)
        return messages, RoundView(round_number, self.settings, self.state.backbone, views)

    def _read(self, message: Message) -> Reply | str:
        """A train reply as a :class:`Reply`, or why it is refused."""
        if message.has_error():
            return f"client error: {message.error.reason}"
        node = message.metadata.src_node_id
        client = self.registry.nodes.get(node)
        held = self.registry.held_by(client) if client else []
        return read_reply(node, client, held, message.content, self.state.backbone)

    def _exchange(self, grid: Any, messages: list[Message], round_number: int, phase: str) -> list[Message]:
        """Send ``messages`` and collect the replies until the round timeout, reporting the phase before and after."""
        self.progress.phase(round_number, phase, 0, len(messages))
        replies = list(grid.send_and_receive(messages, timeout=self.config.round_timeout_s))
        self.progress.phase(round_number, phase, len(replies), len(messages))
        return replies

    def client_evaluate(self, grid: Any, nodes: list[int], round_number: int) -> dict[str, float]:
        """Clients verify their own held-out images with the global backbone (sample-weighted mean)."""
        content = RecordDict(
            {
                protocol.BACKBONE: ArrayRecord(self.state.backbone),
                protocol.CONFIG: ConfigRecord(self.settings.to_record()),
            }
        )
        messages = [Message(content, dst_node_id=n, message_type="evaluate") for n in nodes]
        reports = []
        replies = self._exchange(grid, messages, round_number, "client-evaluate")
        order = {node: rank for rank, node in enumerate(self.by_partition(nodes))}
        for reply in sorted(replies, key=lambda r: order.get(r.metadata.src_node_id, len(order))):
            if reply.has_error():
                logger.warning("node %d: local evaluation failed: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            try:
                reports.append(read_client_evaluation(reply.content))
            except (KeyError, TypeError, ValueError) as error:
                logger.warning("node %d: malformed evaluation reply (%s)", reply.metadata.src_node_id, error)
        return pool_client_accuracy(reports)

    # ----------------------------------------------------------------- aggregation
    def aggregate(self, replies: list[Reply], round_number: int) -> tuple[dict[str, Any], dict[str, float]]:
        """Screen, combine, judge, then commit or roll back; (round summary, central metrics of the global backbone).

        The order of arrival does not matter. An unusable candidate leaves the global backbone and the
        bank exactly as they were: the rows of that round's replies are not taken either.
        """
        started = time.perf_counter()
        kept, rejected = screen(
            replies,
            self.state.backbone,
            self.state.bank,
            self.config.norm_screen,
            self.config.row_norm_limit,
            self.config.update_norm_limit,
        )
        for node, reason in rejected:
            logger.warning("round update from node %d rejected: %s", node, reason)
        candidate = aggregation.combine(kept, self.state.backbone, self.config)
        evaluated = time.perf_counter()
        self.progress.phase(round_number, "evaluate")
        metrics, problems = self.judge(candidate)
        rolled_back = None
        if problems:
            rolled_back = summarise(problems)
            logger.error(
                "round %d: the aggregate of %d update(s) is not a usable model (%s); rolled back to the "
                "global model of round %d",
                round_number,
                len(kept),
                rolled_back,
                self.state.round,
            )
            kept, candidate = [], self.state.backbone
            metrics = self.evaluate(candidate)
        eval_seconds = time.perf_counter() - evaluated
        self.progress.phase(round_number, "spread")
        summary = aggregation.update_bank(kept, self.state.bank, self.config)
        self.state.backbone = candidate
        return {
            "accepted": len(kept),
            "rejected": len(rejected),
            "rejected_nodes": [n for n, _ in rejected],
            "rolled_back": rolled_back,
            **summary,
            "eval_seconds": eval_seconds,
            "aggregate_seconds": time.perf_counter() - started - eval_seconds,
        }, metrics

    def privacy_spent(self, round_number: int) -> dict[str, float]:
        """Epsilon of one identity's row after this round: at most one release per round (no sampling claimed)."""
        if self.row_privacy is None:
            return {}
        return {
            "dp/epsilon": epsilon_after(self.row_privacy.noise_multiplier, round_number, self.config.dp_delta),
            "dp/noise_multiplier": self.row_privacy.noise_multiplier,
        }

    # ----------------------------------------------------------------- the loop
    def run(self, grid: Any) -> FedState:
        if self.state.round == 0 and not self.state.history:
            self.progress.phase(0, "evaluate")
            metrics, problems = self.judge(self.state.backbone)
            if problems:
                raise FederationError(
                    f"{self.config.server_run}: the starting model is not usable ({summarise(problems)})"
                )
            self.state.history.append(
                null_non_finite(
                    {
                        "round": 0,
                        **metrics,
                        "min_sq_distance": self.state.bank.min_sq_distance(),
                        "bank_rows": len(self.state.bank),
                        "seconds": 0.0,
                    }
                )
            )
            save_state(self.out_dir, self.state)
        for round_number in range(self.state.round + 1, self.config.num_rounds + 1):
            record = self._round(grid, round_number)
            self.state.history.append(record)
            save_state(self.out_dir, self.state)
            self.progress.round_done(round_number, record)
            logger.info("round %d: %s", round_number, {k: v for k, v in record.items() if not isinstance(v, list)})
        self.progress.close()
        export_run_directory(
            self.out_dir,
            self.model(self._exported_backbone()),
            self.state.bank,
            {
                "federated_rounds": self.state.round,
                "proxy_sharing": self.config.proxy_sharing,
                "final_mix": self.config.final_mix,
            },
        )
        return self.state

    def _exported_backbone(self) -> dict[str, torch.Tensor]:
        """The federated backbone, mixed with the server's starting model at ``final-mix`` (WiSE-FT).

        The round state keeps the unmixed backbone, so a resumed or extended run goes on from it.
        """
        if self.config.final_mix == 1.0:
            return self.state.backbone
        start, _ = load_backbone(self.config.server_run)
        initial = start.state_dict()
        return interpolate_state(
            {k: initial[k] for k in self.state.backbone}, self.state.backbone, self.config.final_mix
        )

    def _round(self, grid: Any, round_number: int) -> dict[str, Any]:
        """One round, from waiting for nodes to its history record (the state is advanced, not saved)."""
        started = time.perf_counter()
        # Seeded per round, so a resumed run samples exactly as an uninterrupted one would.
        self.rng = np.random.default_rng([self.config.seed, round_number])
        nodes = self.wait_for_nodes(grid)
        self._register(grid, nodes, round_number)
        sampled = self._sample(nodes, round_number)
        sent = time.perf_counter()
        messages, view = self._train_messages(sampled, round_number)
        replies = self._exchange(grid, messages, round_number, "fit")
        received = time.perf_counter()
        parsed: list[Reply] = []
        for message in replies:
            result = self._read(message)
            if isinstance(result, str):
                logger.warning("round %d: node %d: %s", round_number, message.metadata.src_node_id, result)
            else:
                parsed.append(result)
        summary, metrics = self.aggregate(parsed, round_number)
        evaluated = time.perf_counter()
        every = self.config.client_eval_every
        if every and (round_number % every == 0 or round_number == self.config.num_rounds):
            metrics.update(self.client_evaluate(grid, sampled, round_number))
        summary["eval_seconds"] += time.perf_counter() - evaluated
        observed = {key: value for observer in self.observers for key, value in observer(view).items()}
        self.state.round = round_number
        record = {
            "round": round_number,
            "sampled": len(sampled),
            "replies": len(replies),
            "timed_out": len(sampled) - len(replies),
            "failed": len(replies) - len(parsed),
            **summary,
            "bank_rows": len(self.state.bank),
            **metrics,
            **observed,
            **self.privacy_spent(round_number),
            "train_seconds": received - sent,
            "client_seconds_max": max((r.metrics.get("seconds", 0.0) for r in parsed), default=0.0),
            "seconds": time.perf_counter() - started,
            "ended_unix": time.time(),
        }
        return null_non_finite(record)


def run_federation(
    grid: Any, config: FedConfig, observers: Sequence[RoundObserver] = (), progress: RoundProgress | None = None
) -> FedState:
    """Run (or resume) the federation on ``grid``; progress as plain lines on stdout unless ``progress`` says otherwise."""
    return Federation(config, observers, progress).run(grid)
