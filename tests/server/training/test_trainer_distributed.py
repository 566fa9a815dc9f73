"""torchrun + DDP on CPU (Gloo, loopback only): two ranks train, and one rank resumes their checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nptface.core.checkpoint_dirs import CheckpointDirs
from nptface.server.training.config import load_config
from nptface.server.training.trainer import train_from_config

SMALL = [
    "data.identities=8",
    "data.images_per_identity=8",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=16",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.epochs=2",
    "optim.batch_size=16",
    "optim.milestones=[1.0]",
    "optim.warmup_epochs=0.0",
    "log.progress=false",
    "log.every_steps=1",
    "checkpoint.every_steps=100",
    "checkpoint.keep=10",
    "device.cpu_threads=2",
    'eval.sets=[{kind="synthetic", name="heldout", identities=4, images_per_identity=3}]',
]


@pytest.mark.slow
def test_two_rank_run_completes_and_its_checkpoint_resumes_on_one_process(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nptface.cli",
        "train",
        "synthetic-quick",
        "--run-dir",
        str(run_dir),
    ]
    for override in SMALL:
        command += ["--set", override]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * 4  # 64 images / global batch 16 = 4 steps an epoch
    report = (run_dir / "report.md").read_text()
    assert "2 x cpu" in report
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "kind" not in r] == list(range(1, 9)), "rank 0 alone logs"

    # Point `latest` back at the end of epoch 1 and resume on a single process.
    CheckpointDirs(run_dir / "checkpoints").point_at("step-00000004")
    resumed = train_from_config(load_config("synthetic-quick", SMALL), run_dir, resume="must")
    assert resumed.resumed_from == 4
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 8
