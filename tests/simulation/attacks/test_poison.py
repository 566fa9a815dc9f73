"""The injected attackers used by the robustness table behave as documented, as a mod around any ClientApp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from nptface.client import protocol
from nptface.simulation.attacks.poison import SCALE, Poisoners, derangement, parse_poison, poison_update

SETTINGS = protocol.ClientSettings(num_clients=3, client_identities=9, images_per_identity=4, few_shot_share=0.0)
GLOBAL = {"w": torch.linspace(-1, 1, 6)}


def test_poison_spec_is_parsed_and_bad_specs_name_the_item():
    assert parse_poison("scale:0, noise:1,flip:2") == {0: "scale", 1: "noise", 2: "flip"}
    assert parse_poison("") == {}
    with pytest.raises(ValueError, match="'boost:1'"):
        parse_poison("boost:1")
    with pytest.raises(ValueError, match="twice"):
        parse_poison("scale:1,flip:1")


def test_a_derangement_moves_every_identity():
    mapping = derangement(7, seed=3)
    assert sorted(mapping.tolist()) == list(range(7)), "a permutation of the identities"
    assert (mapping != np.arange(7)).all(), "a derangement: nobody keeps their label"
    assert not np.array_equal(mapping, derangement(7, seed=4)), "redrawn with the seed"


def test_scaled_update_is_100x_the_honest_one():
    base = {"w": torch.ones(3)}
    honest = {"w": torch.tensor([1.1, 1.0, 0.9])}
    weights, rows = poison_update("scale", honest, base, np.eye(2, 4, dtype=np.float32), seed=0)
    torch.testing.assert_close(weights["w"] - base["w"], SCALE * (honest["w"] - base["w"]))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), SCALE)


def test_noise_update_is_unrelated_to_the_honest_one():
    base = {"w": torch.linspace(-1, 1, 1000)}
    weights, rows = poison_update("noise", {"w": base["w"].clone()}, base, np.eye(2, 8, dtype=np.float32), seed=0)
    assert abs(torch.corrcoef(torch.stack([weights["w"], base["w"]]))[0, 1]) < 0.1
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)


def _request(own_ids: list[str], own_rows: np.ndarray) -> RecordDict:
    config = {**SETTINGS.to_record(), "round": 2, "seed": 200_006, "own_ids": own_ids}
    return RecordDict(
        {
            protocol.BACKBONE: ArrayRecord(GLOBAL),
            protocol.CONFIG: ConfigRecord(config),
            protocol.OWN_ROWS: protocol.numpy_record(rows=own_rows.astype(np.float32)),
        }
    )


class HonestClient:
    """Stands in for the train handler: row ``i`` is 'trained on photos of identity i' (one-hot), count ``i + 1``."""

    def __init__(self, partition: int) -> None:
        self.names = list(SETTINGS.plan().clients[partition].identities)
        self.given: dict[str, np.ndarray] = {}

    def __call__(self, msg: Message, context) -> Message:
        config = msg.content[protocol.CONFIG]
        self.given = dict(zip(config["own_ids"], msg.content[protocol.OWN_ROWS]["rows"].numpy(), strict=True))
        n = len(self.names)
        return Message(
            RecordDict(
                {
                    protocol.BACKBONE: ArrayRecord({"w": GLOBAL["w"] + 0.01}),
                    protocol.ROWS_OUT: protocol.numpy_record(
                        rows=np.eye(n, 8, dtype=np.float32), counts=np.arange(1, n + 1)
                    ),
                    protocol.CONFIG: ConfigRecord({"ids": self.names, "imprinted": 0}),
                    protocol.METRICS: MetricRecord({"loss_last": 1.0}),
                }
            ),
            reply_to=msg,
        )


def test_honest_partitions_and_other_messages_pass_through_untouched(incoming, node):
    mod, client = Poisoners({0: "scale"}), HonestClient(1)
    message = incoming(_request([], np.zeros((0, 8))))
    reply = client(message, node(1))
    assert mod(message, node(1), lambda m, c: reply) is reply
    query = incoming(_request([], np.zeros((0, 8))), message_type="query.register")
    assert mod(query, node(0), lambda m, c: reply) is reply


def test_a_scale_attacker_sends_100x_its_update_relative_to_the_weights_it_was_sent(incoming, node):
    message = incoming(_request([], np.zeros((0, 8))))
    reply = Poisoners({0: "scale"})(message, node(0), HonestClient(0))
    torch.testing.assert_close(
        reply.content[protocol.BACKBONE].to_torch_state_dict()["w"] - GLOBAL["w"], torch.full((6,), SCALE * 0.01)
    )
    np.testing.assert_allclose(np.linalg.norm(reply.content[protocol.ROWS_OUT]["rows"].numpy(), axis=1), SCALE)
    assert reply.metadata.reply_to_message_id == "m-1"


def test_a_flip_attacker_trains_each_row_it_was_sent_on_another_identitys_photos(incoming, node):
    client = HonestClient(2)
    names = client.names
    bank_rows = np.random.default_rng(0).normal(size=(len(names), 8)).astype(np.float32)
    message = incoming(_request(names, bank_rows))
    reply = Poisoners({2: "flip"})(message, node(2), client)
    mapping = derangement(len(names), 200_006 + 2)
    for i, name in enumerate(names):  # the photos of `name` train the bank row of names[mapping[i]]
        np.testing.assert_array_equal(client.given[name], bank_rows[mapping[i]])
    rows = reply.content[protocol.ROWS_OUT]["rows"].numpy()
    counts = reply.content[protocol.ROWS_OUT]["counts"].numpy()
    assert list(reply.content[protocol.CONFIG]["ids"]) == names
    for i in range(len(names)):  # ... and come back under that identity's name, with the images behind them
        np.testing.assert_array_equal(rows[mapping[i]], np.eye(len(names), 8)[i])
        assert counts[mapping[i]] == i + 1
