"""The privacy and robustness tables are computed from the runs' histories as documented."""

from __future__ import annotations

from nptface.server.federation.config import FedConfig
from nptface.simulation.comparison import (
    privacy_table,
    robustness_configs,
    robustness_table,
    sharing_configs,
    summarise,
)
from nptface.simulation.config import Harness, SimulationConfig

ATTACKED = Harness(attack_linkage=True)


def _attacked(sharing: str = "public") -> SimulationConfig:
    return SimulationConfig(FedConfig(proxy_sharing=sharing), ATTACKED)


def _history(tar, attack=None):
    rounds = [{"round": 0, "client-domain/tar@far=1e-2": 0.3, "client-domain/accuracy": 0.8}]
    for i, (rows, rank1) in enumerate(attack or [], start=1):
        record = {"round": i, "attack/rows": float(rows), "attack/chance": 0.01, "rejected": 1}
        if rows:
            record["attack/rank1"] = rank1
        rounds.append(record)
    rounds[-1].update({"client-domain/tar@far=1e-2": tar, "client-domain/accuracy": 0.9})
    return rounds


def test_attack_rank1_is_pooled_over_rounds_weighted_by_rows():
    summary = summarise(_history(0.6, [(0, 0.0), (10, 1.0), (30, 0.5)]), _attacked("all"))
    assert summary["attack_rows"] == 40 and summary["attack_rank1"] == (10 + 15) / 40
    assert summary["rejected"] == 3 and summary["attack_per_round"] == [None, 1.0, 0.5]


def test_private_modes_are_held_to_chance_plus_5_and_2_points_of_tar():
    rows = {
        "all": summarise(_history(0.60, [(10, 0.9)]), _attacked("all")),
        "dp": summarise(_history(0.59, [(10, 0.10)]), _attacked("dp")),
        "none": summarise(_history(0.55, [(0, 0.0)]), _attacked("none")),
        "public": summarise(_history(0.61, [(0, 0.0)]), _attacked()),
    }
    table = privacy_table(rows).splitlines()
    assert "| reference |" in table[2]
    assert table[3].endswith("missed: attack > chance + 5 |")
    assert table[4].endswith("missed: TAR loss > 2 points |") and "no rows to link" in table[4]
    assert table[5].endswith("| met |")


def test_the_undefended_run_turns_every_defence_off_and_the_robust_ones_keep_them():
    configs = robustness_configs(SimulationConfig(FedConfig(out_dir="x")), "scale:0,flip:2", ["median"])
    clean, undefended, clean_robust, robust = configs.values()
    assert clean_robust.harness.poison == "" and clean_robust.fed.backbone_aggregation == "median"
    assert clean.harness.poison == "" and undefended.harness.poison == robust.harness.poison == "scale:0,flip:2"
    assert (
        undefended.fed.norm_screen,
        undefended.fed.row_norm_limit,
        undefended.fed.update_norm_limit,
        undefended.fed.backbone_aggregation,
    ) == (0.0, 0.0, 0.0, "fedavg")
    assert robust.fed.norm_screen > 0 and robust.fed.row_norm_limit > 0 and robust.fed.update_norm_limit > 0
    assert robust.fed.backbone_aggregation == "median"
    assert len({c.fed.out_dir for c in configs.values()}) == 4


def test_the_robustness_table_shows_each_run_against_the_clean_one():
    rows = {
        "clean": {
            "tar": 0.6,
            "accuracy": 0.9,
            "rejected": 0,
            "rolled_back": 0,
            "start_tar": 0.3,
            "start_accuracy": None,
        },
        "poisoned": {"tar": None, "accuracy": 0.85, "rejected": 4, "rolled_back": 1},
    }
    table = robustness_table(rows).splitlines()
    assert table[0] == (
        "| run | TAR@FAR=1e-2 | vs clean (points) | 10-fold acc | vs clean (points) | updates rejected "
        "| rounds rolled back |"
    )
    assert table[3] == "| poisoned | n/a | — | 85.00% | -5.00 | 4 | 1 |"
    assert table[-1] == "Server model before federation: TAR 30.00%, acc n/a."


def test_each_sharing_mode_runs_in_its_own_directory_under_the_attack_when_asked():
    configs = sharing_configs(SimulationConfig(FedConfig(out_dir="x")), ["all", "dp"], attack=True)
    assert [c.fed.proxy_sharing for c in configs.values()] == ["all", "dp"]
    assert [c.fed.out_dir for c in configs.values()] == ["x/sharing-all", "x/sharing-dp"]
    assert all(c.harness.attack_linkage for c in configs.values())
