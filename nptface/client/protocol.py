"""What server and clients say to each other: record names and the per-round client settings.

Every setting a client needs travels in the message (``ConfigRecord``), so a ClientApp behaves
the same under ``flwr run`` (which has a run config) and under the Python simulation entry point
(which has none), and a client never trusts a local file for the federation's settings. The
partition plan is not sent: it is a pure function of the plan settings, which are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nptface.core.partitions import PartitionPlan, image_folder_plan, one_owner_plan, synthetic_plan

# Record names inside a Message's RecordDict.
BACKBONE = "backbone"  # ArrayRecord: float state_dict tensors
OWN_ROWS = "own_rows"  # ArrayRecord {"rows": [n, d]} for CONFIG["own_ids"]
NEGATIVES = "negatives"  # ArrayRecord {"rows": [m, d]} fixed negative proxies
ROWS_OUT = "rows"  # reply ArrayRecord {"rows": [n, d], "counts": [n]} for CONFIG["ids"]
CONFIG = "config"  # ConfigRecord
METRICS = "metrics"  # MetricRecord

# Train-message config keys set by the server per round (not run-config keys).
DP_NOISE = "dp-noise-multiplier"  # > 0: add N(0, (z * clip)^2) to every row before it leaves the client
DP_CLIP = "dp-clip"
KEEP_ROWS = "keep-own-rows"  # the client keeps its clean rows in its own state (the server holds only noised ones)

PARTITIONS = ("identities", "one-owner")  # how the plan shares people out (the ``partition`` setting)

ACTION_REGISTER = "register"  # query action: which identities does this client hold?


@dataclass(frozen=True)
class ClientSettings:
    """Settings of one round for every client: data plan, model, and local training."""

    # partition plan (recomputed identically on every client)
    source: str = "synthetic"  # "synthetic" or an ImageFolder root
    # "identities": clients hold client-identities people; "one-owner" (synthetic): every client is a phone
    # holding its owner alone, with min-images..max-images selfies (power law, exponent images-power)
    partition: str = "identities"
    num_clients: int = 8
    client_identities: int = 80
    images_per_identity: int = 10
    few_shot_share: float = 0.25
    sizes: str = "power-law"
    domains: str = "phone-lowlight"  # comma-separated synthetic domains, round-robin over clients
    eval_images: int = 2
    folder_held_out_identities: int = 10  # ImageFolder source: identities kept from every client for central eval
    partition_seed: int = 0
    min_images: int = 3
    max_images: int = 20
    images_power: float = 1.5
    # model
    image_size: int = 64
    model_json: str = "{}"  # MobileFaceNetConfig as JSON
    # local training
    local_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 32
    k: int = 6
    delta: float = 1.0
    fedprox_mu: float = 0.0
    # BatchNorm in local training: "train" (batch statistics, running statistics updated and averaged by the
    # server) or "frozen" (the server's running statistics normalise every local batch and are sent back unchanged;
    # the affine weights still train)
    bn_mode: str = "train"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any) -> ClientSettings:
        names = {f.name for f in fields(cls)}
        values = {key: record[key] for key in record.keys() if key in names}
        missing = names - set(values)
        if missing:
            raise ValueError(f"client settings are missing {sorted(missing)}")
        return cls(**values)

    def plan(self) -> PartitionPlan:
        """The partition plan these settings describe: every client (and the server) computes the same one."""
        domains = tuple(d.strip() for d in self.domains.split(",") if d.strip())
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}")
        if self.partition == "one-owner":
            if self.source != "synthetic":
                raise ValueError(f"partition 'one-owner' needs source 'synthetic', got {self.source!r}")
            return one_owner_plan(
                self.num_clients,
                seed=self.partition_seed,
                min_images=self.min_images,
                max_images=self.max_images,
                power=self.images_power,
                eval_images=self.eval_images,
                domains=domains,
            )
        if self.source == "synthetic":
            return synthetic_plan(
                self.num_clients,
                self.client_identities,
                seed=self.partition_seed,
                sizes=self.sizes,
                images_per_identity=self.images_per_identity,
                few_shot_share=self.few_shot_share,
                eval_images=self.eval_images,
                domains=domains,
            )
        return image_folder_plan(
            self.source,
            self.num_clients,
            seed=self.partition_seed,
            sizes=self.sizes,
            eval_images=self.eval_images,
            held_out_identities=self.folder_held_out_identities,
        )


def numpy_record(**arrays: Any) -> Any:
    """An ArrayRecord of named NumPy arrays (Flower takes dicts of ``Array``, lists, or torch state_dicts)."""
    import numpy as np
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})
