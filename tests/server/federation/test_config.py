"""Federated settings: one kebab-case namespace shared by pyproject, `flwr run` and `nptface fed simulate`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nptface.server.federation.config import FedConfig, FedConfigError

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_pyproject_run_config_lists_every_setting_with_its_default():
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == FedConfig().to_run_config()
    assert FedConfig.from_run_config(declared) == FedConfig()


def test_keys_are_routed_to_server_and_client_settings():
    config = FedConfig.from_run_config({"num-rounds": 3, "local-epochs": 2, "lr": 1, "proxy-sharing": "local-heads"})
    assert config.num_rounds == 3 and config.client.local_epochs == 2 and config.client.lr == 1.0
    assert config.proxy_sharing == "local-heads"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num-round": 3}, "unknown run-config key 'num-round'"),
        ({"num-rounds": "3"}, "'num-rounds' must be int"),
        ({"spread-freeze-public": 1}, "'spread-freeze-public' must be bool"),
        ({"proxy-sharing": "everything"}, "proxy-sharing must be one of"),
        ({"failure-rate": 0.5}, "unknown run-config key 'failure-rate'"),  # a simulation harness key, never production
        ({"fedprox-mu": -0.1}, r"fedprox-mu must be a finite number >= 0 .* got -0.1"),
        ({"fedprox-mu": float("nan")}, "fedprox-mu must be a finite number >= 0 .* got nan"),
        ({"fedprox-mu": float("inf")}, "fedprox-mu must be a finite number >= 0 .* got inf"),
        ({"fedprox-mu": "0.1"}, "'fedprox-mu' must be float"),
        ({"final-mix": 0.0}, r"final-mix must be in \(0, 1\] .* got 0.0"),
        ({"final-mix": 1.5}, r"final-mix must be in \(0, 1\] .* got 1.5"),
        ({"bn-mode": "fixed"}, "bn-mode must be one of train, frozen, got 'fixed'"),
    ],
)
def test_bad_settings_are_refused_by_name(values, message):
    with pytest.raises(FedConfigError, match=message):
        FedConfig.from_run_config(values)


def test_fedprox_is_off_by_default_and_takes_any_finite_weight_from_zero():
    assert FedConfig().client.fedprox_mu == 0.0
    assert FedConfig.from_run_config({"fedprox-mu": 0}).client.fedprox_mu == 0.0
    assert FedConfig.from_run_config({"fedprox-mu": 1}).client.fedprox_mu == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"eval-images": 1}, r"eval-images must be 0 \(no local evaluation\) or >= 2 .* got 1"),
        ({"eval-images": -1}, "eval-images must be 0"),
        ({"central-eval-images": 1}, "central-eval-images must be >= 2"),
        (
            {"central-eval-identities": 10, "central-eval-images": 2},
            "central-eval-identities=10 x central-eval-images=2 give 10 genuine pairs; TAR@FAR=1e-2 needs >= 100",
        ),
    ],
)
def test_evaluation_sets_too_small_to_measure_are_refused_naming_the_setting_and_minimum(values, message):
    with pytest.raises(FedConfigError, match=message):
        FedConfig.from_run_config(values)


def test_the_smallest_measurable_evaluation_settings_are_accepted():
    config = FedConfig.from_run_config({"eval-images": 0, "central-eval-identities": 10, "central-eval-images": 5})
    assert config.client.eval_images == 0
