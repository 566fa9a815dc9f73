"""The centralised fine-tuning baseline of fed simulate saves its model as a run directory."""

from __future__ import annotations

import torch

from nptface.core.checkpoint import load_backbone, load_meta, load_proxies
from nptface.server.federation.config import FedConfig
from nptface.simulation.experiment import centralised_baseline

SMALL = {
    "central-eval-identities": 20,
    "central-eval-images": 4,
    "num-clients": 2,
    "client-identities": 6,
    "images-per-identity": 4,
    "few-shot-share": 0.0,
    "batch-size": 8,
    "k": 3,
    "eval-images": 2,
    "num-rounds": 1,
}


def test_the_centralised_baseline_saves_a_loadable_run(tiny_run, tmp_path):
    config = FedConfig.from_run_config({"server-run": str(tiny_run), "out-dir": str(tmp_path), **SMALL})
    metrics = centralised_baseline(config, tmp_path / "baseline-centralised")
    assert "client-domain/accuracy" in metrics
    model, meta = load_backbone(tmp_path / "baseline-centralised")
    server, _ = load_backbone(tiny_run)
    assert model.config == server.config
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), server.state_dict().values()))
    proxies = load_proxies(tmp_path / "baseline-centralised")
    assert proxies.shape == (len(meta.class_names), 32) and len(meta.class_names) == 6
    assert torch.allclose(proxies.norm(dim=1), torch.ones(6), atol=1e-5)
    assert load_meta(tmp_path / "baseline-centralised").extra["training_data"]["kind"] == "synthetic"
