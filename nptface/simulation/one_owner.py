"""The one-owner benchmark: does the shared proxy bank pay off when every phone holds only its owner?

With one identity per device a local head has no negatives: the shared bank's public negatives and
the server's spread-out are the only sources of separation between owners (FedFace, Aggarwal et al.
2021; AdaFedFR, 2024). This module runs that setting for every method of :data:`METHODS` and seed
from the same server model, and measures each with :class:`OwnerEvaluation` (built on
:mod:`nptface.core.identification`): verification on unseen identities in the client domains over
every pair (TAR@FAR=1e-3 measured), open-set 1:N identification over the union of all devices'
owners (each enrolled from the images on their device, probed with held-out images; unseen
identities are the non-mated searches: rank-1 and DIR@FPIR=1e-2), and server-domain verification
(forgetting). The ``fedprox`` method (opt-in) is the shared bank with FedProx's proximal term, the
remedy for the backbone's drift when each device trains on one person. The federation's curve comes
from a round observer, which sees the backbone the clients were sent, i.e. the model after the
previous round; the last round is evaluated from the final state. Devices take part at ``fraction``
per round and fail at ``failure-rate`` (the simulation harness). Every (method, seed) is a run
directory of its own with a ``result.json``: a rerun skips finished pairs and resumes unfinished
federations. The peak memory of each run is the PSS summed over this process and its children (Ray's
workers), sampled twice a second; PSS splits shared pages between processes, so the sum does not
count torch's libraries once per worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.checkpoint import load_backbone
from nptface.core.datasets import InMemoryFaceDataset, SyntheticFaceDataset, materialize
from nptface.core.embedding import embed_dataset
from nptface.core.identification import all_pairs_verification, enroll, open_set_identification
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.partitions import client_datasets
from nptface.core.run_settings import parse_override
from nptface.core.synthetic import HELDOUT_IDS
from nptface.core.tables import markdown_table
from nptface.core.weight_mixing import interpolate_state
from nptface.server.federation.observer import RoundView
from nptface.server.federation.state import latest_state
from nptface.simulation.config import SimulationConfig

PREFIX = "one-owner/"
TAR_1E3 = PREFIX + "client-domain/tar@far=1e-3"
TAR_1E2 = PREFIX + "client-domain/tar@far=1e-2"
RANK1 = PREFIX + "identification/rank1"
DIR = PREFIX + "identification/dir@fpir=1e-2"
SERVER_TAR = PREFIX + "server-domain/tar@far=1e-2"
SERVER_TAR_1E3 = PREFIX + "server-domain/tar@far=1e-3"
METRICS = (TAR_1E3, TAR_1E2, RANK1, DIR, SERVER_TAR, SERVER_TAR_1E3)
# Unseen identities for verification and non-mated searches: far from the central evaluation's and the export gate's.
UNSEEN_FIRST = 500_000
UNSEEN_RENDER_SEED = 4243
CURVE_FILE = "one-owner-curve.json"
RESULT_FILE = "result.json"
INTERPOLATED_FILE = "interpolated.json"
SERVER_MODEL = "server model (no fine-tuning)"


# FedProx's mu (--fedprox-mu). Li et al. (2020) searched {0.001, 0.01, 0.1, 1} and found 1 best on their most
# heterogeneous data; one owner per device is as heterogeneous as a federation gets. At the clients' lr 0.01 a step
# takes back lr * mu = 1 % of the drift (up to 10 % once momentum 0.9 has built up): it holds the drift in without
# freezing the update. Over the few local steps of a one-owner round it acts little: sweep it upwards (10, 100)
# with several local epochs before concluding that FedProx does not help.
FEDPROX_MU = 1.0


@dataclass(frozen=True)
class Method:
    label: str
    shared: str  # what leaves a device and what reaches it
    sharing: str | None  # the proxy-sharing mode; None: centralised fine-tuning, no federation
    settings: dict[str, Any] = field(default_factory=dict)  # run-config keys the method changes


METHODS: dict[str, Method] = {
    "shared-bank": Method(
        "shared bank, public negatives",
        "up: backbone update + the owner's row; down: backbone, own row, the server's (public) proxies "
        "nearest to it + random ones as negatives; server spread-out",
        "public",
    ),
    "none": Method(
        "own row only + spread-out (FedFace-like)",
        "up: backbone update + the owner's row; down: backbone + own row, no negatives; server spread-out",
        "none",
    ),
    "dp": Method(
        "dp rows",
        "up: backbone update + the owner's row with Gaussian noise ((epsilon, delta)-DP over all rounds); "
        "down: backbone + negatives from the bank of noised rows and public proxies",
        "dp",
    ),
    "local-heads": Method(
        "FedAvg + local heads",
        "up: backbone update (the row stays in the bank, never spread or sent to others); down: backbone + own row",
        "local-heads",
    ),
    "backbone-only": Method(
        "FedAvg of the backbone, no-op head",
        "up: backbone after a local pass with learning rate 0 (only BatchNorm statistics move); no proxy is used",
        "local-heads",
        {"lr": 0.0},
    ),
    "centralised": Method(
        "centralised fine-tuning (upper bound)",
        "every device's images pooled on the server; the server's proxies as negatives",
        None,
    ),
    "fedprox": Method(
        "shared bank + FedProx",
        "as the shared bank; local training is pulled towards the backbone and rows received, "
        "(mu/2)·||w - w_global||² (Li et al., 2020)",
        "public",  # its mu is the setting's fedprox_mu
    ),
}
# FedProx only acts from a device's second local step on (at the first, w = w_global): it is opt-in, for runs
# with several local steps per round (--set local-epochs=N for every method).
DEFAULT_METHODS = tuple(m for m in METHODS if m != "fedprox")


@dataclass(frozen=True)
class Bench:
    """The setting: ``devices`` phones, one owner each, and how the evaluation is sized."""

    server_run: str
    out_dir: str
    devices: int = 100
    rounds: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = DEFAULT_METHODS
    fraction: float = 0.15  # devices sampled per round
    failure_rate: float = 0.1  # a sampled device drops out of the round with this probability
    domains: str = "phone-lowlight,cctv-lowres"
    unseen_identities: int = 300  # verification + non-mated searches; x unseen-images, in the client domains
    unseen_images: int = 4
    curve_every: int = 1  # evaluate the model of every N-th round for the curves (the last one always)
    fedprox_mu: float = FEDPROX_MU  # the fedprox method's proximal weight
    settings: dict[str, Any] = field(default_factory=dict)  # any other run-config key (--set)
    # WiSE-FT's mixing weights: each final model is also evaluated as server + alpha * (final - server)
    interpolate: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if self.curve_every < 1:
            raise ValueError(f"curve-every must be >= 1, got {self.curve_every}")
        if unknown or not self.methods:
            raise ValueError(f"methods {unknown or '(none)'}: expected some of {', '.join(METHODS)}")
        if any(not 0 < alpha < 1 for alpha in self.interpolate):
            raise ValueError(f"interpolate: every mixing weight must be in (0, 1), got {list(self.interpolate)}")
        domains = [d for d in self.domains.split(",") if d.strip()]
        if self.unseen_images < 2 or self.unseen_identities < 2 * len(domains):
            raise ValueError(
                f"unseen-images must be >= 2 and unseen-identities >= 2 per client domain ({len(domains)}), "
                f"got {self.unseen_images} and {self.unseen_identities}"
            )
        configs = {method: self.config(method, 0) for method in self.methods}  # a bad --set fails here, first
        if "fedprox" in configs:
            client = configs["fedprox"].fed.client  # a device takes max(1, images // batch-size) steps per epoch
            if client.local_epochs * max(1, client.min_images // client.batch_size) < 2:
                raise ValueError(
                    f"method fedprox: with local-epochs={client.local_epochs}, min-images={client.min_images} and "
                    f"batch-size={client.batch_size} the smallest devices take one local step per round, where "
                    "FedProx's term is zero (w = w_global); give --set local-epochs=N with N >= 2 (it applies to "
                    "every method)"
                )

    def config(self, method: str, seed: int) -> SimulationConfig:
        """The federation of ``method`` with ``seed`` (also the partition's seed: owners and image counts)."""
        chosen = METHODS[method]
        values: dict[str, Any] = {
            "server-run": self.server_run,
            "out-dir": str(self.run_dir(method, seed)),
            "num-rounds": self.rounds,
            "partition": "one-owner",
            "num-clients": self.devices,
            "client-identities": self.devices,
            "domains": self.domains,
            "fraction-train": self.fraction,
            "min-nodes": 2,
            "client-eval-every": 0,  # one identity cannot be verified locally: the benchmark evaluates centrally
            "central-eval-identities": 30,
            "central-eval-images": 4,
            "seed": seed,
            "partition-seed": seed,
            **self.settings,
            **({"proxy-sharing": chosen.sharing} if chosen.sharing else {}),
            **chosen.settings,
            **({"fedprox-mu": self.fedprox_mu} if method == "fedprox" else {}),
        }
        return SimulationConfig.from_run_config({"failure-rate": self.failure_rate, **values})

    def label(self, method: str) -> str:
        return METHODS[method].label + (f" (mu={self.fedprox_mu:g})" if method == "fedprox" else "")

    def run_dir(self, method: str, seed: int) -> Path:
        return Path(self.out_dir) / f"seed-{seed}" / method


class OwnerEvaluation:
    """The three evaluations of one seed's setting, on images rendered once and embedded per model."""

    def __init__(self, config: SimulationConfig, image_size: int, unseen_identities: int, unseen_images: int) -> None:
        settings = replace(config.fed.client, image_size=image_size)
        plan = settings.plan()
        enrolment, probes = [], []
        for device in plan.clients:
            train, held_out = client_datasets(plan, device.partition_id, image_size, seed=settings.partition_seed)
            enrolment.append(_owned_by(device.partition_id, train))
            if held_out is not None:
                probes.append(_owned_by(device.partition_id, held_out))
        if not probes:
            raise ValueError("eval-images must be >= 1: an owner's held-out images are the mated searches")
        self.enrolment, self.probes = _stack(enrolment), _stack(probes)
        domains = [d.strip() for d in settings.domains.split(",") if d.strip()]
        ids = HELDOUT_IDS[UNSEEN_FIRST : UNSEEN_FIRST + unseen_identities]
        unseen, first_label = [], 0
        for i, domain in enumerate(domains):  # identities round-robin over the client domains
            part = materialize(
                SyntheticFaceDataset(ids[i :: len(domains)], unseen_images, domain, UNSEEN_RENDER_SEED, image_size),
                progress=False,
            )
            unseen.append((part.images, part.labels + first_label))
            first_label += part.num_classes
        self.unseen = _stack(unseen)
        self.server = materialize(
            SyntheticFaceDataset(ids, unseen_images, config.fed.central_eval_domain, UNSEEN_RENDER_SEED, image_size),
            progress=False,
        )

    def __call__(self, model: MobileFaceNet) -> dict[str, float | None]:
        def embed(data: InMemoryFaceDataset) -> np.ndarray:
            return embed_dataset(model.eval(), data)

        unseen = embed(self.unseen)
        verification = all_pairs_verification(unseen, self.unseen.labels)
        server = all_pairs_verification(embed(self.server), self.server.labels)
        gallery = enroll(embed(self.enrolment), self.enrolment.labels)
        search = open_set_identification(gallery, embed(self.probes), self.probes.labels, unseen)
        return {
            TAR_1E3: verification.tar_at_far[1e-3].tar,
            TAR_1E2: verification.tar_at_far[1e-2].tar,
            RANK1: search.rank1,
            DIR: search.dir_at_fpir[1e-2].tar,
            SERVER_TAR: server.tar_at_far[1e-2].tar,
            SERVER_TAR_1E3: server.tar_at_far[1e-3].tar,
            PREFIX + "counts/impostor-pairs": float(verification.n_impostor),
            PREFIX + "counts/owners": float(search.n_enrolled),
            PREFIX + "counts/mated-searches": float(search.n_mated),
            PREFIX + "counts/non-mated-searches": float(search.n_non_mated),
        }


def _owned_by(device: int, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """A device's images in memory, every one labelled with the device (its owner)."""
    images = materialize(data, progress=False).images
    return images, np.full(len(images), device, np.int64)


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> InMemoryFaceDataset:
    """(images, labels) parts as one in-memory set; labels are kept as given."""
    labels = np.concatenate([labels for _, labels in parts])
    names = [str(label) for label in range(int(labels.max()) + 1)]
    return InMemoryFaceDataset(np.concatenate([images for images, _ in parts]), labels, names)


class CurveObserver:
    """Round observer: evaluates the backbone clients were sent in round r (the model after round r - 1)."""

    def __init__(self, evaluation: OwnerEvaluation, path: Path, model: MobileFaceNet, every: int = 1) -> None:
        self.evaluation, self.path, self.model, self.every = evaluation, path, model, every

    def __call__(self, view: RoundView) -> dict[str, float]:
        if (view.round - 1) % self.every:
            return {}
        self.model.load_state_dict(view.backbone, strict=False)
        record(self.path, view.round - 1, self.evaluation(self.model))
        return {}


def record(path: Path, round_number: int, metrics: dict[str, Any]) -> None:
    curve = json.loads(path.read_text()) if path.is_file() else {}
    curve[str(round_number)] = metrics
    atomic_write_json(path, dict(sorted(curve.items(), key=lambda item: int(item[0]))))


class PeakMemory:
    """Context manager: the peak of the PSS summed over this process and its descendants (Linux /proc)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s, self.peak_bytes = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        import os

        while True:
            self.peak_bytes = max(self.peak_bytes, tree_pss_bytes(os.getpid()))
            if self._stop.wait(self.every_s):
                return


def tree_pss_bytes(root: int) -> int:
    """PSS of ``root`` and every descendant, in bytes (0 where /proc is unavailable)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:"))
    return total


def same_settings(stored: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a finished run's settings are ``now``'s; a key added since it ran counts as equal at its default."""
    defaults = SimulationConfig.from_run_config({}).to_run_config()
    return set(stored) <= set(now) and all(
        stored[key] == value if key in stored else value == defaults.get(key, object()) for key, value in now.items()
    )


def run_one(bench: Bench, method: str, seed: int, evaluation: OwnerEvaluation, cpus_per_client: float) -> dict:
    """Train (or resume) one (method, seed) and write its ``result.json``; a finished one is read back."""
    out = bench.run_dir(method, seed)
    config = bench.config(method, seed)
    result_path = out / RESULT_FILE
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if not same_settings(done["config"], config.to_run_config()):
            raise RuntimeError(f"{result_path} was written under other settings; use another --out")
        return done
    model, _ = load_backbone(config.fed.server_run)
    started = time.perf_counter()
    with PeakMemory() as memory:
        if METHODS[method].sharing is None:
            from nptface.simulation.experiment import centralised_baseline

            centralised_baseline(config.fed, out)
            trained, _ = load_backbone(out)
        else:
            from nptface.simulation.run import simulate

            curve = out / CURVE_FILE
            simulate(config, cpus_per_client, observers=[CurveObserver(evaluation, curve, model, bench.curve_every)])
            state = latest_state(out)
            assert state is not None
            trained = model
            trained.load_state_dict(state.backbone, strict=False)
        final = evaluation(trained)
    seconds = time.perf_counter() - started
    curve_path = out / CURVE_FILE
    record(curve_path, config.fed.num_rounds, final)
    result = {
        "method": method,
        "seed": seed,
        "config": config.to_run_config(),
        "final": final,
        "curve": json.loads(curve_path.read_text()),
        "seconds": seconds,
        "peak_pss_gib": memory.peak_bytes / 2**30,
    }
    atomic_write_json(result_path, result)
    return result


def run_bench(bench: Bench, cpus_per_client: float = 1.0, say: Any = print) -> dict[str, Any]:
    """Every (method, seed) of ``bench``, then ``one-owner.md``, ``one-owner.json`` and ``one-owner.png``."""
    out = Path(bench.out_dir)
    results: dict[str, list[dict]] = {m: [] for m in bench.methods}
    server: list[dict[str, Any]] = []
    for seed in bench.seeds:
        first = bench.config(bench.methods[0], seed)
        model, _ = load_backbone(first.fed.server_run)
        evaluation = OwnerEvaluation(first, model.config.input_size, bench.unseen_identities, bench.unseen_images)
        server.append(evaluation(model))
        for method in bench.methods:
            say(f"one-owner: seed {seed}, {method} ...")
            result = run_one(bench, method, seed, evaluation, cpus_per_client)
            if bench.interpolate:
                result = {**result, "interpolated": evaluate_interpolated(bench, method, seed, evaluation)}
            results[method].append(result)
            say(f"one-owner: seed {seed}, {method}: {result['seconds']:.0f} s, {_brief(result['final'])}")
    summary = {
        "setting": {k: v for k, v in asdict(bench).items() if k not in ("out_dir",)},
        "methods": {m: {"label": bench.label(m), "shared": METHODS[m].shared} for m in bench.methods},
        "server_model": _aggregate(server),
        "final": {m: _aggregate([r["final"] for r in rs]) for m, rs in results.items()},
        "curves": {m: _mean_curve([r["curve"] for r in rs]) for m, rs in results.items()},
        "seconds": {m: [r["seconds"] for r in rs] for m, rs in results.items()},
        "peak_pss_gib": {m: max(r["peak_pss_gib"] for r in rs) for m, rs in results.items()},
        "interpolated": {
            m: {str(a): _aggregate([r["interpolated"][str(a)] for r in rs]) for a in bench.interpolate}
            for m, rs in results.items()
        },
    }
    table = one_owner_table(summary)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "one-owner.json", summary)
    _plot(summary, out / "one-owner.png")
    changed = "".join(f", {key}={value}" for key, value in sorted(bench.settings.items()))
    report = (
        f"# One owner per device: {bench.devices} devices, {bench.rounds} rounds, "
        f"{len(bench.seeds)} seed(s){changed}\n\n{table}\n\n![curves](one-owner.png)\n"
    )
    atomic_write_bytes(out / "one-owner.md", report.encode())
    summary["table"] = table
    return summary


def evaluate_interpolated(bench: Bench, method: str, seed: int, evaluation: OwnerEvaluation) -> dict[str, dict]:
    """The evaluation of (method, seed)'s final model mixed with the server model at each of ``bench.interpolate``.

    Cached per mixing weight in the run directory's ``interpolated.json`` (a rerun evaluates only new weights).
    """
    out = bench.run_dir(method, seed)
    path = out / INTERPOLATED_FILE
    done: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
    missing = [alpha for alpha in bench.interpolate if str(alpha) not in done]
    if missing:
        server, _ = load_backbone(bench.config(method, seed).fed.server_run)
        tuned, _ = load_backbone(out)
        start, final = server.state_dict(), tuned.state_dict()
        for alpha in missing:
            server.load_state_dict(interpolate_state(start, final, alpha))
            done[str(alpha)] = evaluation(server)
        atomic_write_json(path, done)
    return {str(alpha): done[str(alpha)] for alpha in bench.interpolate}


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix(PREFIX)} {_pct(metrics.get(k))}" for k in (TAR_1E3, DIR, SERVER_TAR))


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation over seeds of each metric (None where a seed could not measure it)."""
    out = {}
    for key in METRICS:
        values = [r.get(key) for r in runs]
        if any(v is None for v in values):
            out[key] = {"mean": None, "std": None}
        else:
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def _mean_curve(curves: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    rounds = sorted(set.intersection(*(set(c) for c in curves)), key=int)
    return {r: {k: v["mean"] for k, v in _aggregate([c[r] for c in curves]).items()} for r in rounds}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"


def _cell(stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return "—"
    return f"{stats['mean'] * 100:.1f} ± {stats['std'] * 100:.1f}"


def one_owner_table(summary: dict[str, Any]) -> str:
    header = [
        "method",
        "client TAR@FAR=1e-3",
        "client TAR@FAR=1e-2",
        "rank-1",
        "DIR@FPIR=1e-2",
        "server TAR@FAR=1e-2",
        "server TAR@FAR=1e-3",
        "wall s / run",
        "peak PSS GiB",
        "what is shared",
    ]
    rows = [[SERVER_MODEL, *(_cell(summary["server_model"][k]) for k in METRICS), "—", "—", "nothing"]]
    for method, final in summary["final"].items():
        seconds = summary["seconds"][method]
        rows.append(
            [
                summary["methods"][method]["label"],
                *(_cell(final[k]) for k in METRICS),
                f"{statistics.fmean(seconds):.0f}",
                f"{summary['peak_pss_gib'][method]:.2f}",
                summary["methods"][method]["shared"],
            ]
        )
        for alpha, mixed in summary.get("interpolated", {}).get(method, {}).items():
            rows.append(
                [
                    f"{summary['methods'][method]['label']}, mixed with the server model at alpha={alpha}",
                    *(_cell(mixed[k]) for k in METRICS),
                    "—",
                    "—",
                    "as above; exported as server + alpha·(final − server) (final-mix, WiSE-FT)",
                ]
            )
    return markdown_table(header, rows) + "\n\nPercent, mean ± standard deviation over seeds."


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (TAR_1E3, RANK1, DIR, SERVER_TAR)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for method, curve in summary["curves"].items():
        rounds = [int(r) for r in curve]
        for ax, key in zip(axes, keys, strict=True):
            values = [np.nan if curve[r][key] is None else curve[r][key] for r in curve]
            if len(rounds) == 1:
                ax.axhline(values[0], ls="--", c="k", label=summary["methods"][method]["label"])
            else:
                ax.plot(rounds, values, marker="o", label=summary["methods"][method]["label"])
    for ax, key in zip(axes, keys, strict=True):
        ax.set_title(key.removeprefix(PREFIX))
        ax.set_xlabel("round")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=100)
    plt.close(fig)
    path.with_suffix(".tmp.png").replace(path)


def mixing_weights(text: str) -> tuple[float, ...]:
    """``--interpolate``'s value: comma-separated numbers (their range is checked by :class:`Bench`)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in (0, 1), e.g. 0.25,0.5; got {text!r}"
        ) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options on ``parser``: one parser for ``bench_one_owner.py`` and ``nptface fed bench one-owner``."""
    parser.description = parser.description or __doc__.split("\n\n")[0]
    parser.add_argument(
        "--server-run", default="runs/quickstart", help="the server model to fine-tune (a run directory)"
    )
    parser.add_argument("--out", required=True, help="folder for the per-(method, seed) runs and the table")
    parser.add_argument("--devices", type=int, default=Bench.devices, help="phones, one owner each")
    parser.add_argument("--rounds", type=int, default=Bench.rounds, help="federated rounds")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument(
        "--methods",
        help=f"comma-separated, from {', '.join(METHODS)} (default: all but fedprox, which needs "
        "--set local-epochs=N with N >= 2 to act)",
    )
    parser.add_argument("--fraction", type=float, default=Bench.fraction, help="share of devices sampled per round")
    parser.add_argument(
        "--failure-rate", type=float, default=Bench.failure_rate, help="probability that a sampled device drops out"
    )
    parser.add_argument(
        "--unseen-identities",
        type=int,
        default=Bench.unseen_identities,
        help="identities nobody trains on: verification pairs and non-mated searches",
    )
    parser.add_argument("--unseen-images", type=int, default=Bench.unseen_images, help="images per unseen identity")
    parser.add_argument("--fedprox-mu", type=float, default=FEDPROX_MU, help="the fedprox method's proximal weight mu")
    parser.add_argument("--curve-every", type=int, default=Bench.curve_every, help="curve point every N rounds")
    parser.add_argument(
        "--interpolate",
        type=mixing_weights,
        default=(),
        help="comma-separated mixing weights in (0, 1): also evaluate server + alpha * (final - server) (WiSE-FT)",
    )
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="CPUs Ray reserves per client")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any run-config key for every method, e.g. --set local-epochs=3 (repeatable)",
    )


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark that ``args`` (parsed by :func:`configure_parser`'s options) describe; print its table."""
    bench = Bench(
        server_run=args.server_run,
        out_dir=args.out,
        devices=args.devices,
        rounds=args.rounds,
        seeds=tuple(range(args.seeds)),
        methods=DEFAULT_METHODS
        if args.methods is None
        else tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        fraction=args.fraction,
        failure_rate=args.failure_rate,
        unseen_identities=args.unseen_identities,
        unseen_images=args.unseen_images,
        curve_every=args.curve_every,
        fedprox_mu=args.fedprox_mu,
        interpolate=args.interpolate,
        settings=dict(parse_override(text) for text in args.set),
    )
    summary = run_bench(bench, args.cpus_per_client)
    print(summary["table"])
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return run_from_args(parser.parse_args(argv))
