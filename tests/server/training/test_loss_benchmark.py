"""The loss benchmark: every head trains under one budget, finished runs are reused, the table reads them all."""

from __future__ import annotations

import pytest

from nptface.server.training import loss_benchmark as bench

TINY = [
    "data.identities=12",
    "data.images_per_identity=4",
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=16",
    "optim.epochs=1",
    "optim.batch_size=16",
    "optim.milestones=[]",
    "optim.warmup_epochs=0.0",
    "optim.lr=0.01",
    "device.cpu_threads=1",
    "log.every_steps=1",
    'eval.sets=[{kind="synthetic", name="heldout", identities=6, images_per_identity=3}]',
]


def test_the_scale_comparison_has_the_shipped_and_exact_npt_and_the_margin_softmax_heads():
    assert set(bench.SCALE_VARIANTS) == {"npt-semihard", "npt-k6-exact", "arcface", "cosface", "partialfc-arcface"}
    assert 'negatives="semihard"' in bench.SCALE_VARIANTS["npt-semihard"][1]
    assert 'negatives="hardest"' in bench.SCALE_VARIANTS["npt-k6-exact"][1]
    assert "data.identities=10000" in bench.SCALE_BUDGET and "data.images_per_identity=10" in bench.SCALE_BUDGET


@pytest.mark.timeout(180)
def test_a_resumed_benchmark_reuses_finished_runs_and_tabulates_every_one(tmp_path):
    heads = {name: bench.SCALE_VARIANTS[name] for name in ("npt-semihard", "partialfc-arcface")}
    first = bench.run_benchmark(heads, [0], tmp_path / "scale", TINY)
    metrics = tmp_path / "scale" / "npt-semihard-seed0" / "metrics.json"
    written = metrics.stat().st_mtime_ns
    again = bench.run_benchmark({"npt-semihard": heads["npt-semihard"]}, [0], tmp_path / "scale", TINY)
    assert metrics.stat().st_mtime_ns == written, "a finished run with the same config is not trained again"
    assert again[0].accuracy == first[0].accuracy
    everything = bench.finished_outcomes(bench.SCALE_VARIANTS, tmp_path / "scale", TINY)
    assert [(o.variant, o.seed) for o in everything] == [("npt-semihard", 0), ("partialfc-arcface", 0)]
    assert all(o.impostor_pairs > 0 and o.batch_spread is not None for o in everything)
    table = bench.summarise(everything, "tiny", tmp_path, "scale")
    assert "`partialfc-arcface`" in table and "thr@FAR=1e-2" in table and (tmp_path / "scale.json").is_file()
    assert bench.finished_outcomes(bench.SCALE_VARIANTS, tmp_path / "scale", [*TINY, "optim.lr=0.05"]) == [], (
        "runs of another budget are not mixed into the table"
    )


@pytest.mark.timeout(240)
def test_equal_tuning_gives_every_head_the_same_trials_and_seeds_only_the_best_learning_rate(tmp_path):
    heads = {name: bench.SCALE_VARIANTS[name] for name in ("npt-semihard", "cosface")}
    budget = [entry for entry in TINY if not entry.startswith("optim.lr=")]
    tuned = bench.run_tuned(heads, ["0.01", "0.001"], [0, 1], tmp_path, budget)
    assert {variant: sorted(by_lr) for variant, by_lr in tuned.trials.items()} == {
        "npt-semihard": ["0.001", "0.01"],
        "cosface": ["0.001", "0.01"],
    }
    for variant, lr in tuned.best_lr.items():
        best = tuned.trials[variant][lr]
        assert all(bench._tuning_key(best) >= bench._tuning_key(o) for o in tuned.trials[variant].values())
        assert (bench.lr_dir(tmp_path, lr) / f"{variant}-seed1" / "metrics.json").is_file(), "seed 1 at the best lr"
        other = next(x for x in ("0.01", "0.001") if x != lr)
        assert not (bench.lr_dir(tmp_path, other) / f"{variant}-seed1").exists(), "no extra seeds at the other lr"
    assert sorted((o.variant, o.seed) for o in tuned.outcomes) == sorted(
        (f"{variant} @ lr {lr}", seed) for variant, lr in tuned.best_lr.items() for seed in (0, 1)
    )
    table = bench.summarise_tuning(tuned, tmp_path, "scale-tuning")
    assert "lr 0.01" in table and "lr 0.001" in table and table.count("**") == 2 * len(heads)
