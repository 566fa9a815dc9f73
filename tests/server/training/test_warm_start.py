"""Fine-tuning from a trained run (model.init / --init-from): backbone loaded, proxies reused or imprinted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nptface.core.checkpoint import load_backbone, load_meta, load_proxies
from nptface.core.embedding import embed_dataset
from nptface.server.training.config import ConfigError, load_config
from nptface.server.training.trainer import KILL_AT_STEP_VARIABLE, Trainer, train_from_config

# The tiny run's architecture and data (tests/conftest.py TINY_RUN): the same 40 synthetic identities.
SAME_DATA = [
    "data.identities=40",
    "data.images_per_identity=10",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=32",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.batch_size=32",
    "optim.epochs=2",
    "optim.milestones=[1.0]",
    "log.progress=false",
    "device.cpu_threads=1",
    "eval.sets=[]",
]
OTHER_IDENTITIES = [*SAME_DATA, "data.identities=12", "data.images_per_identity=6"]


def _config(tmp_path, overrides, init):
    return load_config(
        "synthetic-quick",
        [*overrides, f'run.output_dir="{tmp_path.as_posix()}"', f"model.init={json.dumps(str(init))}"],
    )


def test_the_same_identities_reuse_the_proxies_bitwise(tiny_run, tmp_path):
    trainer = Trainer(_config(tmp_path, SAME_DATA, tiny_run / "model.safetensors"), tmp_path / "run", "never")
    assert torch.equal(trainer.head.proxies.detach(), load_proxies(tiny_run))
    stored = load_file(tiny_run / "model.safetensors")
    for name, tensor in trainer.backbone.state_dict().items():
        assert torch.equal(tensor, stored[name]), name


def test_other_identities_get_proxies_imprinted_as_normalised_class_means(tiny_run, tmp_path):
    trainer = Trainer(_config(tmp_path, OTHER_IDENTITIES, tiny_run), tmp_path / "run", "never")
    source, _ = load_backbone(tiny_run)
    embeddings = embed_dataset(source, trainer.train_set)
    labels = np.asarray(trainer.train_set.labels)
    means = np.stack([embeddings[labels == c].mean(axis=0) for c in range(trainer.train_set.num_classes)])
    expected = means / np.linalg.norm(means, axis=1, keepdims=True)
    proxies = trainer.head.proxies.detach().numpy()
    assert proxies.shape == (12, 32)
    np.testing.assert_allclose(proxies, expected, atol=1e-5)


def test_any_head_starts_from_the_loaded_proxies(tiny_run, tmp_path):
    arcface = [o for o in SAME_DATA if not o.startswith("head.params")] + ['head.name="arcface"']
    config = _config(tmp_path, arcface, tiny_run)
    trainer = Trainer(config, tmp_path / "run", "never")
    assert trainer.head.name == "arcface" and torch.equal(trainer.head.proxies.detach(), load_proxies(tiny_run))


def test_an_init_of_another_architecture_is_a_config_error_naming_model_init(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.init: .*width 0\.25 there, 0\.5 here"):
        _config(tmp_path, [*SAME_DATA, "model.width=0.5"], tiny_run)


def test_an_init_that_is_not_a_run_is_a_config_error_naming_model_init(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.init: .*neither a run directory nor a \.safetensors file"):
        _config(tmp_path, SAME_DATA, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"model\.init: .*model\.safetensors not found"):
        _config(tmp_path, SAME_DATA, tmp_path / "empty")


def test_the_init_is_part_of_the_config_hash(tiny_run, tmp_path):
    scratch = load_config("synthetic-quick", SAME_DATA)
    from_tiny = _config(tmp_path, SAME_DATA, tiny_run)
    from_file = _config(tmp_path, SAME_DATA, tiny_run / "model.safetensors")
    assert len({scratch.hash(), from_tiny.hash(), from_file.hash()}) == 3


@pytest.mark.slow
def test_a_fine_tuning_run_killed_and_resumed_ends_as_an_uninterrupted_one(tiny_run, tmp_path):
    overrides = [*OTHER_IDENTITIES, "checkpoint.every_steps=1", f'run.output_dir="{tmp_path.as_posix()}"']
    reference = train_from_config(
        _config(tmp_path, OTHER_IDENTITIES + ["checkpoint.every_steps=1"], tiny_run), tmp_path / "uninterrupted"
    )
    interrupted = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "nptface.cli",
        "train",
        "synthetic-quick",
        "--run-dir",
        str(interrupted),
        "--init-from",
        str(tiny_run),
    ]
    for override in overrides:
        command += ["--set", override]
    killed = subprocess.run(command, env={**os.environ, KILL_AT_STEP_VARIABLE: "3"}, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    resumed = train_from_config(
        _config(tmp_path, OTHER_IDENTITIES + ["checkpoint.every_steps=1"], tiny_run), interrupted, resume="must"
    )
    assert resumed.resumed_from == 3
    for name in ("model.safetensors", "proxies.safetensors"):
        a, b = load_file(reference.run_dir / name), load_file(interrupted / name)
        assert all(torch.equal(a[key], b[key]) for key in a), name
    record = load_meta(interrupted).extra["init"]
    assert record["path"] == str(tiny_run) and record["proxies"] == "imprinted" and len(record["model_sha256"]) == 64
