"""The round loop wired end to end in this process: Flower's Grid contract served by the production ClientApp.

No Ray and no SuperLink: :class:`InProcessGrid` hands each message to the ClientApp of the node it
is addressed to, so two whole rounds run in seconds.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from safetensors.torch import load_file, save_file

from nptface.client import protocol
from nptface.client.client_app import make_client_app
from nptface.core.checkpoint import load_backbone, load_meta
from nptface.server.federation.config import FedConfig
from nptface.server.federation.observer import RoundView
from nptface.server.federation.progress import RoundProgress
from nptface.server.federation.round_loop import Federation, FederationError
from nptface.server.federation.screening import Reply
from nptface.server.federation.state import BACKBONE_FILE
from nptface.simulation.attacks.faults import FailingClients
from nptface.simulation.attacks.poison import Poisoners

SMALL = {
    "central-eval-identities": 20,
    "central-eval-images": 4,
    "num-clients": 3,
    "client-identities": 9,
    "images-per-identity": 4,
    "few-shot-share": 0.0,
    "batch-size": 8,
    "k": 3,
    "eval-images": 2,
}


class InProcessGrid:
    """Flower's Grid contract served in this process: node ``nodes[p]`` (default ``100 + p``) runs partition ``p``.

    ``reverse_replies`` hands the replies back last first, as a round whose clients finish in another order.
    """

    def __init__(self, partitions: int, nodes: list[int] | None = None, reverse_replies: bool = False) -> None:
        self.app = make_client_app()
        nodes = nodes or [100 + p for p in range(partitions)]
        self.contexts = {
            nodes[p]: Context(
                run_id=1,
                node_id=nodes[p],
                state=RecordDict(),
                run_config={},
                node_config={"partition-id": p, "num-partitions": partitions},
            )
            for p in range(partitions)
        }
        self.reverse_replies = reverse_replies
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            try:
                replies.append(self.app(message, self.contexts[message.metadata.dst_node_id]))
            except Exception as error:  # what Flower turns a crashed ClientApp into
                replies.append(Message(Error(code=0, reason=str(error)), reply_to=message))
        return replies[::-1] if self.reverse_replies else replies


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """The round loop builds Messages, which Flower stamps with the running ServerApp's identity."""
    for name, value in (("_run_id", 1), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _config(tiny_run, out, **extra) -> FedConfig:
    return FedConfig.from_run_config({"server-run": str(tiny_run), "out-dir": str(out), **SMALL, **extra})


def test_two_rounds_register_train_aggregate_evaluate_and_show_observers_what_was_sent(tiny_run, tmp_path):
    views: list[RoundView] = []

    def observer(view: RoundView) -> dict[str, float]:
        views.append(view)
        return {"observed/clients": float(len(view.clients))}

    grid = InProcessGrid(3)
    state = Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 2}), [observer]).run(grid)
    assert [h["round"] for h in state.history] == [0, 1, 2]
    server_ids = load_meta(tiny_run).class_names
    assert len(state.bank) == len(server_ids) + 9 and sorted(state.registry) == [f"partition-{p}" for p in range(3)]
    for record in state.history[1:]:
        assert (record["sampled"], record["accepted"], record["failed"], record["timed_out"]) == (3, 3, 0, 0)
        assert record["clients-local/replies"] == 3 and record["observed/clients"] == 3.0
        assert record["min_sq_distance"] >= 1.0 - 1e-3
    assert state.history[1]["rows_imprinted"] == 9 and state.history[2]["rows_imprinted"] == 0
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert [v.round for v in views] == [1, 2] and len(trains) == 6
    for message, client in zip(trains, [c for v in views for c in v.clients], strict=True):
        assert client.node == message.metadata.dst_node_id and client.partition == client.node - 100
        np.testing.assert_array_equal(client.negative_rows, message.content[protocol.NEGATIVES]["rows"].numpy())
        assert set(client.negative_ids) <= set(server_ids), "public sharing: only the server's identities"
    assert views[0].settings.image_size == 32


def test_a_seeded_run_is_bit_identical_whatever_the_node_ids_and_the_order_replies_arrive_in(tiny_run, tmp_path):
    # Flower draws node ids at random each run; the server must key everything on the partition.
    runs = []
    for name, grid in (
        ("a", InProcessGrid(3, nodes=[101, 102, 103])),
        ("b", InProcessGrid(3, nodes=[903, 502, 7], reverse_replies=True)),
    ):
        config = _config(tiny_run, tmp_path / name, **{"num-rounds": 2, "negatives-random": 4})
        runs.append(Federation(config).run(grid))
    first, second = runs
    assert first.backbone.keys() == second.backbone.keys()
    for key in first.backbone:
        assert torch.equal(first.backbone[key], second.backbone[key]), key
    assert first.bank.ids == second.bank.ids
    np.testing.assert_array_equal(first.bank.rows, second.bank.rows)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_final_mix_exports_the_line_between_server_and_federated_model_and_keeps_the_state_unmixed(tiny_run, tmp_path):
    state = Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 1, "final-mix": 0.25})).run(
        InProcessGrid(3)
    )
    server, _ = load_backbone(tiny_run)
    exported, meta = load_backbone(tmp_path / "fed")
    start, mixed = server.state_dict(), exported.state_dict()
    moved = [k for k in state.backbone if not torch.equal(state.backbone[k], start[k])]
    assert moved, "one round of training moves the backbone"
    for key in moved:
        expected = start[key] + 0.25 * (state.backbone[key] - start[key])
        torch.testing.assert_close(mixed[key], expected, rtol=0, atol=1e-6)
    assert meta.extra["final_mix"] == 0.25
    assert not torch.equal(state.backbone[moved[0]], mixed[moved[0]]), "the round state is the unmixed model"


def test_a_failing_client_is_counted_and_the_round_goes_on(tiny_run, tmp_path):
    grid = InProcessGrid(3)

    def fail_partition_1(msg, context, call_next):
        if msg.metadata.message_type == "train" and context.node_config["partition-id"] == 1:
            raise RuntimeError("injected")
        return call_next(msg, context)

    grid.app = make_client_app([fail_partition_1])
    state = Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 1})).run(grid)
    record = state.history[1]
    assert (record["failed"], record["accepted"]) == (1, 2)
    assert not set(state.registry["partition-1"]) & set(state.bank.ids), "no row of the failed client was taken"


def test_each_round_reports_its_phases_with_clients_replied_over_expected(tiny_run, tmp_path):
    lines: list[str] = []
    progress = RoundProgress(1, "fed", write=lines.append)
    Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 1}), progress=progress).run(InProcessGrid(3))
    phases = [re.sub(r", \d+\.\d s$", "", line) for line in lines[:-1]]
    assert phases == [
        "[fed] round 0/1 evaluate",
        "[fed] round 1/1 register: 0/3 clients replied",
        "[fed] round 1/1 register: 3/3 clients replied",
        "[fed] round 1/1 fit: 0/3 clients replied",
        "[fed] round 1/1 fit: 3/3 clients replied",
        "[fed] round 1/1 evaluate",
        "[fed] round 1/1 spread",
        "[fed] round 1/1 client-evaluate: 0/3 clients replied",
        "[fed] round 1/1 client-evaluate: 3/3 clients replied",
    ]
    assert re.match(r"\[fed\] round 1/1 done in \d+\.\d s: 3/3 updates accepted", lines[-1])


def test_a_run_with_other_settings_in_the_same_out_dir_is_refused(tiny_run, tmp_path):
    Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 1})).run(InProcessGrid(3))
    with pytest.raises(FederationError, match="other settings"):
        Federation(_config(tiny_run, tmp_path / "fed", **{"num-rounds": 1, "lr": 0.5}))


@pytest.fixture()
def federation(tiny_run, tmp_path) -> Federation:
    fed = Federation(_config(tiny_run, tmp_path / "fed"))
    for node, partition in ((11, 0), (12, 1), (13, 2)):
        fed.registry.admit(node, partition, [f"c{partition}-a", f"c{partition}-b"], fed.state.bank)
    return fed


def _reply(fed: Federation, node: int, scale: float, weights: dict | None = None) -> Reply:
    client = fed.registry.nodes[node]
    rows = np.roll(np.eye(2, fed.state.bank.dim, dtype=np.float32), 2 * client.partition, axis=1)
    return Reply(
        node,
        client.name,
        client.partition,
        fed.registry.held_by(client),
        rows,
        np.array([4, 6]),
        weights or {k: v * scale for k, v in fed.state.backbone.items()},
        10,
        {},
    )


def test_an_update_scaled_100x_is_screened_out_and_the_rest_aggregated(federation):
    base = {k: v.clone() for k, v in federation.state.backbone.items()}
    summary, _ = federation.aggregate(
        [_reply(federation, 11, 1.01), _reply(federation, 12, 1.02), _reply(federation, 13, 100.0)], 1
    )
    assert summary["accepted"] == 2 and summary["rejected_nodes"] == [13]
    key = next(k for k in base if base[k].abs().sum() > 0)
    np.testing.assert_allclose(federation.state.backbone[key].numpy(), base[key].numpy() * 1.015, rtol=1e-5)
    assert {"c0-a", "c1-b"} <= set(federation.state.bank.ids) and "c2-a" not in federation.state.bank.ids


def test_an_aggregate_with_non_finite_embeddings_is_rolled_back_with_its_rows(federation):
    federation.config = FedConfig.from_run_config(
        {"server-run": federation.config.server_run, **SMALL, "norm-screen": 0.0, "update-norm-limit": 0.0}
    )
    before = {k: v.clone() for k, v in federation.state.backbone.items()}
    rows_before = federation.state.bank.rows.copy()
    huge = {k: v * 1e20 if k.endswith("weight") else v for k, v in before.items()}  # finite weights, overflowing
    summary, metrics = federation.aggregate([_reply(federation, 11, 1.0), _reply(federation, 12, 1.0, huge)], 3)
    assert summary["accepted"] == 0 and summary["rejected"] == 0 and "non-finite embeddings" in summary["rolled_back"]
    for key, tensor in before.items():
        torch.testing.assert_close(federation.state.backbone[key], tensor, rtol=0, atol=0)
    assert np.array_equal(federation.state.bank.rows, rows_before) and "c0-a" not in federation.state.bank.ids
    assert "client-domain/non-finite" not in metrics and metrics["client-domain/accuracy"] > 0.5, (
        "the round records the global model it kept"
    )


def test_a_candidate_with_negative_batchnorm_variances_is_judged_unusable_before_any_evaluation(federation):
    broken = {k: -v if k.endswith("running_var") else v for k, v in federation.state.backbone.items()}
    metrics, problems = federation.judge(broken)
    assert metrics == {} and problems and all("negative variances" in p for p in problems)


def test_noise_and_scale_attackers_with_failing_clients_never_reach_the_global_model(tiny_run, tmp_path):
    # The reported case: 4 clients, 30 % failures, a x100 and a noise attacker, FedAvg behind the screens.
    grid = InProcessGrid(4)
    grid.app = make_client_app([FailingClients(0.3), Poisoners({0: "scale", 1: "noise"})])
    config = _config(
        tiny_run,
        tmp_path / "fed",
        **{
            "num-clients": 4,
            "num-rounds": 2,
            "client-identities": 20,
            "few-shot-share": 0.25,
            "k": 2,
            "negatives-random": 4,
            "spread-steps": 5,
        },
    )
    state = Federation(config).run(grid)
    for record in state.history[1:]:
        assert record["rolled_back"] is None and record["accepted"] >= 1
        assert set(record["rejected_nodes"]) <= {100, 101}, "only the attackers (partitions 0 and 1) are rejected"
        assert record["accepted"] + record["rejected"] + record["failed"] == record["replies"]
        assert not any(key.endswith("non-finite") for key in record), "every round's global model embeds finitely"
    model, _ = load_backbone(tmp_path / "fed")
    assert all(
        torch.isfinite(v).all() and (v >= 0).all() for k, v in model.state_dict().items() if k.endswith("running_var")
    )


def test_a_run_holding_an_unusable_global_model_is_refused_not_resumed(tiny_run, tmp_path):
    config = _config(tiny_run, tmp_path / "fed", **{"num-rounds": 2})
    Federation(replace(config, num_rounds=1)).run(InProcessGrid(3))
    saved = tmp_path / "fed" / "rounds" / "round-0001" / BACKBONE_FILE
    weights = load_file(saved)
    name = next(k for k in weights if k.endswith("running_var"))
    weights[name] = -weights[name]
    save_file(weights, saved)
    with pytest.raises(FederationError, match=f"round 1\\): the global backbone is not a usable model \\({name}"):
        Federation(config)


def test_too_few_nodes_is_a_clear_error_not_a_silent_wait(federation):
    class OneNode:
        def get_node_ids(self):
            return [11]

    federation.config = FedConfig.from_run_config(
        {"server-run": federation.config.server_run, "min-nodes": 3, "wait-nodes-s": 0.5}
    )
    with pytest.raises(FederationError, match="only 1 node\\(s\\) connected after 0 s; min-nodes is 3"):
        federation.wait_for_nodes(OneNode())


def test_dp_clients_get_no_clean_rows_back_and_are_told_the_noise(tiny_run, tmp_path):
    dp = Federation(_config(tiny_run, tmp_path / "dp", **{"proxy-sharing": "dp", "dp-epsilon": 4.0, "num-rounds": 3}))
    for node, partition in ((11, 0), (12, 1)):
        dp.registry.admit(node, partition, [f"c{partition}-a", f"c{partition}-b"], dp.state.bank)
    dp.aggregate([_reply(dp, 11, 1.0), _reply(dp, 12, 1.0)], 1)
    ids = dp.state.bank.ids
    content, view = dp.train_content(11, 2, ArrayRecord(dp.state.backbone), ids, set(ids))
    record = content[protocol.CONFIG]
    assert list(record["own_ids"]) == [] and content[protocol.OWN_ROWS]["rows"].numpy().shape[0] == 0
    assert {"c1-a", "c1-b"} <= set(view.negative_ids) and not {"c0-a", "c0-b"} & set(view.negative_ids)
    assert record[protocol.KEEP_ROWS] is True and record[protocol.DP_CLIP] == 1.0
    assert record[protocol.DP_NOISE] == dp.row_privacy.noise_multiplier > 1.0
    assert dp.row_privacy.epsilon <= 4.0
    spent = [dp.privacy_spent(r)["dp/epsilon"] for r in (1, 2, 3)]
    assert spent == sorted(spent) and spent[-1] == dp.row_privacy.epsilon
