"""The federated server's single bank of identity proxies: ownership, aggregation and spread-out.

One unit row per identity; public rows belong to the server, the others to the client that first
sent them. Each round :meth:`ProxyBank.aggregate` replaces every row a client sent by the
count-weighted mean of what was sent for it, renormalised, and leaves all other rows bitwise alone.
Clients never see each other's identities, so nothing stops two of them from placing proxies on top
of each other; :meth:`ProxyBank.spread_out` restores NPT's Property 2 (proxies at least Δ apart,
``||w_i - w_j||² ≥ Δ``, i.e. ``cos ≤ 1 - Δ/2``) with FedAwS's spread-out regulariser
(Yu et al., 2020) restricted to the pairs that violate the margin. Pairwise work is done in
``chunk_rows``-sized blocks so a 100k-row bank never materialises an N×N matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from nptface.core.atomic import atomic_write_json
from nptface.core.tensor_files import write_safetensors
from nptface.core.verification import unit_rows
from nptface.core.versioned_json import read_versioned_json

FORMAT = "nptface-proxy-bank"
VERSION = 1
ROWS_FILE = "bank.safetensors"
META_FILE = "bank.json"
CHUNK_ROWS = 2048  # a 2048×2048 float32 block is 16 MiB: large enough for BLAS, small enough for 100k rows
SPREAD_SLACK = 1e-3  # cosine units: spread_out aims this far inside the margin so it ends in finitely many steps
_SHOWN = 5  # how many offending ids an error message lists before summarising


class ProxyBankError(ValueError):
    """Input that would corrupt the bank; the message names the field, identity or node at fault."""


@dataclass(frozen=True)
class RowUpdate:
    """What one client sends back: raw (unnormalised) rows for identities it owns, with sample counts."""

    node_id: int
    ids: list[str]
    rows: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class AggregationStats:
    updated: int
    registered: int
    untouched: int


@dataclass(frozen=True)
class SpreadStats:
    before_min_sq_distance: float
    after_min_sq_distance: float
    violating_pairs_before: int
    violating_pairs_after: int
    steps_run: int


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def _row_problems(rows: Any, ids: Sequence[str], dim: int) -> list[str]:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape != (len(ids), dim):
        return [f"rows: expected shape ({len(ids)}, {dim}), got {rows.shape}"]
    if not np.issubdtype(rows.dtype, np.floating):
        return [f"rows: expected floats, got {rows.dtype}"]
    if not np.isfinite(rows).all():
        return [f"rows: non-finite values for {_names([ids[i] for i in np.flatnonzero(~np.isfinite(rows).all(1))])}"]
    zero = np.flatnonzero(np.linalg.norm(rows.astype(np.float64), axis=1) == 0)
    return [f"rows: zero-norm row for {_names([ids[i] for i in zero])}"] if len(zero) else []


def _id_problems(ids: Sequence[Any]) -> list[str]:
    bad = [i for i, x in enumerate(ids) if not isinstance(x, str) or not x]
    if bad:
        return [f"ids: entries {bad[:_SHOWN]} are not non-empty strings"]
    duplicates = [x for x, n in Counter(ids).items() if n > 1]
    return [f"ids: duplicated {_names(duplicates)}"] if duplicates else []


def _upper_blocks(rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Cosine blocks covering every pair i < j exactly once; entries with j <= i are -inf."""
    n = len(rows)
    for i0 in range(0, n, chunk_rows):
        left = rows[i0 : i0 + chunk_rows]
        for j0 in range(i0, n, chunk_rows):
            sims = left @ rows[j0 : j0 + chunk_rows].T
            if j0 == i0:
                sims[np.tril_indices(sims.shape[0], 0, sims.shape[1])] = -np.inf
            yield slice(i0, i0 + sims.shape[0]), slice(j0, j0 + sims.shape[1]), sims


def _sq_distance(max_cos: float) -> float:
    """||a - b||² = 2 - 2 cos for unit rows; clipped at 0 against float32 cosines a hair above 1."""
    return max(0.0, 2 - 2 * max_cos) if np.isfinite(max_cos) else float("inf")


def _owner_fits(public: bool, owner: Any) -> bool:
    return owner is None if public else (isinstance(owner, int) and not isinstance(owner, bool))


def _spread_pass(
    rows: np.ndarray, movable: np.ndarray, max_cos: float, chunk_rows: int
) -> tuple[float, int, np.ndarray]:
    """One sweep over all pairs: largest cosine, violating pairs and the gradient of the spread-out hinge."""
    best, violating, grad = -np.inf, 0, np.zeros_like(rows)
    target = max_cos - SPREAD_SLACK
    for left, right, sims in _upper_blocks(rows, chunk_rows):
        best = max(best, float(sims.max()))
        near = sims > target
        if not near.any():  # the common case once spread: skip the block's elementwise work and matmuls
            continue
        near &= movable[left, None] | movable[None, right]
        violating += int((near & (sims > max_cos)).sum())
        weights = np.where(near, 2 * (sims - target), 0).astype(np.float32)
        grad[left] += weights @ rows[right]
        grad[right] += weights.T @ rows[left]
    return best, violating, grad


def _mask(mask: np.ndarray | None, n: int, name: str, default: bool) -> np.ndarray:
    if mask is None:
        return np.full(n, default)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ProxyBankError(f"{name}: expected a bool mask of shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


class ProxyBank:
    """Identity proxies as float32 unit rows, each public (server-owned) or owned by one client node."""

    def __init__(self, dim: int):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ProxyBankError(f"dim: expected a positive int, got {dim!r}")
        self.dim = dim
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._public: list[bool] = []
        self._owners: list[int | None] = []
        self._rows = np.zeros((0, dim), dtype=np.float32)

    @classmethod
    def from_rows(cls, ids: Sequence[str], rows: np.ndarray, public: bool, owner: int | None = None) -> ProxyBank:
        bank = cls(int(np.asarray(rows).shape[-1]))
        bank.register(ids, rows, owner=owner, public=public)
        return bank

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def rows(self) -> np.ndarray:
        """A read-only view; aggregation and spread-out swap in a new array, so old views stay valid snapshots."""
        view = self._rows.view()
        view.flags.writeable = False
        return view

    def public_mask(self) -> np.ndarray:
        return np.array(self._public, dtype=bool)

    def owner_of(self, identity: str) -> int | None:
        return self._owners[self.index_of([identity])[0]]

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        unknown = [i for i in ids if i not in self._index]
        if unknown:
            raise ProxyBankError(f"ids: {len(unknown)} unknown to the bank: {_names(unknown)}")
        return np.array([self._index[i] for i in ids], dtype=np.int64)

    def register(self, ids: Sequence[str], rows: np.ndarray, owner: int | None, public: bool = False) -> None:
        """Append new identities; their rows are L2-normalised. Existing ids are refused, never overwritten."""
        ids = list(ids)
        if public and owner is not None:
            raise ProxyBankError(f"owner: public rows belong to the server, got owner {owner!r}")
        if not public and (isinstance(owner, bool) or not isinstance(owner, (int, np.integer))):
            raise ProxyBankError(f"owner: a private row needs an int node id, got {owner!r}")
        problems = _id_problems(ids) or _row_problems(rows, ids, self.dim)
        existing = [i for i in ids if i in self._index]
        if existing:
            problems.append(f"ids: already registered {_names(existing)}")
        if problems:
            raise ProxyBankError("; ".join(problems))
        owners = [None if public else int(owner)] * len(ids)
        self._append(ids, unit_rows(rows, name="rows"), [public] * len(ids), owners)

    def _append(self, ids: list[str], unit: np.ndarray, public: list[bool], owners: list[int | None]) -> None:
        self._index.update((identity, k) for k, identity in enumerate(ids, start=len(self._ids)))
        self._ids += ids
        self._public += public
        self._owners += owners
        self._rows = np.concatenate([self._rows, unit.astype(np.float32, copy=False)])

    def validate(self, update: RowUpdate, norm_limit: float | None = None) -> list[str]:
        """Everything wrong with ``update``, in words; empty means aggregate may use it."""
        node, ids = update.node_id, list(update.ids)
        if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
            return [f"node_id: expected an int, got {node!r}"]
        problems = _id_problems(ids)
        if problems:
            return problems
        problems += _row_problems(update.rows, ids, self.dim)
        counts = np.asarray(update.counts)
        if counts.shape != (len(ids),) or not np.issubdtype(counts.dtype, np.integer):
            problems.append(f"counts: expected {len(ids)} ints, got {counts.dtype} {counts.shape}")
        elif (counts <= 0).any():
            problems.append(f"counts: non-positive for {_names([ids[i] for i in np.flatnonzero(counts <= 0)])}")
        known = [(i, self._index[i]) for i in ids if i in self._index]
        public = [i for i, j in known if self._public[j]]
        if public:
            problems.append(f"ids: {_names(public)} are public; a client may only send rows it owns")
        foreign = [
            f"{i!r} (node {self._owners[j]})" for i, j in known if not self._public[j] and self._owners[j] != node
        ]
        if foreign:
            problems.append(f"ids: owned by another node, not node {node}: {', '.join(foreign[:_SHOWN])}")
        if norm_limit is not None and not problems:
            norms = np.linalg.norm(np.asarray(update.rows, dtype=np.float64), axis=1)
            if (norms > norm_limit).any():
                over = [ids[i] for i in np.flatnonzero(norms > norm_limit)]
                problems.append(f"rows: norm above {norm_limit} for {_names(over)} (max {norms.max():.3g})")
        return problems

    def aggregate(self, updates: Sequence[RowUpdate]) -> AggregationStats:
        """Count-weighted mean per sent row, renormalised; all-or-nothing, so a refused round changes nothing."""
        refused = [f"node {u.node_id}: {'; '.join(p)}" for u in updates if (p := self.validate(u))]
        if refused:
            raise ProxyBankError("refused updates: " + " | ".join(refused))
        sums: dict[str, np.ndarray] = {}
        totals: Counter[str] = Counter()
        first_sender: dict[str, int] = {}
        for update in updates:
            rows = np.asarray(update.rows, dtype=np.float64)
            for identity, row, count in zip(update.ids, rows, np.asarray(update.counts)):
                sums[identity] = sums.get(identity, 0.0) + int(count) * row
                totals[identity] += int(count)
                if identity not in self._index:
                    sender = first_sender.setdefault(identity, int(update.node_id))
                    if sender != update.node_id:
                        raise ProxyBankError(
                            f"ids: new identity {identity!r} claimed by nodes {sender} and "
                            f"{update.node_id}; ownership must be disjoint"
                        )
        touched = list(sums)
        means = np.stack([sums[i] / totals[i] for i in touched]) if touched else np.zeros((0, self.dim))
        cancelled = [touched[k] for k in np.flatnonzero(np.linalg.norm(means, axis=1) == 0)]
        if cancelled:
            raise ProxyBankError(f"rows: the weighted mean is zero for {_names(cancelled)}")
        unit = unit_rows(means, name="rows")
        old = [k for k, i in enumerate(touched) if i in self._index]
        new = [k for k, i in enumerate(touched) if i not in self._index]
        before = len(self)
        rows = self._rows.copy()
        rows[self.index_of([touched[k] for k in old])] = unit[old]
        self._rows = rows
        self._append([touched[k] for k in new], unit[new], [False] * len(new), [first_sender[touched[k]] for k in new])
        return AggregationStats(updated=len(old), registered=len(new), untouched=before - len(old))

    def spread_out(
        self,
        min_sq_distance: float = 1.0,
        steps: int = 50,
        lr: float = 0.1,
        frozen: np.ndarray | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
    ) -> SpreadStats:
        """Projected gradient steps on Σ relu(cos_ij - max_cos)² over violating pairs; frozen rows stay bitwise.

        The hinge aims ``SPREAD_SLACK`` below ``max_cos = 1 - min_sq_distance / 2``: at the exact margin
        the gradient vanishes with the excess, so pairs would creep towards it forever and the early stop
        (no pair above ``max_cos``) would never fire. Pairs of two frozen rows cannot be fixed here, so
        they are not counted as violating; the reported minimum distances cover all pairs.
        """
        if not 0 < min_sq_distance <= 4:
            raise ProxyBankError(f"min_sq_distance: must be in (0, 4] on the unit sphere, got {min_sq_distance}")
        if steps < 0 or not lr > 0:
            raise ProxyBankError(f"steps/lr: need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
        movable = ~_mask(frozen, len(self), "frozen", default=False)
        max_cos = 1 - min_sq_distance / 2
        rows = self._rows.copy()
        best, violating, grad = _spread_pass(rows, movable, max_cos, chunk_rows)
        start, steps_run = (best, violating), 0
        while violating and steps_run < steps:
            moving, push = rows[movable], grad[movable]
            tangent = push - np.sum(push * moving, axis=1, keepdims=True) * moving
            rows[movable] = unit_rows(moving - lr * tangent, name="spread rows")
            steps_run += 1
            best, violating, grad = _spread_pass(rows, movable, max_cos, chunk_rows)
        self._rows = rows
        return SpreadStats(_sq_distance(start[0]), _sq_distance(best), start[1], violating, steps_run)

    def min_sq_distance(self, *, chunk_rows: int = CHUNK_ROWS) -> float:
        """min over i < j of ||w_i - w_j||² (inf for fewer than two rows)."""
        return _sq_distance(max((float(s.max()) for _, _, s in _upper_blocks(self._rows, chunk_rows)), default=-np.inf))

    def nearest(
        self,
        queries: np.ndarray,
        k: int,
        candidates: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
    ) -> np.ndarray:
        """Indices of the ``min(k, available)`` most cosine-similar rows per query, most similar first."""
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim or not np.isfinite(queries).all():
            raise ProxyBankError(f"queries: expected finite [n, {self.dim}], got {queries.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ProxyBankError(f"k: expected a positive int, got {k!r}")
        pool = np.flatnonzero(
            _mask(candidates, len(self), "candidates", True) & ~_mask(exclude, len(self), "exclude", False)
        )
        keep = min(k, len(pool))
        out = np.empty((len(queries), keep), dtype=np.int64)
        if keep == 0:
            return out
        queries = queries.astype(np.float32)
        for q0 in range(0, len(queries), chunk_rows):
            block = queries[q0 : q0 + chunk_rows]
            top_sims, top_idx = np.empty((len(block), 0), np.float32), np.empty((len(block), 0), np.int64)
            for c0 in range(0, len(pool), chunk_rows):
                idx = pool[c0 : c0 + chunk_rows]
                sims = np.concatenate([top_sims, block @ self._rows[idx].T], axis=1)
                cols = np.concatenate([top_idx, np.broadcast_to(idx, (len(block), len(idx)))], axis=1)
                if sims.shape[1] > keep:
                    part = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
                    sims, cols = np.take_along_axis(sims, part, 1), np.take_along_axis(cols, part, 1)
                top_sims, top_idx = sims, cols
            order = np.argsort(-top_sims, axis=1, kind="stable")
            out[q0 : q0 + len(block)] = np.take_along_axis(top_idx, order, 1)
        return out

    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "ids": list(self._ids),
            "public": list(self._public),
            "owners": list(self._owners),
        }
        return {"rows": self._rows.copy()}, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ProxyBank:
        """Rebuild a bank exactly (rows are not renormalised), refusing any inconsistency by field name."""
        for field in ("format", "version", "dim", "ids", "public", "owners"):
            if field not in meta:
                raise ProxyBankError(f"meta: missing field {field!r}")
        if meta["format"] != FORMAT or meta["version"] != VERSION:
            raise ProxyBankError(
                f"meta: format/version must be {FORMAT!r}/{VERSION}, got {meta['format']!r}/{meta['version']!r}"
            )
        bank = cls(meta["dim"])
        rows = arrays.get("rows")
        if not isinstance(rows, np.ndarray) or rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != bank.dim:
            raise ProxyBankError(
                f"rows: expected float32 [N, {bank.dim}], got "
                f"{getattr(rows, 'dtype', type(rows).__name__)} {getattr(rows, 'shape', '')}"
            )
        for field in ("ids", "public", "owners"):
            if not isinstance(meta[field], list) or len(meta[field]) != len(rows):
                raise ProxyBankError(
                    f"{field}: expected a list of {len(rows)} entries (one per row), "
                    f"got {len(meta[field]) if isinstance(meta[field], list) else type(meta[field])}"
                )
        ids, public, owners = meta["ids"], meta["public"], meta["owners"]
        problems = _id_problems(ids) or _row_problems(rows, ids, bank.dim)
        if problems:
            raise ProxyBankError("; ".join(problems))
        if not np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4):
            raise ProxyBankError("rows: not unit vectors")
        if not all(isinstance(p, bool) for p in public):
            raise ProxyBankError("public: expected booleans")
        inconsistent = [i for i, p, o in zip(ids, public, owners) if not _owner_fits(p, o)]
        if inconsistent:
            raise ProxyBankError(
                f"owners: public rows need None and private rows an int node id; wrong for {_names(inconsistent)}"
            )
        bank._append(list(ids), rows.copy(), list(public), list(owners))
        return bank

    def save(self, directory: Path) -> None:
        """Rows first, then bank.json as the commit mark.

        Ids only grow and owners never change, so a crash between the two files leaves either a consistent
        pair (same row count, same meta) or a row-count mismatch that :meth:`load` refuses.
        """
        directory = Path(directory)
        arrays, meta = self.to_state()
        write_safetensors(directory / ROWS_FILE, arrays, {"format": FORMAT, "version": str(VERSION)})
        atomic_write_json(directory / META_FILE, meta)

    @classmethod
    def load(cls, directory: Path) -> ProxyBank:
        """Read a saved bank: safetensors plus JSON, nothing is unpickled."""
        directory = Path(directory)
        rows_path, meta_path = directory / ROWS_FILE, directory / META_FILE
        if not rows_path.is_file():
            raise ProxyBankError(f"{rows_path}: not found")
        meta = read_versioned_json(meta_path, FORMAT, VERSION, ProxyBankError)
        try:
            arrays = load_file(str(rows_path))
        except (SafetensorError, OSError) as error:
            raise ProxyBankError(f"{rows_path}: unreadable ({error})") from None
        try:
            return cls.from_state(arrays, meta)
        except ProxyBankError as error:
            raise ProxyBankError(f"{directory}: {error}") from None
