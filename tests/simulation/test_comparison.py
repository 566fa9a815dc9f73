"""The privacy and robustness tables are computed from the runs' histories as documented."""

from __future__ import annotations

from nptface.server.federation.config import FedConfig
from nptface.simulation.comparison import privacy_table, robustness_configs, summarise


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
    config = FedConfig(attack_linkage=True, proxy_sharing="all")
    summary = summarise(_history(0.6, [(0, 0.0), (10, 1.0), (30, 0.5)]), config)
    assert summary["attack_rows"] == 40 and summary["attack_rank1"] == (10 + 15) / 40
    assert summary["rejected"] == 3 and summary["attack_per_round"] == [None, 1.0, 0.5]


def test_private_modes_are_held_to_chance_plus_5_and_2_points_of_tar():
    attack = FedConfig(attack_linkage=True)
    rows = {"all": summarise(_history(0.60, [(10, 0.9)]), FedConfig(attack_linkage=True, proxy_sharing="all")),
            "dp": summarise(_history(0.59, [(10, 0.10)]), FedConfig(attack_linkage=True, proxy_sharing="dp")),
            "none": summarise(_history(0.55, [(0, 0.0)]), FedConfig(attack_linkage=True, proxy_sharing="none")),
            "public": summarise(_history(0.61, [(0, 0.0)]), attack)}
    table = privacy_table(rows).splitlines()
    assert "| reference |" in table[2]
    assert table[3].endswith("missed: attack > chance + 5 |")
    assert table[4].endswith("missed: TAR loss > 2 points |") and "no rows to link" in table[4]
    assert table[5].endswith("| met |")


def test_the_undefended_run_turns_every_defence_off_and_the_robust_ones_keep_them():
    configs = robustness_configs(FedConfig(out_dir="x"), "scale:0,flip:2", ["median"])
    clean, undefended, clean_robust, robust = configs.values()
    assert clean_robust.client.poison == "" and clean_robust.backbone_aggregation == "median"
    assert clean.client.poison == "" and undefended.client.poison == robust.client.poison == "scale:0,flip:2"
    assert (undefended.norm_screen, undefended.row_norm_limit, undefended.backbone_aggregation) == (0.0, 0.0, "fedavg")
    assert robust.norm_screen > 0 and robust.row_norm_limit > 0 and robust.backbone_aggregation == "median"
    assert len({c.out_dir for c in configs.values()}) == 4
