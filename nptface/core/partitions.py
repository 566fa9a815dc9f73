"""Who holds which faces in a federated simulation: seeded, disjoint, skewed client partitions.

In the federated setting each client is a separate party (a phone fleet, a site) holding images
of its *own* people, never seen by the server or by any other client, often captured under
another imaging domain and sometimes only a handful of images per person. A :class:`PartitionPlan`
fixes that split once, as plain data (JSON round trip), so every simulation worker and every
rerun builds the same clients: :func:`synthetic_plan` draws clients from
:data:`nptface.core.synthetic.CLIENT_IDS` with power-law (Zipf, ``rank ** -alpha``) or equal sizes,
a share of few-shot clients and round-robin domains; :func:`one_owner_plan` gives every client
(a phone) a single identity, its owner, with a power-law number of selfies (the FedFace setting,
Aggarwal et al. 2021); :func:`image_folder_plan` splits the identity folders of an ImageFolder. :func:`client_datasets` turns one client's entry into its train and
held-out evaluation datasets under the ``nptface.core`` dataset contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nptface.core.datasets import SyntheticFaceDataset
from nptface.core.identities import LabelledDataset, subset_by_classes
from nptface.core.imagefolder import ImageFolderDataset
from nptface.core.synthetic import CLIENT_IDS, DOMAINS

SYNTHETIC = "synthetic"
IMAGE_FOLDER_DOMAIN = "imagefolder"
# Evaluation renders start here, so they can never be one of a client's training renders.
EVAL_FIRST_INDEX = 1000
_SYNTH_PREFIX = "synth-"
# Independent random streams: changing, say, few_shot_share must not reshuffle identities.
_STREAM_IDENTITIES, _STREAM_SIZES, _STREAM_FEW_SHOT, _STREAM_DOMAINS, _STREAM_OWNER_IMAGES = range(5)


class PartitionError(ValueError):
    """A partition request that cannot be met, or a plan that does not fit its data."""


@dataclass(frozen=True)
class ClientPartition:
    """One client's share: its identities, their imaging domain and how many images each has."""

    partition_id: int
    identities: tuple[str, ...]
    domain: str
    train_images: tuple[int, ...]  # per identity, in the order of ``identities``
    eval_images: int  # held out per identity for the client's local evaluation
    few_shot: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "identities", tuple(str(name) for name in self.identities))
        object.__setattr__(self, "train_images", tuple(int(count) for count in self.train_images))
        where = f"client {self.partition_id}"
        if len(set(self.identities)) != len(self.identities):
            raise PartitionError(f"{where}: identities must be distinct")
        if len(self.train_images) != len(self.identities):
            raise PartitionError(
                f"{where}: train_images has {len(self.train_images)} counts for {len(self.identities)} identities"
            )
        if any(count < 1 for count in self.train_images):
            raise PartitionError(f"{where}: every train_images count must be >= 1, got {self.train_images}")
        if self.eval_images < 0:
            raise PartitionError(f"{where}: eval_images must be >= 0, got {self.eval_images}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClientPartition:
        try:
            return cls(**data)
        except TypeError as error:
            raise PartitionError(f"malformed client partition {data!r}: {error}") from None


@dataclass(frozen=True)
class PartitionPlan:
    """Every client's partition; identities are disjoint across clients by construction and check."""

    source: str  # "synthetic" or the ImageFolder root
    seed: int
    clients: tuple[ClientPartition, ...]
    skipped: tuple[str, ...] = ()  # ImageFolder identities with too few images to split
    held_out: tuple[str, ...] = ()  # ImageFolder identities no client gets: the server's central evaluation

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(self.clients))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        object.__setattr__(self, "held_out", tuple(self.held_out))
        ids = [client.partition_id for client in self.clients]
        if ids != list(range(len(self.clients))):
            raise PartitionError(f"partition ids must be 0..{len(self.clients) - 1} in order, got {ids}")
        names = [name for client in self.clients for name in client.identities]
        if set(names) & set(self.held_out):
            raise PartitionError("a held-out identity is also a client's")
        if len(set(names)) != len(names):
            raise PartitionError("an identity belongs to more than one client; client identities must be disjoint")

    def summary(self) -> str:
        """One line per client, plus one per identity left out of an ImageFolder plan."""
        lines = [f"{self.source} (seed {self.seed}): {len(self.clients)} clients"]
        for client in self.clients:
            lines.append(
                f"  client {client.partition_id}: {len(client.identities)} identities, "
                f"{sum(client.train_images)} train + {client.eval_images * len(client.identities)} eval images, "
                f"{client.domain}, {'few-shot' if client.few_shot else 'full'}"
            )
        lines.extend(f"  skipped {name}: too few images to keep some for evaluation" for name in self.skipped)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "seed": self.seed,
            "skipped": list(self.skipped),
            "held_out": list(self.held_out),
            "clients": [client.to_dict() for client in self.clients],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PartitionPlan:
        missing = sorted({"source", "seed", "clients"} - set(data))
        if missing:
            raise PartitionError(f"partition plan is missing field(s) {missing}")
        clients = tuple(ClientPartition.from_dict(client) for client in data["clients"])
        return cls(
            data["source"], int(data["seed"]), clients, tuple(data.get("skipped", ())), tuple(data.get("held_out", ()))
        )


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _client_sizes(num_clients: int, total: int, sizes: str, alpha: float, min_identities: int, seed: int) -> list[int]:
    """Identities per client: each >= ``min_identities``, summing exactly to ``total``."""
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise PartitionError(f"num_clients must be an int >= 1, got {num_clients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PartitionError(f"seed must be an int >= 0, got {seed!r}")
    if min_identities < 2:
        raise PartitionError(
            f"min_identities must be >= 2 (a client classifier needs two people), got {min_identities}"
        )
    if total < num_clients * min_identities:
        raise PartitionError(
            f"{total} identities cannot give {num_clients} clients at least min_identities={min_identities} each "
            f"(need {num_clients * min_identities})"
        )
    spare = total - num_clients * min_identities
    if sizes == "equal":
        weights = np.ones(num_clients)
    elif sizes == "power-law":
        if alpha <= 0:
            raise PartitionError(f"alpha must be > 0 for power-law sizes, got {alpha}")
        weights = _rng(seed, _STREAM_SIZES).permutation(np.arange(1, num_clients + 1) ** -float(alpha))
    else:
        raise PartitionError(f"sizes must be 'power-law' or 'equal', got {sizes!r}")
    # Largest-remainder rounding of the spare identities keeps the total exact.
    shares = spare * weights / weights.sum()
    extra = np.floor(shares).astype(int)
    extra[np.argsort(-(shares - extra), kind="stable")[: spare - extra.sum()]] += 1
    return [min_identities + int(count) for count in extra]


def _split(names: Sequence[str], sizes: list[int]) -> list[tuple[str, ...]]:
    bounds = np.cumsum([0, *sizes])
    return [tuple(names[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


def synthetic_plan(
    num_clients: int,
    total_identities: int,
    seed: int = 0,
    sizes: str = "power-law",
    alpha: float = 1.5,
    min_identities: int = 2,
    images_per_identity: int = 10,
    few_shot_share: float = 0.25,
    few_shot_images: tuple[int, int] = (3, 5),
    eval_images: int = 2,
    domains: Sequence[str] = ("phone-lowlight",),
    first_identity: int = 0,
) -> PartitionPlan:
    """Clients over ``CLIENT_IDS[first_identity : first_identity + total_identities]``.

    ``round(few_shot_share * num_clients)`` seeded clients train on a random
    ``few_shot_images`` (inclusive) number of images per identity, the rest on
    ``images_per_identity``; ``domains`` go round-robin over a seeded client order.
    """
    sizes_per_client = _client_sizes(num_clients, total_identities, sizes, alpha, min_identities, seed)
    if first_identity < 0 or first_identity + total_identities > len(CLIENT_IDS):
        raise PartitionError(
            f"first_identity={first_identity} + total_identities={total_identities} must lie within the "
            f"{len(CLIENT_IDS)} client identities"
        )
    unknown = [name for name in domains if name not in DOMAINS]
    if not domains or unknown:
        raise PartitionError(
            f"domains {list(domains)!r}: unknown {unknown}; expected a non-empty list from {sorted(DOMAINS)}"
        )
    low, high = few_shot_images
    if not 1 <= low <= high <= EVAL_FIRST_INDEX or not 1 <= images_per_identity <= EVAL_FIRST_INDEX:
        raise PartitionError(
            f"train images per identity must lie in [1, {EVAL_FIRST_INDEX}] with few_shot_images low <= high; "
            f"got images_per_identity={images_per_identity}, few_shot_images={few_shot_images}"
        )
    if not 0.0 <= few_shot_share <= 1.0 or eval_images < 0:
        raise PartitionError(
            f"few_shot_share must lie in [0, 1] and eval_images >= 0; got {few_shot_share}, {eval_images}"
        )

    ids = CLIENT_IDS[first_identity : first_identity + total_identities]
    names = [f"{_SYNTH_PREFIX}{ids[i]:07d}" for i in _rng(seed, _STREAM_IDENTITIES).permutation(total_identities)]
    few_rng = _rng(seed, _STREAM_FEW_SHOT)
    few_shot = set(few_rng.choice(num_clients, math.floor(few_shot_share * num_clients + 0.5), replace=False).tolist())
    domain_order = _rng(seed, _STREAM_DOMAINS).permutation(num_clients)
    domain_of = {int(client): domains[rank % len(domains)] for rank, client in enumerate(domain_order)}
    clients = []
    for client, identities in enumerate(_split(names, sizes_per_client)):
        if client in few_shot:
            train = tuple(few_rng.integers(low, high + 1, size=len(identities)).tolist())
        else:
            train = (images_per_identity,) * len(identities)
        clients.append(ClientPartition(client, identities, domain_of[client], train, eval_images, client in few_shot))
    return PartitionPlan(SYNTHETIC, seed, tuple(clients))


def one_owner_plan(
    num_devices: int,
    seed: int = 0,
    min_images: int = 3,
    max_images: int = 20,
    power: float = 1.5,
    eval_images: int = 2,
    domains: Sequence[str] = ("phone-lowlight", "cctv-lowres"),
    first_identity: int = 0,
) -> PartitionPlan:
    """One identity per device (its owner), with ``n`` training images drawn from the truncated
    discrete power law ``P(n) ~ n ** -power`` on ``[min_images, max_images]`` (most phones hold a few
    selfies, a few hold many); ``eval_images`` more per owner are held out (the probes of 1:N
    identification); ``domains`` go round-robin over a seeded device order.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 2:
        raise PartitionError(f"num_devices must be an int >= 2, got {num_devices!r}")
    if not 1 <= min_images <= max_images <= EVAL_FIRST_INDEX:
        raise PartitionError(
            f"min_images and max_images must satisfy 1 <= min_images <= max_images <= {EVAL_FIRST_INDEX}, "
            f"got {min_images} and {max_images}"
        )
    if power < 0 or eval_images < 0:
        raise PartitionError(f"power and eval_images must be >= 0, got {power} and {eval_images}")
    if first_identity < 0 or first_identity + num_devices > len(CLIENT_IDS):
        raise PartitionError(
            f"first_identity={first_identity} + num_devices={num_devices} must lie within the "
            f"{len(CLIENT_IDS)} client identities"
        )
    unknown = [name for name in domains if name not in DOMAINS]
    if not domains or unknown:
        raise PartitionError(
            f"domains {list(domains)!r}: unknown {unknown}; expected a non-empty list from {sorted(DOMAINS)}"
        )
    ids = CLIENT_IDS[first_identity : first_identity + num_devices]
    owners = [f"{_SYNTH_PREFIX}{ids[i]:07d}" for i in _rng(seed, _STREAM_IDENTITIES).permutation(num_devices)]
    support = np.arange(min_images, max_images + 1)
    weights = support.astype(float) ** -float(power)
    images = _rng(seed, _STREAM_OWNER_IMAGES).choice(support, size=num_devices, p=weights / weights.sum())
    domain_order = _rng(seed, _STREAM_DOMAINS).permutation(num_devices)
    domain_of = {int(device): domains[rank % len(domains)] for rank, device in enumerate(domain_order)}
    clients = tuple(
        ClientPartition(device, (owner,), domain_of[device], (int(images[device]),), eval_images)
        for device, owner in enumerate(owners)
    )
    return PartitionPlan(SYNTHETIC, seed, clients)


def image_folder_plan(
    root: str | Path,
    num_clients: int,
    seed: int = 0,
    sizes: str = "equal",
    alpha: float = 1.5,
    min_identities: int = 2,
    eval_images: int = 2,
    held_out_identities: int = 0,
) -> PartitionPlan:
    """Split the identity folders of ``root`` across clients; the last ``eval_images`` files
    (in sorted order) of each identity are held out, identities with fewer than
    ``eval_images + 1`` images are skipped and listed in the plan's ``skipped``.
    ``held_out_identities`` (seeded choice) go to no client: the server evaluates on them."""
    if eval_images < 0:
        raise PartitionError(f"eval_images must be >= 0, got {eval_images}")
    if held_out_identities < 0:
        raise PartitionError(f"held_out_identities must be >= 0, got {held_out_identities}")
    folder = ImageFolderDataset(root, image_size=8)  # size is irrelevant: nothing is decoded here
    counts = np.bincount(folder.labels, minlength=folder.num_classes)
    usable = [label for label in range(folder.num_classes) if counts[label] > eval_images]
    skipped = tuple(folder.class_names[label] for label in range(folder.num_classes) if counts[label] <= eval_images)
    order = [usable[i] for i in _rng(seed, _STREAM_IDENTITIES).permutation(len(usable))]
    if held_out_identities >= len(order):
        raise PartitionError(f"held_out_identities={held_out_identities} leaves no identity of {root} for clients")
    held_out = tuple(sorted(folder.class_names[label] for label in order[:held_out_identities]))
    order = order[held_out_identities:]
    sizes_per_client = _client_sizes(num_clients, len(order), sizes, alpha, min_identities, seed)
    clients, start = [], 0
    for client, size in enumerate(sizes_per_client):
        labels = order[start : start + size]
        start += size
        names = tuple(folder.class_names[label] for label in labels)
        train = tuple(int(counts[label]) - eval_images for label in labels)
        clients.append(ClientPartition(client, names, IMAGE_FOLDER_DOMAIN, train, eval_images))
    return PartitionPlan(str(root), seed, tuple(clients), skipped, held_out)


class _Selection(Dataset):
    """Chosen items of a contract-following dataset, keeping its labels and its first ``num_classes``
    class names (all by default; fewer when the chosen items only use the first ones)."""

    def __init__(self, dataset: LabelledDataset, indices: Sequence[int], num_classes: int | None = None) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels: np.ndarray = np.asarray(dataset.labels, dtype=np.int64)[self.indices]
        self.num_classes: int = dataset.num_classes if num_classes is None else num_classes
        self.class_names: list[str] = list(dataset.class_names)[: self.num_classes]

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.dataset[int(self.indices[index])]


def _synthetic_id(name: str) -> int:
    if not name.startswith(_SYNTH_PREFIX) or not name[len(_SYNTH_PREFIX) :].isdigit():
        raise PartitionError(f"synthetic identity {name!r} must look like '{_SYNTH_PREFIX}0001234'")
    return int(name[len(_SYNTH_PREFIX) :])


def client_datasets(
    plan: PartitionPlan, partition_id: int, image_size: int, seed: int = 0
) -> tuple[Dataset, Dataset | None]:
    """``(train, eval)`` of one client (eval is None when ``eval_images`` is 0); labels index the
    client's identities. ``seed`` is the synthetic render seed, not the partition seed."""
    if not 0 <= partition_id < len(plan.clients):
        raise PartitionError(
            f"partition_id {partition_id} is not a client of this plan; it has {len(plan.clients)} clients"
        )
    client = plan.clients[partition_id]
    counts = client.train_images
    if plan.source == SYNTHETIC:
        ids = [_synthetic_id(name) for name in client.identities]
        # A synthetic dataset has >= 2 identities; a one-owner device's second one is never rendered.
        rendered = ids if len(ids) > 1 else [*ids, CLIENT_IDS[0] if ids[0] != CLIENT_IDS[0] else CLIENT_IDS[1]]
        most = max(counts)
        renders = SyntheticFaceDataset(rendered, most, client.domain, seed, image_size)
        train_indices = [label * most + k for label, count in enumerate(counts) for k in range(count)]
        train = _Selection(renders, train_indices, len(ids))
        if client.eval_images == 0:
            return train, None
        held_out = SyntheticFaceDataset(
            rendered, client.eval_images, client.domain, seed, image_size, first_index=EVAL_FIRST_INDEX
        )
        return train, held_out if len(ids) > 1 else _Selection(held_out, range(client.eval_images), 1)

    # The whole folder is checked once here; a partition of a huge folder pays that per client.
    folder = ImageFolderDataset(plan.source, image_size)
    label_of = {name: label for label, name in enumerate(folder.class_names)}
    missing = [name for name in client.identities if name not in label_of]
    if missing:
        raise PartitionError(f"identity folders {missing} of client {partition_id} are not in {plan.source}")
    view = subset_by_classes(folder, [label_of[name] for name in client.identities])
    train_indices, eval_indices = [], []
    for label, (name, count) in enumerate(zip(client.identities, counts)):
        indices = np.flatnonzero(view.labels == label)
        if indices.size != count + client.eval_images:
            raise PartitionError(
                f"{Path(plan.source) / name} holds {indices.size} images; the plan expects "
                f"{count} train + {client.eval_images} eval"
            )
        train_indices.extend(indices[:count].tolist())
        eval_indices.extend(indices[count:].tolist())
    return _Selection(view, train_indices), (_Selection(view, eval_indices) if eval_indices else None)
