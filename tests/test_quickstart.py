"""The quickstart main job, shrunk to seconds: every promised file, honest numbers, re-runnable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nptface.core.checkpoint import load_backbone, load_proxies
from nptface.quickstart import quickstart_config, run_quickstart

TINY = [
    "data.identities=8", "data.images_per_identity=6", "model.width=0.25", "model.input_size=32",
    "model.embedding_dim=16", 'head.params={k=3, delta=1.0, r=1.0}', "optim.epochs=2", "optim.batch_size=16",
    "optim.milestones=[1.5]", "optim.warmup_epochs=0.0", "log.progress=false", "checkpoint.every_steps=2",
    'eval.sets=[{kind="synthetic", name="heldout", identities=6, images_per_identity=4}]',
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = quickstart_config(TINY, name="tiny", runs_root=tmp_path_factory.mktemp("runs"))
    return config, run_quickstart(config)


def test_quickstart_writes_checkpoint_metrics_report_and_plots(tiny_run):
    _, result = tiny_run
    for name in ("model.safetensors", "proxies.safetensors", "checkpoint.json", "metrics.json", "metrics.jsonl",
                 "config.json", "report.md", "roc.png", "training.png"):
        assert (result.run_dir / name).is_file(), name
    assert not [p.name for p in result.run_dir.iterdir() if p.name.startswith(".")]


def test_quickstart_checkpoint_reloads_with_one_proxy_per_training_identity(tiny_run):
    config, result = tiny_run
    model, meta = load_backbone(result.run_dir)
    assert model.config.input_size == 32 and model.config.width == 0.25
    assert load_proxies(result.run_dir).shape == (8, 16)
    assert len(meta.class_names) == 8 and meta.head == "npt"
    assert meta.extra["config_hash"] == config.hash()


def test_quickstart_metrics_report_untrained_and_trained_in_cosine(tiny_run):
    _, result = tiny_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for evaluation in (metrics["untrained"]["heldout"], metrics["final"]["heldout"]):
        verification = evaluation["verification"]
        assert verification["metric"] == "cosine"
        assert 0.0 <= verification["accuracy"]["mean"] <= 1.0
        assert verification["n_genuine"] == 6 * 6  # 6 identities x C(4, 2) genuine pairs
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    report = (result.run_dir / "report.md").read_text()
    assert "cosine" in report and "Before training" in report


def test_rerunning_a_finished_quickstart_keeps_its_weights(tiny_run):
    config, result = tiny_run
    before = load_file(result.run_dir / "model.safetensors")
    again = run_quickstart(config)
    assert again.fit.resumed_from == result.fit.history[-1]["step"]
    after = load_file(result.run_dir / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
