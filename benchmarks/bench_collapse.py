"""Claim: exact NPT from a random start bunches the embeddings; find which factor does it.

Trains a small MobileFaceNet on synthetic identities with the trainer's recipe (SGD, Nesterov
momentum 0.9, lr 0.1 with linear warm-up and /10 steps, the NPT recipe's layer-wise weight decay)
in a bare loop, so that one factor at a time can be changed: images per identity, identities,
batch, warm-up (of everything, or of the proxies alone with the backbone frozen), the proxies'
initial direction and norm (unit rows as the trainer does, xavier as the authors' code does, or
imprinted from the random backbone's class means), k, the negative search (exact top-k,
semi-hard, the streamed head's candidate pool, the authors' zeroed-target sort) and the proxies'
weight decay. Every run reports the collapse indicators on 100 held-out identities x 10 images:
the mean cosine between embeddings of *different* identities, the FAR=1e-2 threshold, 10-fold
accuracy; and, during training, the batch's mean different-identity cosine, the mean proxy norm
and how many distinct proxies are the batch's nearest negatives (hubs).

    .venv/bin/python benchmarks/bench_collapse.py --identities 1000 --images 6 --epochs 3 \
        --seeds 0 1 --variants exact semihard pool-0.1 xavier [--out runs/bench-collapse]

Finding: exact (hardest) negatives and ArcFace/CosFace collapse the embeddings to an effective
rank of about 2-3 of 128 from a random start (every embedding moves to directions far from all
proxies); semi-hard negatives (``npt_loss(..., negatives="semihard")``) do not.

Results are appended to ``<out>/results.jsonl`` (a finished run with the same settings is
reused) and the table for the requested runs is printed as markdown.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

from nptface.core.datasets import InMemoryFaceDataset, SyntheticFaceDataset, materialize
from nptface.core.embedding import embed_dataset
from nptface.core.evaluation import evaluate_embeddings
from nptface.core.heads import ScalableNPTHead
from nptface.core.losses import margin_softmax_loss, npt_loss
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.optim_recipe import WeightDecay, parameter_groups
from nptface.core.pairs import all_genuine_pairs
from nptface.core.preprocess import normalize
from nptface.core.synthetic import HELDOUT_IDS, SERVER_IDS
from nptface.core.tables import markdown_table


@dataclass
class Recipe:
    """One run's settings; a variant overrides some of them."""

    identities: int = 1000
    images: int = 6
    epochs: float = 3.0
    batch: int = 64
    lr: float = 0.1
    warmup_epochs: float = 0.2
    milestones: tuple[float, ...] = (2.0 / 3.0, 0.87)  # fractions of the run
    proxy_warmup_epochs: float = 0.0  # backbone frozen, proxies alone train
    init: str = "unit"  # unit | xavier | imprint
    init_norm: float = 0.0  # > 0: rescale the initial proxy rows to this norm
    search: str = "exact"  # exact | semihard | pool | authors; arcface | cosface as controls
    k: int = 6
    candidate_rate: float = 0.1  # search = pool
    curriculum_epochs: float = 0.0  # pool: grow the rate linearly to 1 (exact) over these epochs
    semihard_until: float = 0.0  # semihard: > 0 switches to exact top-k at this fraction of the run
    weight_decay_proxies: float = 5e-4
    width: float = 0.25
    input_size: int = 32
    embedding_dim: int = 128
    heldout_identities: int = 100
    heldout_images: int = 10
    diag_every: int = 20
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


VARIANTS: dict[str, dict[str, Any]] = {
    "exact": {},
    "pool-0.1": {"search": "pool", "candidate_rate": 0.1},
    "semihard": {"search": "semihard"},
    "authors": {"search": "authors"},
    "authors-xavier-k1": {"search": "authors", "init": "xavier", "k": 1, "warmup_epochs": 0.0},
    "xavier": {"init": "xavier"},
    "unit-xaviernorm": {"init_norm": -1.0},  # unit directions, xavier's row norm
    "imprint": {"init": "imprint"},
    "proxy-warmup": {"proxy_warmup_epochs": 0.5},
    "no-warmup": {"warmup_epochs": 0.0},
    "long-warmup": {"warmup_epochs": 1.0},
    "k1": {"k": 1},
    "k2": {"k": 2},
    "k20": {"k": 20},
    "wd0": {"weight_decay_proxies": 0.0},
    "batch256": {"batch": 256},
    "lr0.01": {"lr": 0.01},
    "semihard-then-exact": {"search": "semihard", "semihard_until": 1.0 / 3.0},
    "arcface": {"search": "arcface"},
    "cosface": {"search": "cosface"},
    "curriculum": {"search": "pool", "candidate_rate": 0.01, "curriculum_epochs": 1.0},
}


@dataclass
class Outcome:
    variant: str
    recipe: dict[str, Any]
    key: str
    impostor_cosine: float
    genuine_cosine: float
    threshold_far_1e2: float | None
    tar_far_1e2: float | None
    accuracy: float
    seconds: float
    trace: list[dict[str, float]] = field(default_factory=list)
    precise_bn: dict[str, float | None] = field(default_factory=dict)  # the same, BN statistics re-estimated
    heldout_rank: float = 0.0  # effective rank of the held-out embeddings
    proxy_rank: float = 0.0
    impostor_quantiles: list[float] = field(default_factory=list)  # 50, 90, 99 %


def _dataset(ids: range, count: int, images: int, size: int, cache: Path) -> InMemoryFaceDataset:
    """Render once and keep the pixels on disk: every run of a scale trains on the same faces."""
    path = cache / f"faces-{ids.start}-{count}x{images}-{size}px.npz"
    if path.is_file():
        stored = np.load(path)
        labels = stored["labels"]
        return InMemoryFaceDataset(stored["images"], labels, [f"synth-{ids[i]:07d}" for i in range(count)])
    data = materialize(SyntheticFaceDataset(ids[:count], images, "wild", 0, size), progress=False)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=data.images, labels=data.labels)
    return data


def _lr(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    epoch = step / steps_per_epoch
    if epoch < recipe.warmup_epochs:
        return recipe.lr * (step + 1) / math.ceil(recipe.warmup_epochs * steps_per_epoch)
    return recipe.lr * 0.1 ** sum(epoch >= m * recipe.epochs for m in recipe.milestones)


def _init_proxies(head: ScalableNPTHead, recipe: Recipe, backbone: MobileFaceNet, data: InMemoryFaceDataset) -> None:
    with torch.no_grad():
        if recipe.init == "xavier":
            torch.nn.init.xavier_uniform_(head.proxies)
        elif recipe.init == "imprint":
            embeddings = torch.from_numpy(embed_dataset(backbone, data, batch_size=256))
            means = torch.zeros_like(head.proxies).index_add_(0, torch.from_numpy(data.labels), embeddings)
            head.proxies.copy_(F.normalize(means, dim=1))
        elif recipe.init != "unit":
            raise ValueError(f"init must be unit, xavier or imprint, got {recipe.init!r}")
        if recipe.init_norm:
            xavier_norm = math.sqrt(2.0 * recipe.embedding_dim / (recipe.identities + recipe.embedding_dim))
            norm = xavier_norm if recipe.init_norm < 0 else recipe.init_norm
            head.proxies.copy_(F.normalize(head.proxies, dim=1) * norm)


def _loss(
    head: ScalableNPTHead, embeddings: torch.Tensor, labels: torch.Tensor, recipe: Recipe, epoch: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss under ``recipe.search`` and, for the trace, each sample's positive and k hardest negative cosines."""
    if recipe.search == "pool":
        rate = recipe.candidate_rate
        if recipe.curriculum_epochs:
            rate = min(1.0, rate + (1.0 - rate) * epoch / recipe.curriculum_epochs)
        head.candidate_rate = rate if rate < 1.0 else 0.0
        out = head(embeddings, labels)
        return out.loss, out.cosines  # [B, 1 + k]: positive, then negatives descending
    cos = head.cosines(embeddings)
    positive = cos.gather(1, labels[:, None])
    search = recipe.search
    if search == "semihard" and recipe.semihard_until and epoch >= recipe.semihard_until * recipe.epochs:
        search = "exact"
    if search == "exact":
        loss = npt_loss(cos, labels, k=recipe.k)
    elif search == "authors":
        negatives = cos.scatter(1, labels[:, None], 0.0).sort(dim=1, descending=True).values[:, : recipe.k]
        loss = (2.0 * (negatives - positive + 0.5).clamp_min(0.0)).sum(1).mean()
    elif search == "semihard":
        loss = npt_loss(cos, labels, k=recipe.k, negatives="semihard")
    elif search == "arcface":
        loss = margin_softmax_loss(cos, labels, s=64.0, angular_margin=0.5)
    elif search == "cosface":
        loss = margin_softmax_loss(cos, labels, s=64.0, cosine_margin=0.35)
    else:
        raise ValueError(f"search must be exact, semihard, pool, authors, arcface or cosface, got {recipe.search!r}")
    masked = cos.detach().masked_fill(F.one_hot(labels, cos.shape[1]).bool(), float("-inf"))
    return loss, torch.cat([positive.detach(), masked.topk(recipe.k, 1).values], 1)


def effective_rank(rows: torch.Tensor | np.ndarray) -> float:
    """exp(entropy) of the normalised squared singular values of the unit rows (Roy & Vetterli, 2007).

    d for rows spread over all d directions, 1 for rows on one line: the collapse this benchmark
    is about is a low-dimensional one, which a mean cosine near 0 can hide (points on a circle).
    """
    unit = F.normalize(torch.as_tensor(rows, dtype=torch.float64), dim=1)
    energy = torch.linalg.svdvals(unit) ** 2
    share = energy / energy.sum()
    return float(torch.exp(-(share * share.clamp_min(1e-30).log()).sum()))


def _diagnostics(
    embeddings: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor, nearest: torch.Tensor, head: ScalableNPTHead
) -> dict[str, float]:
    unit = F.normalize(embeddings.detach().float(), dim=1)
    gram = unit @ unit.t()
    different = labels[:, None] != labels[None, :]
    return {
        "batch_impostor_cos": float(gram[different].mean()),
        "positive_cos": float(selected[:, 0].mean()),
        "nearest_negative_cos": float(selected[:, 1].mean()),
        "distinct_nearest_share": float(nearest.unique().numel() / len(nearest)),
        "proxy_norm": float(head.proxies.detach().norm(dim=1).mean()),
        "batch_rank": effective_rank(unit),
    }


def train_once(variant: str, recipe: Recipe, cache: Path) -> Outcome:
    torch.manual_seed(recipe.seed)
    train = _dataset(SERVER_IDS, recipe.identities, recipe.images, recipe.input_size, cache)
    heldout = _dataset(HELDOUT_IDS, recipe.heldout_identities, recipe.heldout_images, recipe.input_size, cache)
    backbone = MobileFaceNet(MobileFaceNetConfig(recipe.embedding_dim, recipe.width, recipe.input_size))
    head = ScalableNPTHead(
        recipe.identities,
        recipe.embedding_dim,
        k=recipe.k,
        candidate_rate=recipe.candidate_rate if recipe.search == "pool" else 0.0,
    )
    start = time.perf_counter()
    _init_proxies(head, recipe, backbone, train)
    groups = parameter_groups(backbone, head.proxies, WeightDecay(proxies=recipe.weight_decay_proxies))
    optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    images = torch.from_numpy(train.images)
    labels_all = torch.from_numpy(train.labels)
    steps_per_epoch = len(train) // recipe.batch
    total = int(recipe.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(recipe.seed)
    trace: list[dict[str, float]] = []
    order = torch.empty(0, dtype=torch.long)
    backbone.train()
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(train), generator=generator)
        index = order[(step % steps_per_epoch) * recipe.batch :][: recipe.batch]
        batch = images[index]
        flip = torch.rand(len(index), generator=generator) < 0.5
        batch[flip] = batch[flip].flip(2)
        labels = labels_all[index]
        epoch = step / steps_per_epoch
        lr = _lr(recipe, step, steps_per_epoch)
        frozen = epoch < recipe.proxy_warmup_epochs
        for group in optimizer.param_groups:
            group["lr"] = lr if group["name"] == "proxies" or not frozen else 0.0
        embeddings = backbone(normalize(batch))
        loss, selected = _loss(head, embeddings, labels, recipe, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"{variant}: loss {float(loss)} at step {step}")
        if step % recipe.diag_every == 0 or step == total - 1:
            nearest = _nearest_negative(head, embeddings, labels)
            trace.append(
                {
                    "step": step,
                    "epoch": round(epoch, 3),
                    "loss": float(loss.detach()),
                    **_diagnostics(embeddings, labels, selected, nearest, head),
                }
            )
    seconds = time.perf_counter() - start
    outcome = _evaluate(variant, recipe, backbone, heldout, seconds, trace)
    outcome.proxy_rank = effective_rank(head.proxies.detach())
    recalibrated = _evaluate(variant, recipe, _precise_bn(backbone, images, generator), heldout, seconds, [])
    outcome.precise_bn = {
        "impostor_cosine": recalibrated.impostor_cosine,
        "accuracy": recalibrated.accuracy,
        "threshold_far_1e2": recalibrated.threshold_far_1e2,
    }
    return outcome


@torch.no_grad()
def _precise_bn(
    backbone: MobileFaceNet, images: torch.Tensor, generator: torch.Generator, batches: int = 50, batch: int = 64
) -> MobileFaceNet:
    """A copy whose BatchNorm running statistics are re-estimated with the final weights (PreciseBN)."""
    model = copy.deepcopy(backbone).train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    for _ in range(batches):
        model(normalize(images[torch.randint(0, len(images), (batch,), generator=generator)]))
    return model.eval()


@torch.no_grad()
def _nearest_negative(head: ScalableNPTHead, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    cos = head.cosines(embeddings.detach()).masked_fill(F.one_hot(labels, head.num_classes).bool(), float("-inf"))
    return cos.argmax(1)


def _evaluate(
    variant: str,
    recipe: Recipe,
    backbone: MobileFaceNet,
    heldout: InMemoryFaceDataset,
    seconds: float,
    trace: list[dict[str, float]],
) -> Outcome:
    embeddings = embed_dataset(backbone, heldout, batch_size=256)
    labels = np.asarray(heldout.labels)
    report = evaluate_embeddings(embeddings, labels, all_genuine_pairs(labels, seed=0)).verification
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    gram = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    at_1e2 = report.tar_at_far.get(0.01)
    impostors = gram[np.triu(~same, 1)]
    return Outcome(
        variant,
        dataclasses.asdict(recipe),
        recipe.key(),
        float(impostors.mean()),
        float(gram[same & off_diagonal].mean()),
        None if at_1e2 is None else at_1e2.threshold,
        None if at_1e2 is None else at_1e2.tar,
        float(report.accuracy.mean),
        seconds,
        trace,
        heldout_rank=effective_rank(embeddings),
        impostor_quantiles=[float(q) for q in np.quantile(impostors, [0.5, 0.9, 0.99])],
    )


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        r = o.recipe
        last = o.trace[-1] if o.trace else {}
        rows.append(
            [
                o.variant,
                f"{r['identities']}x{r['images']}",
                r["epochs"],
                r["seed"],
                _cell(o.impostor_cosine),
                _cell(o.impostor_quantiles[1] if o.impostor_quantiles else None),
                _cell(o.genuine_cosine),
                _cell(o.threshold_far_1e2),
                f"{100 * o.accuracy:.2f}",
                _cell(100 * o.precise_bn["accuracy"] if o.precise_bn else None, 2),
                _cell(o.heldout_rank, 1),
                _cell(o.proxy_rank, 1),
                _cell(min(t["batch_rank"] for t in o.trace) if o.trace else None, 1),
                _cell(last.get("batch_rank"), 1),
                _cell(min(t["distinct_nearest_share"] for t in o.trace) if o.trace else None, 2),
                _cell(last.get("proxy_norm"), 2),
                f"{o.seconds:.0f}",
            ]
        )
    return markdown_table(
        [
            "run",
            "ids x imgs",
            "epochs",
            "seed",
            "impostor cos mean",
            "impostor cos q90",
            "genuine cos",
            "thr@FAR=1e-2",
            "acc %",
            "PreciseBN acc %",
            "held-out eff. rank",
            "proxy eff. rank",
            "batch eff. rank min",
            "batch eff. rank end",
            "distinct nearest-neg share min",
            "proxy norm end",
            "wall s",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=["exact", "pool-0.1"], choices=sorted(VARIANTS))
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override any Recipe field for every run, e.g. batch=128 width=0.5",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-collapse"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    finished = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            stored = json.loads(line)
            finished[(stored["variant"], stored["key"])] = Outcome(**stored)
    common: dict[str, Any] = {"identities": args.identities, "images": args.images, "epochs": args.epochs}
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        if name not in Recipe.__dataclass_fields__:
            raise SystemExit(
                f"--set {assignment}: no Recipe field {name!r}; fields: {sorted(Recipe.__dataclass_fields__)}"
            )
        common[name] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    outcomes = []
    for variant in args.variants:
        for seed in args.seeds:
            recipe = Recipe(**{**common, **VARIANTS[variant], "seed": seed})
            if isinstance(recipe.milestones, list):
                recipe.milestones = tuple(recipe.milestones)
            outcome = finished.get((variant, recipe.key()))
            if outcome is None:
                outcome = train_once(variant, recipe, args.out / "cache")
                with open(results, "a") as handle:
                    handle.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
            print(
                f"{variant} seed {seed}: impostor cos {outcome.impostor_cosine:.3f} thr "
                f"{_cell(outcome.threshold_far_1e2)} acc {100 * outcome.accuracy:.2f} ({outcome.seconds:.0f} s)",
                flush=True,
            )
            outcomes.append(outcome)
    print(table(outcomes))


if __name__ == "__main__":
    main()
