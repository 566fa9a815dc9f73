"""The one-owner benchmark: each method's settings, and the command end to end on a tiny federation."""

from __future__ import annotations

import json

import pytest
import torch

from nptface.core.checkpoint import load_backbone
from nptface.server.federation.state import latest_state
from nptface.simulation import one_owner
from nptface.simulation.one_owner import METHODS, METRICS, Bench


def test_each_method_is_the_one_owner_setting_with_its_own_sharing_and_the_harness_drops_devices():
    bench = Bench(server_run="runs/quickstart", out_dir="out", devices=40, settings={"local-epochs": 3})

    shared, backbone_only = bench.config("shared-bank", 2), bench.config("backbone-only", 2)

    assert shared.fed.client.partition == "one-owner" and shared.fed.client.num_clients == 40
    assert shared.fed.proxy_sharing == "public" and shared.fed.client.lr > 0
    assert (shared.fed.seed, shared.fed.client.partition_seed, shared.fed.client.local_epochs) == (2, 2, 3)
    assert shared.fed.fraction_train == 0.15 and shared.harness.failure_rate == 0.1
    assert backbone_only.fed.proxy_sharing == "local-heads" and backbone_only.fed.client.lr == 0.0
    assert [bench.config(m, 0).fed.proxy_sharing for m in ("none", "dp", "local-heads")] == [
        "none",
        "dp",
        "local-heads",
    ]
    assert (
        shared.fed.client.plan().clients[5].identities
        != bench.config("shared-bank", 3).fed.client.plan().clients[5].identities
    )
    with pytest.raises(ValueError, match="expected some of shared-bank"):
        Bench(server_run="r", out_dir="o", methods=("fedsgd",))


def test_fedprox_is_the_shared_bank_with_a_proximal_term_and_only_runs_when_it_can_act():
    bench = Bench(server_run="r", out_dir="o", methods=("shared-bank", "fedprox"), settings={"local-epochs": 2})
    fedprox, shared = bench.config("fedprox", 0), bench.config("shared-bank", 0)

    assert fedprox.fed.client.fedprox_mu == one_owner.FEDPROX_MU > 0 and shared.fed.client.fedprox_mu == 0.0
    assert fedprox.fed.proxy_sharing == shared.fed.proxy_sharing == "public"
    assert fedprox.to_run_config() | {"fedprox-mu": 0.0, "out-dir": ""} == shared.to_run_config() | {"out-dir": ""}
    assert bench.label("fedprox") == "shared bank + FedProx (mu=1)"
    assert "fedprox" not in Bench(server_run="r", out_dir="o").methods, "opt-in: a default run has one local step"
    with pytest.raises(ValueError, match="method fedprox: with local-epochs=1.* take one local step per round"):
        Bench(server_run="r", out_dir="o", methods=("fedprox",), settings={"batch-size": 8})
    assert Bench(server_run="r", out_dir="o", methods=("fedprox",), settings={"batch-size": 1}).methods
    with pytest.raises(ValueError, match="fedprox-mu must be a finite number >= 0"):
        Bench(server_run="r", out_dir="o", methods=("fedprox",), fedprox_mu=-1.0, settings={"local-epochs": 2})


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two federations (Ray starts twice); about 4 minutes on a 2-core machine at load 20
def test_the_command_runs_two_methods_and_writes_the_table_curves_and_memory(tiny_run, tmp_path, monkeypatch):
    args = [
        *("--server-run", str(tiny_run), "--out", str(tmp_path)),
        *("--devices", "6", "--rounds", "2", "--seeds", "1", "--methods", "shared-bank,none"),
        *("--unseen-identities", "30", "--set", "batch-size=8", "--set", "k=3", "--set", "bn-mode=frozen"),
        *("--interpolate", "0.5"),
    ]
    summary = one_owner.main(args)

    table = (tmp_path / "one-owner.md").read_text()
    assert "2 rounds, 1 seed(s), batch-size=8, bn-mode=frozen, k=3" in table.splitlines()[0]
    assert f"| {METHODS['none'].label}, mixed with the server model at alpha=0.5 |" in table
    server_model, _ = load_backbone(tiny_run)
    frozen = latest_state(tmp_path / "seed-0" / "shared-bank").backbone
    statistics = [k for k in frozen if "running_" in k]
    assert statistics and all(
        torch.allclose(frozen[k], server_model.state_dict()[k], rtol=1e-5, atol=1e-7) for k in statistics
    ), "bn-mode=frozen reaches the devices: the server's BatchNorm statistics come back (up to averaging's rounding)"
    for row in (one_owner.SERVER_MODEL, METHODS["shared-bank"].label, METHODS["none"].label):
        assert f"| {row} |" in table
    written = json.loads((tmp_path / "one-owner.json").read_text())
    assert (tmp_path / "one-owner.png").stat().st_size > 0
    for method in ("shared-bank", "none"):
        final = written["final"][method]
        assert set(final) == set(METRICS)
        assert all(0.0 <= final[k]["mean"] <= 1.0 and final[k]["std"] == 0.0 for k in METRICS)
        assert list(written["curves"][method]) == ["0", "1", "2"]
        assert written["peak_pss_gib"][method] > 0.1
        result = json.loads((tmp_path / "seed-0" / method / "result.json").read_text())
        assert result["final"]["one-owner/counts/owners"] == 6.0
        assert result["final"]["one-owner/counts/impostor-pairs"] >= 1000  # FAR = 1e-3 is observable
        assert result["final"]["one-owner/counts/non-mated-searches"] >= 100  # FPIR = 1e-2 is observable

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished (method, seed) must be read back, not trained again")

    monkeypatch.setattr("nptface.simulation.run.simulate", no_training)
    assert one_owner.main(args)["table"] == summary["table"]


def test_the_partition_setting_is_checked_when_the_plan_is_built():
    from nptface.client.protocol import ClientSettings

    assert len(ClientSettings(partition="one-owner", num_clients=5).plan().clients) == 5
    with pytest.raises(ValueError, match="partition must be one of identities, one-owner"):
        ClientSettings(partition="two-owners").plan()
    with pytest.raises(ValueError, match="needs source 'synthetic'"):
        ClientSettings(partition="one-owner", source="/data/faces").plan()


def test_a_finished_run_still_matches_after_a_setting_is_added_at_its_default():
    now = Bench(server_run="r", out_dir="o").config("shared-bank", 0).to_run_config()
    before_bn_mode = {k: v for k, v in now.items() if k != "bn-mode"}

    assert one_owner.same_settings(before_bn_mode, now)
    assert not one_owner.same_settings(before_bn_mode, {**now, "bn-mode": "frozen"})
    assert not one_owner.same_settings({**now, "lr": 0.5}, now)
    assert not one_owner.same_settings({**now, "retired-key": 1}, now)


def test_mixing_weights_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"mixing weight must be in \(0, 1\), got \[0.5, 1.0\]"):
        Bench(server_run="r", out_dir="o", interpolate=(0.5, 1.0))


def test_interpolate_takes_comma_separated_numbers_and_names_a_typo(capsys):
    assert one_owner.mixing_weights("0.25, 0.5") == (0.25, 0.5)
    parser = one_owner.argparse.ArgumentParser()
    one_owner.configure_parser(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "--interpolate", "0.25;0.5"])
    assert "--interpolate: expected comma-separated numbers in (0, 1), e.g. 0.25,0.5; got '0.25;0.5'" in (
        capsys.readouterr().err
    )
