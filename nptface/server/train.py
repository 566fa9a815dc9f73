"""A plain, correct training loop for a backbone and its proxy head (the paper's recipe).

The recipe of the NPT paper for MobileFaceNet: SGD with momentum 0.9, lr 0.1 divided by 10 at
epochs 30 and 45 of 65, layer-wise weight decay (5e-4 on the proxies, 1e-4 on the embedding
layer, 1e-5 on the rest of the backbone, none on PReLU slopes, whose decay would push the
activation towards a ReLU and BatchNorm's affine terms, which only rescale). Milestones are given
as fractions of the run so that a few-minute CPU run keeps the recipe's shape.

This loop is deliberately small; the full trainer (configs, exact resume, DDP, AMP) builds on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nptface.core.heads import ProxyHead
from nptface.core.mobilefacenet import MobileFaceNet
from nptface.core.preprocess import normalize

logger = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    epochs: int = 65
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    milestones: tuple[float, ...] = (30 / 65, 45 / 65)  # fractions of the run; lr /= 10 at each
    warmup_fraction: float = 0.0  # linear warm-up over this fraction of the steps
    weight_decay_proxies: float = 5e-4
    weight_decay_embedding: float = 1e-4
    weight_decay_backbone: float = 1e-5
    flip: bool = True  # random horizontal flip augmentation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the run in (0, 1), got {self.milestones}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    metrics: dict[str, float] = field(default_factory=dict)


def parameter_groups(model: MobileFaceNet, head: ProxyHead, config: OptimConfig) -> list[dict]:
    """SGD parameter groups with the recipe's layer-wise weight decay."""
    embedding = {id(p) for p in model.embedding_parameters()}
    no_decay = {
        id(p)
        for module in model.modules()
        if isinstance(module, (nn.PReLU, nn.BatchNorm2d))
        for p in module.parameters(recurse=False)
    }
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "embedding": [], "no_decay": []}
    for p in model.parameters():
        if id(p) in no_decay:
            groups["no_decay"].append(p)
        elif id(p) in embedding:
            groups["embedding"].append(p)
        else:
            groups["backbone"].append(p)
    return [
        {"name": "backbone", "params": groups["backbone"], "weight_decay": config.weight_decay_backbone},
        {"name": "embedding", "params": groups["embedding"], "weight_decay": config.weight_decay_embedding},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
        {"name": "proxies", "params": [head.proxies], "weight_decay": config.weight_decay_proxies},
    ]


def lr_at(step: int, total_steps: int, config: OptimConfig) -> float:
    """Step decay at the milestones, after an optional linear warm-up."""
    warmup = int(config.warmup_fraction * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = step / total_steps
    return config.lr * 0.1 ** sum(progress >= m for m in config.milestones)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = images.clone()
    images[flip] = images[flip].flip(2)  # NHWC: width is dim 2
    return images


def train(
    model: MobileFaceNet,
    head: ProxyHead,
    dataset: Dataset,
    config: OptimConfig,
    on_epoch_end: Callable[[int], dict[str, float]] | None = None,
    progress: bool = True,
) -> list[EpochRecord]:
    """Train ``model`` and ``head`` in place on ``dataset``; return one record per epoch.

    ``on_epoch_end(epoch)`` may evaluate and return metrics to log with the epoch.
    """
    if head.num_classes != dataset.num_classes:
        raise ValueError(f"head has {head.num_classes} proxies but the dataset has {dataset.num_classes} classes")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"dataset has {len(dataset)} images, fewer than one batch of {config.batch_size}")
    optimizer = torch.optim.SGD(
        parameter_groups(model, head, config), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
    )
    total_steps = config.epochs * len(loader)
    history: list[EpochRecord] = []
    step = 0
    for epoch in range(config.epochs):
        model.train()
        head.train()
        losses, correct, seen = [], 0, 0
        start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for images, labels in bar:
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if config.flip:
                images = _augment(images, generator)
            out = head(model(normalize(images)), labels)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"loss became {out.loss.item()} at epoch {epoch + 1}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            step += 1
            losses.append(out.loss.item())
            correct += int((out.cosines.argmax(1) == labels).sum())
            seen += len(labels)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.3g}", img_s=f"{seen / elapsed:.0f}")
        seconds = time.perf_counter() - start
        record = EpochRecord(
            epoch=epoch + 1,
            loss=float(np.mean(losses)),
            train_accuracy=correct / seen,
            lr=lr,
            seconds=seconds,
            images_per_second=seen / seconds,
        )
        if on_epoch_end is not None:
            record.metrics = on_epoch_end(epoch + 1)
        logger.info(
            "epoch %d: loss %.4f, train acc %.3f, lr %.3g, %.0f img/s %s",
            record.epoch, record.loss, record.train_accuracy, record.lr, record.images_per_second,
            " ".join(f"{k}={v:.4f}" for k, v in record.metrics.items()),
        )
        history.append(record)
    return history
