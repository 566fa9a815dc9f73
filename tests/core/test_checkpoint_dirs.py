"""Checkpoint directories: whatever step of a write is interrupted, a complete entry remains to resume from."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from nptface.core.checkpoint_dirs import POINTER_FILE, CheckpointDirError, CheckpointDirs


class Crash(BaseException):
    """The process 'dies': this call and every later file-system call fail."""


class Injector:
    """Wraps the calls a write makes to change the disk; from call number ``crash_at`` on, each raises."""

    TARGETS = ((os, "replace"), (os, "rename"), (os, "fsync"), (os, "mkdir"), (shutil, "rmtree"))

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.crash_at: float = math.inf
        for module, name in self.TARGETS:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, original):
        def wrapper(*args, **kwargs):
            self.step()
            return original(*args, **kwargs)

        return wrapper

    def step(self) -> None:
        if self.calls >= self.crash_at:
            raise Crash(f"killed at call {self.calls}")
        self.calls += 1


def _write(store: CheckpointDirs, name: str, payload: str, injector: Injector | None = None) -> None:
    with store.write(name) as staging:
        (staging / "payload.txt").write_text(payload)
        if injector is not None:
            injector.step()  # the caller's own writes are a step too
        (staging / "nested").mkdir()
        (staging / "nested" / "more.txt").write_text(payload * 3)


def _payload(path: Path | None) -> str | None:
    return None if path is None else (path / "payload.txt").read_text()


def _hidden_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.is_dir())


def test_write_commits_points_at_and_keeps_the_newest_entries(tmp_path):
    store = CheckpointDirs(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):
        _write(store, f"step-{step}", f"state {step}")
    assert sorted(p.name for p in store.root.iterdir()) == [POINTER_FILE, "step-2", "step-3"]
    assert store.current() == store.root / "step-3" and _payload(store.current()) == "state 3"
    assert json.loads((store.root / POINTER_FILE).read_text())["entry"] == "step-3"
    assert _hidden_folders(store.root) == []


def test_an_error_while_filling_leaves_the_folder_as_it_was(tmp_path):
    store = CheckpointDirs(tmp_path, keep=2)
    _write(store, "a", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with store.write("b") as staging:
            (staging / "payload.txt").write_text("half")
            raise RuntimeError("disk full")
    assert [e.path.name for e in store.entries()] == ["a"] and _payload(store.current()) == "old"
    assert _hidden_folders(tmp_path) == []


def test_writing_a_name_again_replaces_it_without_leaving_a_copy(tmp_path):
    store = CheckpointDirs(tmp_path, keep=2)
    _write(store, "a", "first")
    _write(store, "b", "second")
    _write(store, "b", "second, again")
    assert sorted(e.path.name for e in store.entries()) == ["a", "b"]
    assert store.current() == tmp_path / "b" and _payload(store.current()) == "second, again"


def _count_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int, existing: list[str], name: str) -> int:
    injector = Injector(monkeypatch)
    store = CheckpointDirs(tmp_path / "count", keep=keep)
    for old in existing:
        _write(store, old, f"old {old}")
    injector.calls = 0
    _write(store, name, "new", injector)
    monkeypatch.undo()
    return injector.calls


@pytest.mark.parametrize(
    ("keep", "existing", "name"),
    [
        (2, ["a", "b"], "c"),  # a new name, pruning "a"
        (1, ["a"], "a"),  # the only entry written again: it must survive until the new one is in
        (2, ["a", "b"], "b"),  # the current entry written again (an epoch ending on a checkpoint step)
    ],
    ids=["new-name", "rewrite-only-entry", "rewrite-current"],
)
def test_a_kill_at_any_step_of_a_write_leaves_a_complete_entry_to_resume_from(
    tmp_path, monkeypatch, keep, existing, name
):
    steps = _count_calls(tmp_path, monkeypatch, keep, existing, name)
    assert steps >= 10, "the write should pass through every instrumented step"
    before = f"old {existing[-1]}"
    for crash_at in range(steps):
        root = tmp_path / f"crash-{crash_at}"
        store = CheckpointDirs(root, keep=keep)
        for old in existing:
            _write(store, old, f"old {old}")
        injector = Injector(monkeypatch)
        injector.crash_at = crash_at
        with pytest.raises(Crash):
            _write(store, name, "new", injector)
        monkeypatch.undo()

        resumed = store.current()
        assert _payload(resumed) in (before, "new"), f"kill at step {crash_at}: resumed from {resumed}"
        assert (resumed / "nested" / "more.txt").read_text() == _payload(resumed) * 3

        # The next run writes on and cleans up what the kill left behind.
        _write(store, "next", "after")
        assert _payload(store.current()) == "after"
        assert len(store.entries()) <= keep and _hidden_folders(root) == []


def test_a_pointer_to_a_missing_or_incomplete_entry_falls_back_to_the_newest_complete_one(tmp_path, caplog):
    store = CheckpointDirs(tmp_path, keep=3)
    for name in ("a", "b", "c"):
        _write(store, name, name)
    (tmp_path / "c" / "nested" / "more.txt").write_text("truncated")  # its size no longer matches the marker
    assert _payload(store.current()) == "b"
    assert "missing or incomplete" in caplog.text
    shutil.rmtree(tmp_path / "c")
    assert _payload(store.current()) == "b"
    (tmp_path / "b" / "entry.json").write_text("{")
    assert _payload(store.current()) == "a"


def test_point_at_rolls_back_and_pruning_never_removes_the_current_entry(tmp_path):
    store = CheckpointDirs(tmp_path, keep=2)
    for name in ("a", "b", "c"):
        _write(store, name, name)
    store.point_at("b")
    CheckpointDirs(tmp_path, keep=1).prune()
    assert sorted(e.path.name for e in store.entries()) == ["b", "c"] and _payload(store.current()) == "b"
    with pytest.raises(CheckpointDirError, match="not a complete checkpoint"):
        store.point_at("a")


def test_folders_it_did_not_commit_are_never_deleted_or_overwritten(tmp_path):
    store = CheckpointDirs(tmp_path, keep=1)
    (tmp_path / "step-1").mkdir(parents=True)
    (tmp_path / "step-1" / "notes.txt").write_text("mine")
    _write(store, "step-2", "x")
    _write(store, "step-3", "y")
    assert (tmp_path / "step-1" / "notes.txt").read_text() == "mine"
    with pytest.raises(CheckpointDirError, match=r"step-1 exists but is not a complete checkpoint"):
        _write(store, "step-1", "z")
    assert (tmp_path / "step-1" / "notes.txt").read_text() == "mine" and _payload(store.current()) == "y"


def test_a_pointer_of_another_format_is_an_error_naming_the_file(tmp_path):
    store = CheckpointDirs(tmp_path)
    _write(store, "step-1", "x")
    (tmp_path / POINTER_FILE).write_text(json.dumps({"checkpoint": "step-1"}))
    with pytest.raises(CheckpointDirError, match=r"latest: field 'format' must be 'nptface-checkpoint-pointer'"):
        store.current()


def test_an_empty_or_missing_folder_has_no_current_entry_and_bad_names_are_refused(tmp_path):
    assert CheckpointDirs(tmp_path / "absent").current() is None
    with pytest.raises(CheckpointDirError, match="keep must be >= 1"):
        CheckpointDirs(tmp_path, keep=0)
    for bad in ("", ".hidden", "a/b", POINTER_FILE):
        with pytest.raises(CheckpointDirError, match="cannot name a checkpoint directory"):
            with CheckpointDirs(tmp_path).write(bad):
                pass
    with pytest.raises(CheckpointDirError, match="entry.json is the commit marker"):
        with CheckpointDirs(tmp_path).write("x") as staging:
            (staging / "entry.json").write_text("{}")
