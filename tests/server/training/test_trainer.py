"""The trainer: exact resume after SIGKILL, refusing to mix runs, atomic checkpoints, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from nptface.core.heads import ScalableNPTHead
from nptface.server.training.config import load_config
from nptface.server.training.lazy_sgd import LazyRowSGD
from nptface.server.training.sharding.proxy_shard import ShardedNPTHead
from nptface.server.training.train_state import TrainStateError, latest_checkpoint
from nptface.server.training.trainer import KILL_AT_STEP_VARIABLE, RunExistsError, Trainer, train_from_config

# 8 identities x 16 images at 64 px, batch 16: 8 steps an epoch, checkpoints every 5 steps.
SMALL = [
    "data.identities=8",
    "data.images_per_identity=16",
    "model.width=0.5",
    "model.input_size=64",
    "model.embedding_dim=32",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.epochs=3",
    "optim.batch_size=16",
    "optim.milestones=[2.0]",
    "optim.warmup_epochs=0.5",
    "log.progress=false",
    "log.every_steps=1",
    "checkpoint.every_steps=5",
    "checkpoint.keep=2",
    "device.cpu_threads=1",
    'eval.sets=[{kind="synthetic", name="heldout", identities=4, images_per_identity=3}]',
]


def _config(tmp_path: Path, *extra: str):
    return load_config("synthetic-quick", [*SMALL, f'run.output_dir="{tmp_path.as_posix()}"', *extra])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {**load_file(run_dir / "model.safetensors"), **load_file(run_dir / "proxies.safetensors")}


def _latest_step(run_dir: Path) -> int | None:
    found = latest_checkpoint(run_dir / "checkpoints")
    try:
        return None if found is None else json.loads((found / "state.json").read_text())["position"]["global_step"]
    except FileNotFoundError:  # pruned between finding and reading it
        return None


# The streamed head with row-sparse proxy updates: its lazy state is caught up at every checkpoint.
SPARSE = ["head.scalable_above=4", "head.chunk_size=3", "optim.sparse_proxies=true"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], SPARSE], ids=["dense", "sparse_proxies"])
def test_resume_after_kill_gives_identical_weights(tmp_path, extra):
    config = _config(tmp_path, *extra)
    reference = train_from_config(config, tmp_path / "uninterrupted")

    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "nptface.cli", "train", "synthetic-quick", "--run-dir", str(interrupted)]
    for override in [*SMALL, f'run.output_dir="{tmp_path.as_posix()}"', *extra]:
        command += ["--set", override]
    # Killed right after step 12 (epoch 2, batch 4 of 8): two steps past the mid-epoch checkpoint of
    # step 10, so their log lines are on disk but not in the checkpoint, and are replayed on resume.
    killed = subprocess.run(
        command,
        env={**os.environ, KILL_AT_STEP_VARIABLE: "12"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    killed_at = _latest_step(interrupted)
    assert killed_at == 10, f"the last checkpoint is at step {killed_at}, expected 10"
    assert not (interrupted / "model.safetensors").exists(), "the killed run must not have finished"
    assert json.loads((interrupted / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 12

    resumed = train_from_config(config, interrupted, resume="must")
    assert resumed.resumed_from == killed_at
    expected, got = _weights(reference.run_dir), _weights(interrupted)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]

    def logged_losses(run_dir: Path) -> list[tuple[int, float]]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in records if "kind" not in r]

    # Lines logged after the last checkpoint and replayed on resume appear once, not twice.
    assert logged_losses(interrupted) == logged_losses(reference.run_dir)


def test_starting_over_an_existing_run_is_refused_and_a_changed_config_cannot_resume(tmp_path):
    config = _config(
        tmp_path,
        "optim.epochs=1",
        "data.images_per_identity=4",
        "optim.milestones=[]",
        "optim.warmup_epochs=0.0",
        "checkpoint.every_steps=1",
    )
    train_from_config(config, tmp_path / "run")
    with pytest.raises(RunExistsError, match="--resume"):
        train_from_config(config, tmp_path / "run")
    changed = _config(
        tmp_path,
        "optim.epochs=1",
        "data.images_per_identity=4",
        "optim.milestones=[]",
        "optim.warmup_epochs=0.0",
        "optim.lr=0.05",
    )
    with pytest.raises(TrainStateError, match="config hash"):
        train_from_config(changed, tmp_path / "run", resume="must")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_from_config(config, tmp_path / "elsewhere", resume="must")


def test_checkpoints_are_complete_pruned_and_pointed_to(tmp_path):
    config = _config(tmp_path, "optim.epochs=1", "optim.milestones=[]", "checkpoint.every_steps=2", "checkpoint.keep=2")
    result = train_from_config(config, tmp_path / "run")
    checkpoints = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert checkpoints == ["latest", "step-00000006", "step-00000008"]
    assert latest_checkpoint(result.run_dir / "checkpoints") == result.run_dir / "checkpoints" / "step-00000008"
    assert json.loads((result.run_dir / "checkpoints" / "latest").read_text())["entry"] == "step-00000008"
    # Step 8 ends the epoch on a checkpoint step: the end-of-epoch state is the one written.
    position = json.loads((result.run_dir / "checkpoints" / "step-00000008" / "state.json").read_text())["position"]
    assert (position["epoch"], position["batch_in_epoch"]) == (1, 0)
    assert (result.run_dir / "config.json").is_file() and (result.run_dir / "report.md").is_file()
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "kind" not in r] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(r["images_per_second"] > 0 for r in log)


def test_each_checkpoint_is_written_once_and_the_last_epoch_evaluated_once(tmp_path, monkeypatch):
    import nptface.server.training.trainer as trainer

    saved_steps, evaluations = [], []
    save_train_state, evaluate_model = trainer.save_train_state, trainer.evaluate_model

    def record_save(directory, model, head, optimizer, state, keep):
        saved_steps.append(state.position.global_step)
        return save_train_state(directory, model, head, optimizer, state, keep)

    monkeypatch.setattr(trainer, "save_train_state", record_save)
    monkeypatch.setattr(trainer, "evaluate_model", lambda *a, **k: evaluations.append(1) or evaluate_model(*a, **k))
    # 8 steps an epoch, a checkpoint every 4 steps: epochs end on checkpoint steps 8 and 16.
    config = _config(tmp_path, "optim.epochs=2", "optim.milestones=[]", "checkpoint.every_steps=4", "log.every_steps=4")
    result = train_from_config(config, tmp_path / "run")
    assert saved_steps == [4, 8, 12, 16]
    assert len(evaluations) == 2, "one evaluation an epoch; the last one is the final evaluation"
    assert result.final_eval["heldout"].verification.accuracy.mean == result.history[-1]["heldout/accuracy"]


def test_npt_above_the_class_threshold_trains_through_the_streamed_head_with_the_same_result(tmp_path):
    # One step: over many steps training is chaotic, and a last-bit difference between the chunked
    # and the full matrix product that flips a near-tie in the top-k grows into different weights.
    common = [
        "optim.epochs=1",
        "data.images_per_identity=2",
        "optim.milestones=[]",
        "optim.warmup_epochs=0.0",
        "eval.sets=[]",
        "checkpoint.every_steps=1000",
    ]
    plain = train_from_config(_config(tmp_path, *common, "head.scalable_above=0"), tmp_path / "plain")
    streamed = train_from_config(
        _config(tmp_path, *common, "head.scalable_above=4", "head.chunk_size=3"), tmp_path / "streamed"
    )
    assert json.loads((streamed.run_dir / "checkpoint.json").read_text())["head"] == "scalable_npt"
    assert json.loads((plain.run_dir / "checkpoint.json").read_text())["head"] == "npt"
    expected, got = _weights(plain.run_dir), _weights(streamed.run_dir)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5)
    assert streamed.history[0]["train_accuracy"] == plain.history[0]["train_accuracy"]
    assert streamed.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], abs=1e-5)


def test_sparse_proxies_take_the_dense_sgd_step(tmp_path):
    # One step (see above): LazyRowSGD writes the touched rows, catches the rest up at the end.
    common = [
        "optim.epochs=1",
        "data.images_per_identity=2",
        "optim.milestones=[]",
        "optim.warmup_epochs=0.0",
        "eval.sets=[]",
        "checkpoint.every_steps=1000",
        "head.scalable_above=4",
        "head.chunk_size=3",
    ]
    dense = train_from_config(_config(tmp_path, *common, "optim.sparse_proxies=false"), tmp_path / "dense")
    sparse = train_from_config(_config(tmp_path, *common, "optim.sparse_proxies=true"), tmp_path / "sparse")
    expected, got = _weights(dense.run_dir), _weights(sparse.run_dir)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-6)


def test_sparse_proxies_refuse_a_run_that_does_not_stream_the_head(tmp_path):
    with pytest.raises(ValueError, match="head.scalable_above"):
        Trainer(_config(tmp_path, "optim.sparse_proxies=true"), tmp_path / "run")


@pytest.mark.parametrize(
    ("overrides", "sparse"),
    [
        (["head.scalable_above=4", "head.chunk_size=3"], True),  # the streamed head: rows written lazily
        ([], False),  # the plain head's gradient is dense
        (["head.scalable_above=4", "optim.sparse_proxies=false"], False),
        (["head.scalable_above=4", "optim.grad_clip=1.0"], False),  # a sparse gradient cannot be clipped
    ],
    ids=["streamed", "plain-head", "turned-off", "grad-clip"],
)
def test_auto_sparse_proxies_where_the_head_streams_and_nothing_needs_a_dense_gradient(tmp_path, overrides, sparse):
    trainer = Trainer(_config(tmp_path, *overrides), tmp_path / "run")
    try:
        assert isinstance(trainer.optimizer, LazyRowSGD) == sparse
        if sparse:
            assert trainer.head.lazy_rows is not None, "the streamed search reads rows through the optimiser"
    finally:
        trainer.close()


@pytest.mark.parametrize("negatives,sharded", [("hardest", True), ("semihard", False)])
def test_auto_sharding_under_torchrun_picks_the_sharded_head_only_for_exact_hardest_negatives(negatives, sharded):
    """The sharded search merges per-shard hardest top-k; a semi-hard run keeps its proxies replicated."""
    config = load_config("synthetic-quick", [f'head.params={{k=3, delta=1.0, r=1.0, negatives="{negatives}"}}'])
    two_ranks = SimpleNamespace(distributed=True, rank=0, world_size=2, is_main=True)
    head = ScalableNPTHead(20, 8, k=3, negatives=negatives)
    chosen = Trainer._shard_choice(SimpleNamespace(config=config, context=two_ranks), head)
    assert isinstance(chosen, ShardedNPTHead) is sharded
