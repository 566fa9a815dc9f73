"""The quickstart main job, shrunk to seconds: every promised file, honest numbers."""

from __future__ import annotations

import json

import pytest

from nptface.core.checkpoint import load_backbone, load_proxies
from nptface.core.mobilefacenet import MobileFaceNetConfig
from nptface.server.quickstart import QuickstartConfig, run_quickstart
from nptface.server.train import OptimConfig


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = QuickstartConfig(
        name="tiny",
        train_identities=8,
        images_per_identity=6,
        heldout_identities=6,
        heldout_images_per_identity=4,
        model=MobileFaceNetConfig(embedding_dim=16, width=0.25, input_size=32),
        head_hparams={"k": 3, "delta": 1.0, "r": 1.0},
        optim=OptimConfig(epochs=2, batch_size=16, milestones=(0.5,)),
    )
    return config, run_quickstart(config, tmp_path_factory.mktemp("runs"), progress=False)


def test_quickstart_writes_checkpoint_metrics_report_and_plots(tiny_run):
    _, result = tiny_run
    for name in ("model.safetensors", "proxies.safetensors", "checkpoint.json", "metrics.json", "report.md",
                 "roc.png", "training.png"):
        assert (result.run_dir / name).is_file(), name
    assert not [p.name for p in result.run_dir.iterdir() if p.name.startswith(".")]


def test_quickstart_checkpoint_reloads_with_one_proxy_per_training_identity(tiny_run):
    config, result = tiny_run
    model, meta = load_backbone(result.run_dir)
    assert model.config == config.model
    assert load_proxies(result.run_dir).shape == (config.train_identities, 16)
    assert len(meta.class_names) == config.train_identities and meta.head == "npt"


def test_quickstart_metrics_report_untrained_and_trained_in_cosine(tiny_run):
    _, result = tiny_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for key in ("untrained", "trained"):
        verification = metrics[key]["verification"]
        assert verification["metric"] == "cosine"
        assert 0.0 <= verification["accuracy"]["mean"] <= 1.0
        assert verification["n_genuine"] == 6 * 6  # 6 identities x C(4, 2) genuine pairs
    assert len(metrics["history"]) == 2
    assert metrics["trained"]["verification"]["accuracy"]["mean"] == result.trained.verification.accuracy.mean
    report = (result.run_dir / "report.md").read_text()
    assert "cosine" in report and "Untrained" in report
