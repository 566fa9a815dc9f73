"""The trainer with proxies sharded by class over two gloo ranks: same step, full checkpoints, any-size resume.

The exact comparison is sharded vs replicated proxies on the same two ranks: both see the same
local batches (so BatchNorm's batch statistics, which DDP does not synchronise, are the same) and
minimise the same global-batch NPT loss, so they may differ only by fp32 rounding. Against one
process with the global batch, BatchNorm would already differ. The comparison covers one step:
this tiny model amplifies rounding chaotically (two replicated runs that differ only in the
number of torch threads are 0.2 apart in some weight after two steps), so agreement after many
steps would test luck. A resumed sharded run, which repeats the same arithmetic, must instead
end with the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from nptface.core.checkpoint_dirs import CheckpointDirs
from nptface.server.training.config import load_config
from nptface.server.training.trainer import train_from_config

WORLD = 2
# 9 identities split 5 / 4 rows over the ranks (unequal shards, each >= k + 1 = 4); 18 images at
# global batch 16: one step an epoch. scalable_above=4 picks the streamed head, which "auto" shards.
SMALL = [
    "data.identities=9",
    "data.images_per_identity=2",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=16",
    "head.params={k=3, delta=1.0, r=1.0}",
    "head.scalable_above=4",
    "head.chunk_size=3",
    "optim.epochs=3",
    "optim.batch_size=16",
    "optim.milestones=[2.0]",
    "optim.warmup_epochs=0.0",
    "log.progress=false",
    "log.every_steps=1",
    "checkpoint.every_steps=1",
    "checkpoint.keep=10",
    "device.cpu_threads=2",
    "eval.sets=[]",
]
STEPS = 3
# One step with a clip far below the gradient norm: the norm must be the one over all shards.
CLIPPED = [*SMALL, "optim.epochs=1", "optim.milestones=[]", "optim.grad_clip=0.01"]
REPLICATED = "head.shard_proxies=false"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resume_copy(source: Path, step: int, target: Path) -> None:
    """A fresh run directory whose latest checkpoint is ``source``'s at ``step``."""
    name = f"step-{step:08d}"
    shutil.copytree(source / "checkpoints" / name, target / "checkpoints" / name)
    CheckpointDirs(target / "checkpoints").point_at(name)


def _ranks(rank: int, runs: list[tuple[int, list[str], str, str]]) -> None:
    """Every rank trains the same runs in turn."""
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    for port, overrides, run_dir, resume in runs:
        os.environ["MASTER_PORT"] = str(port)
        train_from_config(load_config("synthetic-quick", overrides), run_dir, resume=resume)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {**load_file(run_dir / "model.safetensors"), **load_file(run_dir / "proxies.safetensors")}


def _assert_all_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def _state(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{step:08d}" / "state.safetensors")


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharded")
    runs = [
        (_free_port(), SMALL, str(root / "sharded"), "never"),
        (_free_port(), [*SMALL, REPLICATED], str(root / "replicated"), "never"),
        (_free_port(), CLIPPED, str(root / "sharded-clipped"), "never"),
        (_free_port(), [*CLIPPED, REPLICATED], str(root / "replicated-clipped"), "never"),
    ]
    mp.spawn(_ranks, args=(runs,), nprocs=WORLD, join=True)
    # The resumed run's directory is prepared here, between two spawns: inside one, rank 1 reads the
    # run directory (Trainer checks --resume before its rendezvous) while rank 0 may still be copying.
    _resume_copy(root / "sharded", 1, root / "resumed-2")
    mp.spawn(_ranks, args=([(_free_port(), SMALL, str(root / "resumed-2"), "must")],), nprocs=WORLD, join=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("pair", [("sharded", "replicated"), ("sharded-clipped", "replicated-clipped")])
def test_a_sharded_step_equals_the_replicated_step_on_the_same_ranks(two_rank_runs, pair):
    sharded, replicated = (two_rank_runs / name for name in pair)
    # Weights, BatchNorm statistics, the full proxies and every momentum buffer (the proxies'
    # gathered from the shards): the checkpoint of a sharded run has the replicated layout.
    _assert_all_close(_state(sharded, 1), _state(replicated, 1))
    # The epoch records are all-reduced: loss and accuracy are reported alike.
    records = [json.loads((run / "metrics.json").read_text())["history"][0] for run in (sharded, replicated)]
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], abs=1e-5)
    assert records[0]["train_accuracy"] == records[1]["train_accuracy"]


@pytest.mark.slow
def test_a_sharded_run_writes_the_full_proxy_matrix(two_rank_runs):
    sharded = two_rank_runs / "sharded"
    assert load_file(sharded / "proxies.safetensors")["proxies"].shape == (9, 16)
    meta = json.loads((sharded / "checkpoint.json").read_text())
    assert meta["head"] == "scalable_npt" and len(meta["class_names"]) == 9
    assert json.loads((sharded / "metrics.json").read_text())["global_step"] == STEPS


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_two_ranks_to_the_uninterrupted_weights(two_rank_runs):
    resumed = two_rank_runs / "resumed-2"
    assert json.loads((resumed / "metrics.json").read_text())["global_step"] == STEPS
    _assert_all_close(_weights(resumed), _weights(two_rank_runs / "sharded"))
    _assert_all_close(_state(resumed, STEPS), _state(two_rank_runs / "sharded", STEPS))


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_one_process(two_rank_runs, tmp_path):
    _resume_copy(two_rank_runs / "sharded", 1, tmp_path / "resumed-1")
    fit = train_from_config(load_config("synthetic-quick", SMALL), tmp_path / "resumed-1", resume="must")
    assert fit.resumed_from == 1 and [r["epoch"] for r in fit.history] == [1, 2, 3]
    assert load_file(fit.run_dir / "proxies.safetensors")["proxies"].shape == (9, 16)
