"""The quickstart main job, shrunk to seconds: every promised file, honest numbers, re-runnable, stages in order."""

from __future__ import annotations

import json
import types

import pytest
import torch
from safetensors.torch import load_file

from nptface.core.checkpoint import load_backbone, load_proxies
from nptface.quickstart import QuickstartOptions, quickstart_config, run_quickstart, train_stage

TINY = (
    "data.identities=8",
    "data.images_per_identity=6",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=16",
    "head.params={k=3, delta=1.0, r=1.0}",
    "optim.epochs=2",
    "optim.batch_size=16",
    "optim.milestones=[1.5]",
    "optim.warmup_epochs=0.0",
    "log.progress=false",
    "checkpoint.every_steps=2",
    'eval.sets=[{kind="synthetic", name="heldout", identities=6, images_per_identity=4}]',
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = quickstart_config(TINY, name="tiny", runs_root=tmp_path_factory.mktemp("runs"))
    return config, train_stage(config)


def test_quickstart_writes_checkpoint_metrics_report_and_plots(tiny_run):
    _, result = tiny_run
    for name in (
        "model.safetensors",
        "proxies.safetensors",
        "checkpoint.json",
        "metrics.json",
        "metrics.jsonl",
        "config.json",
        "report.md",
        "roc.png",
        "training.png",
    ):
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


def test_quickstart_report_puts_the_untrained_baseline_between_the_summary_and_the_results(tiny_run):
    _, result = tiny_run
    report = (result.run_dir / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("#")]
    assert headings == [
        "# nptface training run: tiny",
        "## Before training (same architecture and seed, random weights)",
        "## Verification on `heldout` (cosine similarity)",
        "## Training",
    ]
    untrained = result.untrained["heldout"].verification.accuracy.mean
    trained = result.trained["heldout"].verification.accuracy.mean
    assert (
        f"`heldout`: 10-fold accuracy (cosine) {untrained * 100:.2f}% untrained vs {trained * 100:.2f}% trained"
        in report
    )
    assert report.count("## Before training") == 1 and report.endswith("![training](training.png)\n")


def test_rerunning_a_finished_quickstart_keeps_its_weights(tiny_run):
    config, result = tiny_run
    before = load_file(result.run_dir / "model.safetensors")
    again = train_stage(config)
    assert again.fit.resumed_from == result.fit.history[-1]["step"]
    after = load_file(result.run_dir / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (result.run_dir / "report.md").read_text().count("## Before training") == 1


@pytest.fixture
def fake_later_stages(monkeypatch):
    """The federated and export stages record what they were given instead of running (minutes each)."""
    from nptface.edge_export import pipeline
    from nptface.simulation import experiment

    calls: dict[str, dict] = {}

    def run_experiment(config):
        fed = config.fed
        calls["federated"] = {"server_run": fed.server_run, "out_dir": fed.out_dir, "rounds": fed.num_rounds}
        return types.SimpleNamespace(table="(federated table)")

    def export_run(run_dir, out, **kwargs):
        calls["export"] = {"run_dir": run_dir, "out": out, **kwargs}
        return types.SimpleNamespace(table="(export table)", rejected=[], shipped=[object()], bundle_dir=out)

    monkeypatch.setattr(experiment, "run_experiment", run_experiment)
    monkeypatch.setattr(pipeline, "export_run", export_run)
    return calls


def test_quickstart_fine_tunes_the_trained_run_then_exports_the_federated_one(tiny_run, tmp_path, fake_later_stages):
    config, first = tiny_run
    runs = first.run_dir.parent
    options = QuickstartOptions(
        runs=runs,
        bundles=tmp_path / "bundles",
        name="tiny",
        overrides=TINY,
        command=("nptface", "quickstart", "--name", "tiny"),
    )
    said: list[str] = []
    result = run_quickstart(options, say=said.append)
    assert result.training.run_dir == first.run_dir and result.federated_dir == runs / "tiny-federated"
    federated = fake_later_stages["federated"]
    assert (federated["server_run"], federated["out_dir"], federated["rounds"]) == (
        str(first.run_dir),
        str(runs / "tiny-federated"),
        5,
    )
    export = fake_later_stages["export"]
    assert export["run_dir"] == runs / "tiny-federated" and export["out"] == tmp_path / "bundles" / "tiny"
    assert export["options"].allow_partial and export["command"] == ["nptface", "quickstart", "--name", "tiny"]
    printed = "\n".join(said)
    assert printed.index("after NPT training") < printed.index("(federated table)") < printed.index("(export table)")
    assert f"nptface demo serve --bundle {(tmp_path / 'bundles' / 'tiny').as_posix()}" in said[-1]


def test_quickstart_without_the_federated_stage_exports_the_trained_run(tiny_run, tmp_path, fake_later_stages):
    _, first = tiny_run
    options = QuickstartOptions(
        runs=first.run_dir.parent, bundles=tmp_path / "bundles", name="tiny", overrides=TINY, federated=False
    )
    result = run_quickstart(options, say=lambda line: None)
    assert "federated" not in fake_later_stages and result.federated_dir is None
    assert fake_later_stages["export"]["run_dir"] == first.run_dir


def test_quickstart_without_export_stops_after_training(tiny_run, tmp_path, fake_later_stages):
    _, first = tiny_run
    options = QuickstartOptions(
        runs=first.run_dir.parent,
        bundles=tmp_path / "bundles",
        name="tiny",
        overrides=TINY,
        federated=False,
        export=False,
    )
    assert run_quickstart(options, say=lambda line: None).export is None
    assert not fake_later_stages
