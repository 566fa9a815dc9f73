"""The settings of a simulated federation: the production :class:`FedConfig` plus the test harness.

The harness — failing and slow clients, poisoned replies, the proxy-linkage measurement — exists
only in simulation, so its keys are not run-config keys of the apps (``[tool.flwr.app.config]``)
and never reach a real client or server. ``nptface fed simulate --set KEY=VALUE`` takes both kinds
in one flat kebab-case namespace; :meth:`SimulationConfig.from_run_config` routes each key and
checks its type like the production config does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nptface.server.federation.config import FedConfig, FedConfigError, typed_value
from nptface.simulation.attacks.faults import WARM_UP_ROUNDS
from nptface.simulation.attacks.poison import parse_poison


@dataclass(frozen=True)
class Harness:
    """What the simulation injects into the production apps (all off by default)."""

    failure_rate: float = 0.0  # probability that a client raises instead of training (per round and partition)
    slow_partition: int = -1  # this partition is a straggler after the warm-up round ...
    slow_seconds: float = 0.0  # ... that sleeps this long before training
    poison: str = ""  # attackers, "KIND:PARTITION,...": scale (x100 update), noise, flip (identities)
    attack_linkage: bool = False  # measure the proxy-linkage attack every round
    attack_partition: int = 0  # the honest-but-curious client whose view the attack uses

    def __post_init__(self) -> None:
        if not 0 <= self.failure_rate < 1:
            raise FedConfigError(f"failure-rate must be in [0, 1), got {self.failure_rate}")
        if self.slow_seconds < 0:
            raise FedConfigError(f"slow-seconds must be >= 0, got {self.slow_seconds}")
        parse_poison(self.poison)

    @property
    def straggler(self) -> bool:
        return self.slow_partition >= 0 and self.slow_seconds > 0


@dataclass(frozen=True)
class SimulationConfig:
    fed: FedConfig = field(default_factory=FedConfig)
    harness: Harness = field(default_factory=Harness)

    def __post_init__(self) -> None:
        if self.harness.straggler and self.fed.num_rounds <= WARM_UP_ROUNDS:
            raise FedConfigError(
                f"slow-partition: the straggler sleeps only after {WARM_UP_ROUNDS} warm-up round(s); "
                f"num-rounds must be > {WARM_UP_ROUNDS}, got {self.fed.num_rounds}"
            )

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> SimulationConfig:
        """Harness keys to :class:`Harness`, every other key to :meth:`FedConfig.from_run_config`."""
        harness_fields = {f.name: f for f in fields(Harness)}
        harness: dict[str, Any] = {}
        production: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name in harness_fields:
                harness[name] = typed_value(key, value, harness_fields[name].default)
            else:
                production[key] = value
        return cls(FedConfig.from_run_config(production), Harness(**harness))

    def to_run_config(self) -> dict[str, Any]:
        return {
            **self.fed.to_run_config(),
            **{f.name.replace("_", "-"): getattr(self.harness, f.name) for f in fields(Harness)},
        }
