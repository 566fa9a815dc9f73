"""Messages and contexts as a SuperNode hands them to a ClientApp, built without a running Flower."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flwr.app import Context, Message, Metadata, RecordDict


@pytest.fixture()
def incoming() -> Callable[..., Message]:
    def build(content: RecordDict, message_type: str = "train") -> Message:
        metadata = Metadata(
            run_id=1,
            message_id="m-1",
            src_node_id=1,
            dst_node_id=7,
            reply_to_message_id="",
            group_id="",
            created_at=time.time(),
            ttl=3600.0,
            message_type=message_type,
        )
        return Message(content, metadata=metadata)

    return build


@pytest.fixture()
def node() -> Callable[[int], Context]:
    def build(partition: int) -> Context:
        return Context(
            run_id=1,
            node_id=7,
            node_config={"partition-id": partition, "num-partitions": 3},
            state=RecordDict(),
            run_config={},
        )

    return build
