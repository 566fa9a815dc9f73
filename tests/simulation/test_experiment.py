"""fed simulate's report: the centralised baseline is a run directory, and unmeasured metrics never lose the report."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def _unmeasured_history() -> list[dict]:
    """Rounds 0 and 1 of a run whose evaluation sets could not support TAR@FAR=1e-2 (an older
    run directory may still hold NaN in its round-0 record)."""
    metrics = {"client-domain/accuracy": 0.6, "server-domain/accuracy": 0.7, "min_sq_distance": 1.0}
    return [
        {"round": 0, **metrics, "client-domain/tar@far=1e-2": float("nan"), "server-domain/tar@far=1e-2": None},
        {
            "round": 1,
            **metrics,
            "client-domain/tar@far=1e-2": None,
            "server-domain/tar@far=1e-2": None,
            "clients-local/accuracy": None,
        },
    ]


def test_unmeasured_metrics_are_null_in_results_json_and_n_a_in_the_report(tmp_path, monkeypatch):
    import json

    import numpy as np

    from nptface.server.federation.proxy_bank import ProxyBank
    from nptface.server.federation.state import FedState, save_state
    from nptface.simulation import run
    from nptface.simulation.config import SimulationConfig
    from nptface.simulation.experiment import run_experiment

    def finished_run(config, cpus_per_client, **options):
        bank = ProxyBank.from_rows(["a", "b"], np.eye(2, dtype=np.float32), public=True)
        save_state(Path(config.fed.out_dir), FedState(1, {}, bank, {}, _unmeasured_history(), "hash"))
        return 0.0

    monkeypatch.setattr(run, "simulate", finished_run)
    config = SimulationConfig.from_run_config({"out-dir": str(tmp_path), **SMALL})
    result = run_experiment(config, baselines=False)
    saved = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert saved["methods"]["server model, no fine-tuning"]["client-domain/tar@far=1e-2"] is None
    assert saved["history"][0]["client-domain/tar@far=1e-2"] is None and saved["recovered_share"] is None
    assert "n/a" in (tmp_path / "report.md").read_text() and (tmp_path / "federated.png").is_file()
    assert result.rows["federated, shared proxy bank"]["client-domain/accuracy"] == 0.6


def test_with_final_mix_the_table_scores_the_exported_model_not_the_last_round(tiny_run, tmp_path, monkeypatch):
    import shutil

    import numpy as np

    from nptface.server.federation.evaluation import central_eval_sets, evaluate_backbone
    from nptface.server.federation.proxy_bank import ProxyBank
    from nptface.server.federation.state import FedState, save_state
    from nptface.simulation import run
    from nptface.simulation.config import SimulationConfig
    from nptface.simulation.experiment import run_experiment

    def finished_run(config, cpus_per_client, **options):  # the exported (mixed) model: here the server's own
        out = Path(config.fed.out_dir)
        bank = ProxyBank.from_rows(["a", "b"], np.eye(2, dtype=np.float32), public=True)
        save_state(out, FedState(1, {}, bank, {}, _unmeasured_history(), "hash"))
        for name in ("model.safetensors", "proxies.safetensors", "checkpoint.json"):
            shutil.copy(tiny_run / name, out / name)
        return 0.0

    monkeypatch.setattr(run, "simulate", finished_run)
    values = {"server-run": str(tiny_run), "out-dir": str(tmp_path), **SMALL, "final-mix": 0.5}
    config = SimulationConfig.from_run_config(values)
    result = run_experiment(config, baselines=False)
    exported = result.rows["federated, shared proxy bank, exported (final-mix 0.5)"]
    model, _ = load_backbone(tiny_run)
    expected = evaluate_backbone(model, central_eval_sets(config.fed, model.config.input_size))
    assert exported["client-domain/accuracy"] == pytest.approx(expected["client-domain/accuracy"])
    assert exported["client-domain/accuracy"] != 0.6, "not the last round's record"
    assert exported["clients-local/accuracy"] is None, "the clients never evaluated the mixed model"
    assert result.rows["federated, shared proxy bank, last round (unmixed)"]["client-domain/accuracy"] == 0.6
    assert "exported (final-mix 0.5)" in (tmp_path / "report.md").read_text()
