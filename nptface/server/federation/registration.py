"""Who is who in the federation: which node serves which client, and which identities it may own.

A node announces its partition and the identities it holds (a ``register`` query); the server
names the client after the partition, so ownership of bank rows follows the data, not the
transient node id. A registration is refused when it would let one party impersonate another:
a partition already served by a connected node, a client that now claims other identities than
it registered before (the registry is part of the resumable state), duplicate ids, or ids that
belong to another client or to the server's own (public) identities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nptface.client import protocol
from nptface.server.federation.proxy_bank import ProxyBank


@dataclass(frozen=True)
class Client:
    name: str
    partition: int


def client_name(partition: int) -> str:
    return f"partition-{partition}"


def read_registration(content: Any) -> tuple[int, list[str]]:
    """(partition, identity ids) from a register reply's config record; KeyError/TypeError/ValueError if malformed."""
    record = content[protocol.CONFIG]
    return int(record["partition"]), [str(i) for i in record["ids"]]


class Registry:
    """Connected nodes and the identities each client holds (``identities`` is the persisted registry)."""

    def __init__(self, identities: dict[str, list[str]]) -> None:
        self.identities = identities
        self.nodes: dict[int, Client] = {}

    def unknown(self, nodes: list[int]) -> list[int]:
        return [n for n in nodes if n not in self.nodes]

    def held_by(self, client: Client) -> list[str]:
        return self.identities.get(client.name, [])

    def refusal(self, partition: int, ids: list[str], bank: ProxyBank) -> str | None:
        """Why a node may not register as ``partition`` holding ``ids``, or None."""
        client = client_name(partition)
        if any(c.partition == partition for c in self.nodes.values()):
            return f"{client} is already served by another connected node"
        known = self.identities.get(client)
        if known is not None and known != ids:
            return f"{client} claims other identities than it registered before"
        if len(set(ids)) != len(ids):
            return "duplicate identity ids"
        held = {i for other, owned in self.identities.items() if other != client for i in owned}
        public = set(np.asarray(bank.ids)[bank.public_mask()].tolist())
        clash = sorted((held | public) & set(ids))
        if clash:
            return f"identities held by another client or the server: {clash[:3]}"
        return None

    def admit(self, node: int, partition: int, ids: list[str], bank: ProxyBank) -> str | None:
        """Record the node as ``partition``'s client holding ``ids``; returns the refusal instead if there is one."""
        problem = self.refusal(partition, ids, bank)
        if problem is None:
            client = Client(client_name(partition), partition)
            self.identities[client.name] = ids
            self.nodes[node] = client
        return problem
