"""Which bank rows a client is sent: its own identities' rows, and negatives chosen per sharing mode.

A client trains its own rows against fixed negatives: the rows nearest to its own (the hardest,
most informative ones) plus a random sample of the pool its ``proxy-sharing`` mode allows.
``all``: every row but the client's own (other clients' identities too: the strongest signal, no
privacy); ``dp``: the same pool, but the bank only ever holds noised client rows; ``public``: only
the server's own identities (no client's template reaches another client); ``none`` and
``local-heads``: nothing.
"""

from __future__ import annotations

import numpy as np

from nptface.server.federation.proxy_bank import ProxyBank

NO_NEGATIVES = ("none", "local-heads")


def own_rows(bank: ProxyBank, held: list[str], in_bank: set[str]) -> tuple[list[str], np.ndarray]:
    """The client's identities the bank already has (``in_bank``: the bank's ids, computed once per round) and their rows."""
    known = [i for i in held if i in in_bank]
    rows = bank.rows[bank.index_of(known)] if known else np.zeros((0, bank.dim), np.float32)
    return known, rows


def select_negatives(
    bank: ProxyBank, rows: np.ndarray, ids: list[str], sharing: str, nearest: int, random: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted bank indices of one client's negatives: ``nearest`` per own row plus ``random`` drawn from the pool."""
    if sharing in NO_NEGATIVES:
        return np.zeros(0, np.int64)
    pool_mask = bank.public_mask() if sharing == "public" else np.ones(len(bank), bool)
    if ids:
        pool_mask = pool_mask.copy()
        pool_mask[bank.index_of(ids)] = False
    if not pool_mask.any():
        return np.zeros(0, np.int64)
    chosen: set[int] = set()
    if len(rows) and nearest:
        chosen.update(bank.nearest(rows, nearest, candidates=pool_mask).ravel().tolist())
    pool = np.flatnonzero(pool_mask)
    chosen.update(rng.choice(pool, size=min(random, len(pool)), replace=False).tolist())
    return np.asarray(sorted(chosen), np.int64)
