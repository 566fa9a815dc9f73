"""The ClientApp's handlers, called as a SuperNode calls them (no Flower runtime), with and without mods."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from nptface.client import protocol
from nptface.client.client_app import app, make_client_app

SETTINGS = protocol.ClientSettings(
    num_clients=3, client_identities=9, images_per_identity=4, few_shot_share=0.0, image_size=32
)


def _register_query() -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="q-1",
        src_node_id=1,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=f"query.{protocol.ACTION_REGISTER}",
    )
    return Message(RecordDict({protocol.CONFIG: ConfigRecord(SETTINGS.to_record())}), metadata=metadata)


def _node(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_a_node_registers_as_its_partition_with_the_plans_identities():
    reply = app(_register_query(), _node({"partition-id": 2, "num-partitions": 3}))
    record = reply.content[protocol.CONFIG]
    assert record["partition"] == 2 and list(record["ids"]) == list(SETTINGS.plan().clients[2].identities)


def test_mods_wrap_every_handler_outermost_first():
    seen: list[str] = []

    def recorder(name: str):
        def mod(msg, context, call_next):
            seen.append(f"{name}:{msg.metadata.message_type}")
            return call_next(msg, context)

        return mod

    make_client_app([recorder("outer"), recorder("inner")])(_register_query(), _node({"partition-id": 0}))
    assert seen == ["outer:query.register", "inner:query.register"]


def test_a_node_without_a_partition_is_told_how_to_start():
    with pytest.raises(ValueError, match="--node-config"):
        app(_register_query(), _node({}))


def test_a_node_with_its_own_folder_registers_that_folders_identities(tmp_path, face_folder):
    root = face_folder(tmp_path / "phone-17", {"owner": 4})
    reply = app(_register_query(), _node({"partition-id": 17, "data-path": str(root)}))
    record = reply.content[protocol.CONFIG]
    assert record["partition"] == 17 and list(record["ids"]) == ["partition-17/owner"]


def test_a_node_whose_folder_is_missing_fails_naming_the_node_config_key_and_path(tmp_path):
    import re

    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=re.escape(f"node config data-path={missing}: ") + ".*does not exist"):
        app(_register_query(), _node({"partition-id": 0, "data-path": str(missing)}))
