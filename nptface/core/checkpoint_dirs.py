"""Checkpoint directories that a kill at any instant leaves usable: stage, commit, find, prune.

Training (``checkpoints/step-N/``) and the federated server (``rounds/round-N/``) keep their
recent checkpoints as directories in one folder; this is the one place that writes and finds
them. An entry is filled under a hidden staging name; its files are fsynced; a commit marker
(``entry.json``: format, version, a sequence number and every file with its size) is written
last; the directory is renamed into place in one atomic step; then the folder's pointer
(``latest``) is moved to it and entries beyond the newest ``keep`` are pruned. A reader takes the
entry the pointer names, or, when that one is missing or incomplete (a kill between two steps, a
file deleted by hand), the complete entry with the highest sequence number. Two guarantees hold
at every instant: the entry the pointer names is never removed or renamed before the new one is
committed (a name written twice, such as the step that ends an epoch on a checkpoint boundary, is
committed beside the old entry first and only then swapped in), and nothing this module did not
commit is ever deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nptface.core.atomic import atomic_write_json
from nptface.core.versioned_json import read_versioned_json

logger = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
POINTER_FILE = "latest"
ENTRY_FORMAT = "nptface-checkpoint-entry"
POINTER_FORMAT = "nptface-checkpoint-pointer"
VERSION = 1
_STAGING_SUFFIX = ".staging"
_DISCARD_SUFFIX = ".discard"


class CheckpointDirError(ValueError):
    """A checkpoint folder that cannot be used as asked (names the path and what was expected)."""


@dataclass(frozen=True)
class Entry:
    """A committed, complete checkpoint directory."""

    path: Path
    sequence: int


@dataclass(frozen=True)
class CheckpointDirs:
    """The checkpoint directories in ``root``; :meth:`write` keeps the newest ``keep`` of them."""

    root: Path
    keep: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.keep < 1:
            raise CheckpointDirError(f"{self.root}: keep must be >= 1, got {self.keep}")

    @contextlib.contextmanager
    def write(self, name: str) -> Iterator[Path]:
        """Yield an empty staging directory to fill; on a clean exit it is committed as ``name``.

        If the block raises, the staging directory is removed and the folder is as it was.
        """
        _check_name(name, self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}.", suffix=_STAGING_SUFFIX))
        try:
            yield staging
            self._commit(staging, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # a no-op once committed (renamed away)
        self.prune()

    def current(self) -> Path | None:
        """The entry to resume from: the pointer's if complete, else the newest complete one, else None."""
        named = self._pointed()
        if named is not None:
            entry = _read_entry(self.root / named)
            if entry is not None:
                return entry.path
            logger.warning(
                "%s names %s, which is missing or incomplete; using the newest complete checkpoint",
                self.root / POINTER_FILE,
                named,
            )
        entries = self.entries()
        return max(entries, key=lambda e: e.sequence).path if entries else None

    def entries(self) -> list[Entry]:
        """Every complete entry, in no particular order (hidden staging and discarded folders excluded)."""
        if not self.root.is_dir():
            return []
        found = (_read_entry(path) for path in self.root.iterdir() if not path.name.startswith("."))
        return [entry for entry in found if entry is not None]

    def point_at(self, name: str) -> None:
        """Make the complete entry ``name`` the current one (e.g. to roll a run back to it)."""
        if _read_entry(self.root / name) is None:
            raise CheckpointDirError(
                f"{self.root / name} is not a complete checkpoint directory "
                f"(no valid {ENTRY_FILE}, or a file it lists is missing)"
            )
        atomic_write_json(self.root / POINTER_FILE, {"format": POINTER_FORMAT, "version": VERSION, "entry": name})

    def prune(self) -> None:
        """Remove entries beyond the newest ``keep`` (never the current one) and leftovers of kills."""
        named = self._pointed()
        by_age = sorted(self.entries(), key=lambda e: e.sequence)
        for entry in by_age[: -self.keep]:
            if entry.path.name != named:
                _remove(entry.path)
        for leftover in self.root.iterdir():
            if leftover.name.startswith(".") and leftover.name.endswith((_STAGING_SUFFIX, _DISCARD_SUFFIX)):
                shutil.rmtree(leftover, ignore_errors=True)

    def _pointed(self) -> str | None:
        pointer = self.root / POINTER_FILE
        if not pointer.is_file():
            return None
        payload = read_versioned_json(pointer, POINTER_FORMAT, VERSION, CheckpointDirError)
        name = payload.get("entry")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise CheckpointDirError(f"{pointer}: field 'entry' must name a checkpoint directory, got {name!r}")
        return name

    def _commit(self, staging: Path, name: str) -> None:
        files = _sync_tree(staging)
        sequence = 1 + max((e.sequence for e in self.entries()), default=0)
        atomic_write_json(
            staging / ENTRY_FILE, {"format": ENTRY_FORMAT, "version": VERSION, "sequence": sequence, "files": files}
        )
        _fsync_dir(staging)
        target = self.root / name
        if not target.exists():
            os.rename(staging, target)
            _fsync_dir(self.root)
            self.point_at(name)
            return
        if _read_entry(target) is None:
            raise CheckpointDirError(
                f"{target} exists but is not a complete checkpoint directory (no valid "
                f"{ENTRY_FILE}); move it away before writing a checkpoint of that name"
            )
        # The name is written again: commit beside the old entry, point there, then swap the new one in.
        beside = self.root / f"{name}.{sequence}"
        if beside.exists():
            raise CheckpointDirError(f"{beside} is in the way of a checkpoint being written; move it away")
        os.rename(staging, beside)
        _fsync_dir(self.root)
        self.point_at(beside.name)
        discard = _discard_path(target)
        os.rename(target, discard)
        os.rename(beside, target)
        _fsync_dir(self.root)
        self.point_at(name)
        shutil.rmtree(discard, ignore_errors=True)


def _check_name(name: str, root: Path) -> None:
    if not name or "/" in name or name.startswith(".") or name in (POINTER_FILE, ENTRY_FILE):
        raise CheckpointDirError(
            f"{root}: {name!r} cannot name a checkpoint directory (expected a plain, "
            f"non-hidden folder name other than {POINTER_FILE!r})"
        )


def _read_entry(path: Path) -> Entry | None:
    """The entry at ``path`` if it is committed and every file its marker lists has the listed size."""
    try:
        marker = read_versioned_json(path / ENTRY_FILE, ENTRY_FORMAT, VERSION, CheckpointDirError)
        sequence, files = marker["sequence"], marker["files"]
        if not isinstance(sequence, int) or not isinstance(files, dict):
            return None
        if any((path / relative).stat().st_size != size for relative, size in files.items()):
            return None
    except (CheckpointDirError, KeyError, OSError):
        return None
    return Entry(path, sequence)


def _sync_tree(directory: Path) -> dict[str, int]:
    """fsync every file and folder under ``directory``; return each file's relative path and size."""
    files: dict[str, int] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative == ENTRY_FILE:
            raise CheckpointDirError(f"{path}: {ENTRY_FILE} is the commit marker; a checkpoint must not write it")
        if path.is_dir():
            _fsync_dir(path)
            continue
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[relative] = path.stat().st_size
    return files


def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (the folder's own entry table)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _discard_path(path: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=_DISCARD_SUFFIX))


def _remove(path: Path) -> None:
    """Hide ``path`` in one rename, then delete it: a kill mid-way never leaves a half-deleted entry in view."""
    discard = _discard_path(path)
    os.replace(path, discard)
    shutil.rmtree(discard, ignore_errors=True)
