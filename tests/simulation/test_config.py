"""Simulation settings: the production config plus the harness, in one --set namespace."""

from __future__ import annotations

import pytest

from nptface.server.federation.config import FedConfig, FedConfigError
from nptface.simulation.config import Harness, SimulationConfig


def test_harness_keys_go_to_the_harness_and_the_rest_to_the_production_config():
    config = SimulationConfig.from_run_config(
        {
            "num-rounds": 3,
            "lr": 1,
            "failure-rate": 0,
            "poison": "flip:2",
            "attack-linkage": True,
            "slow-partition": 0,
            "slow-seconds": 5,
        }
    )
    assert config.fed == FedConfig.from_run_config({"num-rounds": 3, "lr": 1.0})
    assert config.harness == Harness(poison="flip:2", attack_linkage=True, slow_partition=0, slow_seconds=5.0)
    assert SimulationConfig.from_run_config(config.to_run_config()) == config


def test_harness_keys_are_not_production_settings():
    with pytest.raises(FedConfigError, match="unknown run-config key 'poison'"):
        FedConfig.from_run_config({"poison": "scale:0"})
    assert "poison" not in FedConfig().to_run_config() and "failure-rate" not in FedConfig().to_run_config()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"failure-rate": 1.0}, "failure-rate must be in"),
        ({"failure-rate": "high"}, "'failure-rate' must be float"),
        ({"slow-seconds": -1.0}, "slow-seconds must be >= 0"),
        ({"poison": "boost:1"}, "'boost:1'"),
        ({"num-rounds": 1, "slow-partition": 0, "slow-seconds": 9.0}, "num-rounds must be > 1"),
        ({"num-round": 3}, "unknown run-config key 'num-round'"),
    ],
)
def test_bad_settings_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig.from_run_config(values)
