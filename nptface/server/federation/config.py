"""The settings of a federated run, read from Flower's run config (``[tool.flwr.app.config]``).

Keys are flat and kebab-case as Flower expects (``num-rounds``, ``local-epochs``); unknown keys
and wrong types are refused with the key named, like the training configs. The client-side
subset is forwarded to clients in every message (see :mod:`nptface.client.protocol`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from nptface.client.protocol import ClientSettings

SHARING_MODES = ("all", "public", "none", "dp", "local-heads")
BN_MODES = ("train", "frozen")
# Central evaluation draws as many impostor pairs as genuine ones, and TAR@FAR=1e-2 (the headline
# metric) needs 1 / 1e-2 impostor pairs to be measured at all.
MIN_CENTRAL_GENUINE_PAIRS = 100
BACKBONE_AGGREGATIONS = ("fedavg", "median", "trimmed-mean")


class FedConfigError(ValueError):
    """A run-config key that is unknown, of the wrong type or out of range."""


def typed_value(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of the setting's ``default`` (an int is taken for a float), else an error naming ``key``."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise FedConfigError(f"run-config key {key!r} must be {expected.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class FedConfig:
    num_rounds: int = 5
    server_run: str = "runs/quickstart"  # the centrally trained starting point (a run directory)
    out_dir: str = "runs/federated"
    fraction_train: float = 1.0
    min_nodes: int = 2
    wait_nodes_s: float = 120.0  # how long to wait for min-nodes before failing clearly
    round_timeout_s: float = 600.0  # stragglers past this are dropped from the round
    # What a client sees of the bank beyond its own rows (README "Privacy"): all | public | none | dp |
    # local-heads (FedPer-like baseline: no shared negatives and no spread-out either).
    proxy_sharing: str = "public"
    dp_epsilon: float = 8.0  # dp: each identity's row releases over all rounds together stay (epsilon, delta)-DP
    dp_delta: float = 1e-5
    dp_clip: float = 1.0  # dp: L2 bound of a row before noise (the Gaussian mechanism's sensitivity)
    negatives_nearest: int = 4  # per own row: nearest public proxies sent as negatives
    negatives_random: int = 32  # plus this many random public proxies
    spread_steps: int = 50  # server-side spread-out steps per round (0 disables)
    spread_freeze_public: bool = False  # True: only client rows move (the server's proxies stay as trained)
    norm_screen: float = 5.0  # reject a backbone update whose norm exceeds this multiple of the round's median (0: off)
    # reject a backbone update whose norm exceeds this multiple of the global backbone's norm, however few replies
    # a round has (honest updates measured 0.02-0.11 here, Gaussian noise >= 1 by construction; 0: off)
    update_norm_limit: float = 1.0
    row_norm_limit: float = 1.01  # reject a reply whose bank rows are longer than this (clients send unit rows; 0: off)
    backbone_aggregation: str = "fedavg"  # fedavg (sample-weighted) | median | trimmed-mean (Flower's aggregators)
    trim_fraction: float = 0.2  # trimmed-mean: share of the updates cut at each end, per coordinate
    central_eval_identities: int = 100
    central_eval_images: int = 6
    central_eval_domain: str = "wild"  # the server's domain: forgetting shows here
    client_eval_every: int = 1  # every N rounds clients verify their own held-out images (0: never)
    # the exported model is server + final-mix * (federated - server) (WiSE-FT); 1: the federated model as is
    final_mix: float = 1.0
    seed: int = 0
    client: ClientSettings = field(default_factory=ClientSettings)

    def __post_init__(self) -> None:
        if self.proxy_sharing not in SHARING_MODES:
            raise FedConfigError(f"proxy-sharing must be one of {', '.join(SHARING_MODES)}, got {self.proxy_sharing!r}")
        if self.num_rounds < 1:
            raise FedConfigError(f"num-rounds must be >= 1, got {self.num_rounds}")
        if not 0 < self.fraction_train <= 1:
            raise FedConfigError(f"fraction-train must be in (0, 1], got {self.fraction_train}")
        if not 0 < self.client.delta <= 4:
            raise FedConfigError(
                f"delta must be in (0, 4] (a squared distance on the unit sphere), got {self.client.delta}"
            )
        if not (math.isfinite(self.client.fedprox_mu) and self.client.fedprox_mu >= 0):
            raise FedConfigError(
                f"fedprox-mu must be a finite number >= 0 (FedProx's proximal weight; 0: off), got {self.client.fedprox_mu}"
            )
        if not 0 < self.final_mix <= 1:
            raise FedConfigError(
                f"final-mix must be in (0, 1] (the federated model's share of the exported one), got {self.final_mix}"
            )
        if self.client.bn_mode not in BN_MODES:
            raise FedConfigError(f"bn-mode must be one of {', '.join(BN_MODES)}, got {self.client.bn_mode!r}")
        self._check_evaluation_sizes()
        if self.backbone_aggregation not in BACKBONE_AGGREGATIONS:
            raise FedConfigError(
                f"backbone-aggregation must be one of {', '.join(BACKBONE_AGGREGATIONS)}, "
                f"got {self.backbone_aggregation!r}"
            )
        if not 0 <= self.trim_fraction < 0.5:
            raise FedConfigError(f"trim-fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.dp_epsilon <= 0 or not 0 < self.dp_delta < 1 or self.dp_clip <= 0:
            raise FedConfigError(
                f"dp-epsilon and dp-clip must be > 0 and dp-delta in (0, 1), got "
                f"{self.dp_epsilon}, {self.dp_clip}, {self.dp_delta}"
            )
        if self.row_norm_limit < 0 or self.norm_screen < 0 or self.update_norm_limit < 0:
            raise FedConfigError(
                "row-norm-limit, norm-screen and update-norm-limit must be >= 0 (0 turns the screen "
                f"off), got {self.row_norm_limit}, {self.norm_screen} and {self.update_norm_limit}"
            )

    def _check_evaluation_sizes(self) -> None:
        """Evaluation sets too small to measure anything are refused here, before any training, not found
        out as unmeasured (null) metrics at the end of the run."""
        if self.central_eval_images < 2:
            raise FedConfigError(
                f"central-eval-images must be >= 2 (a genuine pair needs two images of one identity), "
                f"got {self.central_eval_images}"
            )
        genuine = self.central_eval_identities * self.central_eval_images * (self.central_eval_images - 1) // 2
        if genuine < MIN_CENTRAL_GENUINE_PAIRS:
            raise FedConfigError(
                f"central-eval-identities={self.central_eval_identities} x central-eval-images="
                f"{self.central_eval_images} give {genuine} genuine pairs; TAR@FAR=1e-2 needs >= "
                f"{MIN_CENTRAL_GENUINE_PAIRS} (e.g. central-eval-identities=10 central-eval-images=5)"
            )
        if self.client.eval_images < 0 or self.client.eval_images == 1:
            raise FedConfigError(
                "eval-images must be 0 (no local evaluation) or >= 2 (a genuine pair needs two held-out "
                f"images of one identity), got {self.client.eval_images}"
            )

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FedConfig:
        """Build from flat kebab-case keys; server and client settings share one namespace."""
        server_fields = {f.name: f for f in fields(cls) if f.name != "client"}
        client_fields = {f.name: f for f in fields(ClientSettings)}
        assert not set(server_fields) & set(client_fields), "server and client settings share one key namespace"
        server_values: dict[str, Any] = {}
        client_values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            target = server_fields.get(name) or client_fields.get(name)
            if target is None:
                raise FedConfigError(f"unknown run-config key {key!r}")
            (server_values if name in server_fields else client_values)[name] = typed_value(key, value, target.default)
        return cls(**server_values, client=ClientSettings(**client_values))

    def to_run_config(self) -> dict[str, Any]:
        out = {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self) if f.name != "client"}
        out.update(
            {
                f.name.replace("_", "-"): getattr(self.client, f.name)
                for f in fields(ClientSettings)
                if f.name not in ("image_size", "model_json")
            }
        )
        return out
