"""The trainer: a backbone and its proxy head from a config, on a GPU server or a CPU.

GPU first (bf16 autocast, channels_last, optional ``torch.compile``, pinned memory and
non-blocking copies of uint8 batches, normalised on the device), CPU otherwise (channels_last
too: oneDNN's depthwise and 1x1 convolutions are faster in NHWC). Multi-GPU and
multi-node through ``torchrun`` + DistributedDataParallel; a plain single process never touches
``torch.distributed``. The proxy matrix is either replicated on every rank (DDP wraps backbone
and head and all-reduces the ``[C, d]`` proxy gradient) or, with ``head.shard_proxies``, sharded
by class: each rank keeps its rows outside DDP (:mod:`nptface.server.training.sharding.proxy_shard`), DDP wraps
the backbone only, the loss merges per-shard top-k (:mod:`nptface.server.training.sharding.sharded_npt`), and
backbone gradients are scaled by the world size because DDP averages what the global loss sums.

Everything a run needs to continue is checkpointed atomically every N steps and at the end of
each epoch (:mod:`nptface.server.training.train_state`); the data order is a pure function of (seed,
epoch) (:mod:`nptface.server.training.sampler`), so a run killed at any instant and resumed ends with
the same weights as one never interrupted (bitwise on CPU with deterministic settings), on any
number of processes. Checkpoints always hold the full proxy matrix and its momentum (gathered
from the shards), so that holds with sharding too. Only rank 0 logs, evaluates and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from nptface.core.atomic import atomic_write_bytes, atomic_write_json
from nptface.core.checkpoint import CheckpointMeta, save_checkpoint
from nptface.core.cpu_threads import auto_cpu_threads
from nptface.core.evaluation import EvaluationResult, evaluate_model
from nptface.core.heads import ProxyHead, ScalableNPTHead, build_head, head_defaults
from nptface.core.losses import check_npt_margin
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig
from nptface.core.preprocess import normalize
from nptface.core.tables import markdown_table
from nptface.server.training import distributed
from nptface.server.training.collapse_guard import CollapseGuard, SpreadMeter
from nptface.server.training.config import TrainConfig
from nptface.server.training.data import EvalData, build_eval_set, build_train_data
from nptface.server.training.lazy_sgd import LazyRowSGD
from nptface.server.training.optim import build_optimizer, lr_at
from nptface.server.training.report import ReportSection, RunReport, plot_roc, plot_training
from nptface.server.training.sampler import FlipView, GlobalBatchSampler
from nptface.server.training.sharding.proxy_shard import (
    ShardedNPTHead,
    clip_sharded_grad_norm_,
    gather_full_state,
    gather_rows,
    slice_full_state,
)
from nptface.server.training.sharding.sharded_npt import backbone_grad_scale
from nptface.server.training.train_state import (
    TrainPosition,
    TrainState,
    latest_checkpoint,
    read_train_state,
    save_train_state,
)
from nptface.server.training.warm_start import init_record, warm_start

logger = logging.getLogger(__name__)


class RunExistsError(FileExistsError):
    """Starting fresh would overwrite a run that has checkpoints."""


def checkpoint_to_resume(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint ``resume`` (``never``, ``auto`` or ``must``) continues from, or an error.

    Cheap (it reads folder names and a pointer), so the trainer calls it before any data is
    rendered or read: a run that would be refused is refused in a second, not after minutes.
    """
    checkpoints_dir = run_dir / "checkpoints"
    found = latest_checkpoint(checkpoints_dir) if checkpoints_dir.exists() else None
    if found is None and resume == "must":
        raise FileNotFoundError(f"--resume: no checkpoint in {checkpoints_dir}")
    if found is not None and resume == "never":
        raise RunExistsError(
            f"{run_dir} already has checkpoints; pass --resume to continue it, "
            f"or choose another run name (--set run.name=...)"
        )
    return found


KILL_AT_STEP_VARIABLE = "NPTFACE_TEST_KILL_AT_STEP"


def _test_kill_step() -> int | None:
    """Test-only: with ``NPTFACE_TEST_KILL_AT_STEP=N`` the process SIGKILLs itself right after step N
    (and that step's checkpoint, if one falls there), so the resume-after-kill test picks the
    instant exactly instead of racing a poller. Never set outside tests."""
    raw = os.environ.get(KILL_AT_STEP_VARIABLE)
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"{KILL_AT_STEP_VARIABLE} must be a step number, got {raw!r}")
    return int(raw)


@dataclass
class _Window:
    loss_sum: float = 0.0
    correct: int = 0
    steps: int = 0
    images: int = 0
    start: float = 0.0

    def record(self, world_size: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {
            "loss": self.loss_sum / max(1, self.steps),
            "images_per_second": self.images * world_size / elapsed,
            "train_accuracy": self.correct / max(1, self.images),
        }


class _Meter:
    """Loss and accuracy summed on the device, read back only when flushed (no per-step sync).

    ``loss_scale`` turns the loss a rank backpropagates into the loss it reports: a sharded
    head's rank holds ``1 / world_size`` of the global batch's loss.
    """

    def __init__(self, device: torch.device, loss_scale: float = 1.0) -> None:
        self.device = device
        self.loss_scale = loss_scale
        self._loss = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self._steps = 0
        self._images = 0
        self.window = _Window(start=time.perf_counter())

    def add(self, loss: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        self._loss += loss.detach().double() * self.loss_scale
        self._correct += (predictions == labels).sum()
        self._steps += 1
        self._images += len(labels)

    def flush(self, position: TrainPosition, epoch: int) -> _Window:
        """Move the pending sums into the epoch totals (checkpointed) and the log window."""
        loss, correct = float(self._loss.item()), int(self._correct.item())
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss} in epoch {epoch + 1} before step {position.global_step}"
            )
        position.epoch_loss_sum += loss
        position.epoch_correct += correct
        position.epoch_seen += self._images
        self.window.loss_sum += loss
        self.window.correct += correct
        self.window.steps += self._steps
        self.window.images += self._images
        self._loss.zero_()
        self._correct.zero_()
        self._steps = self._images = 0
        return self.window

    def reset_window(self) -> None:
        self.window = _Window(start=time.perf_counter())


class TrainStep(nn.Module):
    """Backbone + head as one module: DDP wraps it whole (replicated proxies), or wraps the backbone inside it."""

    def __init__(self, backbone: nn.Module, head: ProxyHead | ShardedNPTHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss, the predicted classes and the (detached) embeddings, which the collapse guard reads."""
        embeddings = self.backbone(images)
        out = self.head(embeddings, labels)
        return out.loss, out.predictions, embeddings.detach()


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, Any]]
    final_eval: dict[str, EvaluationResult]
    seconds: float
    resumed_from: int | None  # global step of the checkpoint resumed from


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path | None = None, resume: str = "auto") -> None:
        """``resume`` is checked against the run directory here, before any data is built (see :meth:`fit`)."""
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else Path(config.run.output_dir) / config.run.name
        self.checkpoints_dir = self.run_dir / "checkpoints"
        resume_from = checkpoint_to_resume(self.run_dir, resume)
        self.context = distributed.setup(config.device.device)
        self.device = self.context.device
        self._configure_backend()
        torch.manual_seed(config.run.seed)
        self.model_config = MobileFaceNetConfig(config.model.embedding_dim, config.model.width, config.model.input_size)
        progress = config.log.progress and self.context.is_main
        self.train_set, heldout = build_train_data(config.data, config.model.input_size, config.run.seed, progress)
        self.backbone = MobileFaceNet(self.model_config)
        head_name, head_params = self._head_choice(self.train_set.num_classes)
        head = build_head(head_name, self.train_set.num_classes, config.model.embedding_dim, **head_params)
        if config.model.init and resume_from is None:  # a resumed run continues from its own checkpoint
            warm_start(
                config.model.init,
                self.backbone.to(self.device),
                head,
                self.train_set,
                config.eval.batch_size,
                config.data.num_workers,
            )
        self.head = self._shard_choice(head)
        sparse = self._sparse_choice()
        self.optimizer = build_optimizer(self.backbone, self.head, config.optim, sparse)
        if isinstance(self.optimizer, LazyRowSGD):
            self.head.lazy_rows = self.optimizer.lazy_rows(self.head.proxies)
        self.backbone.to(self.device)
        self.head.to(self.device)
        if config.device.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.eval_sets: list[EvalData] = (
            [build_eval_set(s, config.model.input_size, config.data.lookalike_share) for s in config.eval.sets]
            if self.context.is_main
            else []
        )
        if heldout is not None and self.context.is_main:
            self.eval_sets.insert(0, heldout)
        self.steps_per_epoch = len(self.train_set) // config.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_set)} training images are fewer than one batch of {config.optim.batch_size}"
            )
        self.state = TrainState(TrainPosition(), config.to_dict(), config.hash())
        self._tensorboard = None

    def _head_choice(self, num_classes: int) -> tuple[str, dict[str, Any]]:
        head = self.config.head
        if "delta" in head_defaults(head.name):  # the config checked the margin against 2; now C is known
            settings = {**head_defaults(head.name), **head.params}
            try:
                check_npt_margin(settings["delta"], settings["r"], num_classes)
            except ValueError as error:
                raise ValueError(f"head.params.delta / head.params.r: {error}") from None
        if head.name == "npt" and head.scalable_above and num_classes > head.scalable_above:
            logger.info(
                "%d classes > head.scalable_above = %d: using the streamed top-k NPT head",
                num_classes,
                head.scalable_above,
            )
            return "scalable_npt", {**head.params, "chunk_size": head.chunk_size, "candidate_rate": head.candidate_rate}
        return head.name, dict(head.params)

    def _shard_choice(self, head: ProxyHead) -> ProxyHead | ShardedNPTHead:
        """The head itself, or this rank's shard of it (``head.shard_proxies`` under torchrun)."""
        setting = self.config.head.shard_proxies
        if not self.context.distributed:
            if setting is True:
                logger.info("head.shard_proxies = true, but one process has nothing to shard")
            return head
        # The sharded search merges per-shard hardest top-k only; semi-hard stays replicated.
        exact_streamed = isinstance(head, ScalableNPTHead) and not head.candidate_rate and head.negatives == "hardest"
        if setting is False or (setting == "auto" and not exact_streamed):
            return head
        sharded = ShardedNPTHead(head, self.context.rank, self.context.world_size, self.config.head.chunk_size)
        if self.context.is_main:
            logger.info(
                "proxies sharded by class over %d ranks: rank 0 holds rows [%d, %d) of %d",
                self.context.world_size,
                sharded.start,
                sharded.stop,
                sharded.num_classes,
            )
        return sharded

    def _sparse_choice(self) -> bool:
        """``optim.sparse_proxies``: true needs the streamed (or sharded) head; "auto" takes it wherever it can.

        "auto" is row-sparse where true would be accepted (a streamed or sharded head, no replicated
        DDP proxies, no gradient clipping) on CPU: dense SGD's run up to rounding at about half the
        peak memory, and faster at 100k classes (BENCHMARKS.md, the sparse vs dense check). Not yet
        on CUDA, where it has not been run: true turns it on there.
        """
        setting = self.config.optim.sparse_proxies
        if setting == "auto":
            on_cpu = self.device.type == "cpu"
            return on_cpu and not self.config.optim.grad_clip > 0 and self._sparse_refusal() is None
        if setting is not True:
            return False
        refusal = self._sparse_refusal()
        if refusal is not None:
            raise ValueError(refusal)
        return True

    def _sparse_refusal(self) -> str | None:
        """Why this run cannot take row-sparse proxy updates (the head or the DDP layout), or None.

        Gradient clipping is refused with the config (``config.validate``), before a trainer exists.
        """
        if not isinstance(self.head, (ScalableNPTHead, ShardedNPTHead)):
            return (
                f"optim.sparse_proxies = true needs the streamed NPT head, but {self.train_set.num_classes} classes "
                f"<= head.scalable_above = {self.config.head.scalable_above} chose {self.head.name!r}; "
                f"lower head.scalable_above or set optim.sparse_proxies = false"
            )
        if self.context.distributed and not self.sharded:
            return (
                "optim.sparse_proxies = true with replicated proxies would make DDP all-reduce a sparse gradient; "
                'use head.shard_proxies = "auto" or true (exact hardest negatives), or optim.sparse_proxies = false'
            )
        return None

    def _catch_up_proxies(self) -> None:
        """Every proxy row as dense SGD has it: before checkpoints, evaluation and the final export."""
        if isinstance(self.optimizer, LazyRowSGD):
            self.optimizer.catch_up()

    @property
    def sharded(self) -> bool:
        return isinstance(self.head, ShardedNPTHead)

    def _configure_backend(self) -> None:
        if self.device.type == "cpu":
            threads, why = auto_cpu_threads(self.config.device.cpu_threads, self.context.world_size)
            torch.set_num_threads(threads)
            if self.context.is_main:
                logger.info("%d CPU thread(s) per rank (%s)", threads, why)
            if self.config.run.deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
                # Under the flag torch also fills every new tensor with NaN, to expose reads of
                # uninitialised memory: one more write of every activation and gradient per step
                # that changes no result (bench_cpu_fast_paths.py measures it).
                torch.utils.deterministic.fill_uninitialized_memory = False
        else:
            torch.backends.cudnn.benchmark = not self.config.run.deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # -- resume ------------------------------------------------------------------------------

    def restore(self, resume: str) -> int | None:
        """``resume``: ``never`` (refuse to overwrite a run with checkpoints), ``auto`` or ``must``."""
        found = checkpoint_to_resume(self.run_dir, resume)
        if found is None:
            return None
        stored = read_train_state(found, self.config.hash())
        head_state, optimizer_state = stored.head, stored.optimizer
        if isinstance(self.head, ShardedNPTHead):
            head_state, optimizer_state = slice_full_state(self.head, head_state, optimizer_state)
        self.backbone.load_state_dict(stored.model)
        self.head.load_state_dict(head_state)
        self.optimizer.load_state_dict(optimizer_state)
        stored.restore_rng()
        self.state = stored.train
        logger.info(
            "resumed from %s (epoch %d, batch %d, step %d)",
            found,
            self.state.position.epoch,
            self.state.position.batch_in_epoch,
            self.state.position.global_step,
        )
        return self.state.position.global_step

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self) -> dict[str, EvaluationResult]:
        """Verification on every configured set (rank 0 only; others get an empty dict)."""
        if not self.context.is_main:
            return {}
        return {
            data.name: evaluate_model(
                self.backbone,
                data.dataset,
                data.pairs,
                flip=self.config.eval.flip,
                batch_size=self.config.eval.batch_size,
                n_folds=self.config.eval.n_folds,
            )
            for data in self.eval_sets
        }

    # -- training ----------------------------------------------------------------------------

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        sampler = GlobalBatchSampler(
            len(self.train_set),
            self.config.optim.batch_size,
            self.config.run.seed,
            epoch,
            self.context.rank,
            self.context.world_size,
            start_batch,
            self.config.data.flip,
        )
        workers = self.config.data.num_workers
        return DataLoader(
            FlipView(self.train_set),
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC on the host -> normalised float NCHW on the device (4x less to copy)."""
        non_blocking = self.device.type == "cuda"
        images = normalize(images.to(self.device, non_blocking=non_blocking))
        if self.config.device.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=non_blocking)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.config.device.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tensorboard.add_scalar(key, value, record["step"])

    def _say(self, line: str) -> None:
        """Without progress bars (``log.progress = false``: CI, nohup, a file), each log line on stdout as it
        happens, so the run shows it is alive; with them, the bar's postfix shows the same numbers."""
        if self.context.is_main and not self.config.log.progress:
            print(f"[{self.config.run.name}] {line}", flush=True)

    def _open_logs(self) -> None:
        if not self.context.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.run_dir / "config.json", {"config": self.config.to_dict(), "config_hash": self.config.hash()}
        )
        # Drop log lines written after the checkpoint we resumed from: they will be replayed.
        log = self.run_dir / "metrics.jsonl"
        step = self.state.position.global_step
        kept = []
        if log.exists():
            kept = [line for line in log.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        atomic_write_bytes(log, "".join(line + "\n" for line in kept).encode())
        if self.config.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "log.tensorboard = true needs the tensorboard package: pip install tensorboard"
                ) from error
            self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _checkpoint(self) -> None:
        self._catch_up_proxies()
        if isinstance(self.head, ShardedNPTHead):
            full = gather_full_state(self.head, self.optimizer)  # collective: every rank sends its rows
        else:
            full = self.head.state_dict(), self.optimizer.state_dict()
        if full is not None and self.context.is_main:
            head_state, optimizer_state = full
            save_train_state(
                self.checkpoints_dir,
                self.backbone.state_dict(),
                head_state,
                optimizer_state,
                self.state,
                self.config.checkpoint.keep,
            )
        self.context.barrier()

    def _step_module(self) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        if self.sharded:
            # Each rank owns its proxy rows: DDP must not average their gradients, so it sees the backbone only.
            backbone: nn.Module = DistributedDataParallel(self.backbone, device_ids=device_ids)
            if self.config.device.compile:
                backbone = torch.compile(backbone)
            return TrainStep(backbone, self.head)
        step_module: nn.Module = TrainStep(self.backbone, self.head)
        if self.context.distributed:
            step_module = DistributedDataParallel(step_module, device_ids=device_ids)
        if self.config.device.compile:
            step_module = torch.compile(step_module)
        return step_module

    def _finish_gradients(self) -> None:
        """Scale (sharded: DDP averaged what the global loss sums) and clip, before the optimizer step."""
        max_norm = self.config.optim.grad_clip
        if isinstance(self.head, ShardedNPTHead):
            scale = backbone_grad_scale()
            for parameter in self.backbone.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
            if max_norm > 0:
                clip_sharded_grad_norm_(list(self.backbone.parameters()), self.head, max_norm)
        elif max_norm > 0:
            nn.utils.clip_grad_norm_(list(self.backbone.parameters()) + [self.head.proxies], max_norm)

    def fit(self, resume: str = "never") -> FitResult:
        start_time = time.perf_counter()
        resumed_from = self.restore(resume)
        self._open_logs()
        step_module = self._step_module()
        optim = self.config.optim
        position = self.state.position
        bar = tqdm(
            total=optim.epochs * self.steps_per_epoch,
            initial=position.global_step,
            unit="step",
            desc=self.config.run.name,
            disable=not (self.config.log.progress and self.context.is_main),
            dynamic_ncols=True,
        )
        meter = _Meter(self.device, loss_scale=self.context.world_size if self.sharded else 1.0)
        spread = SpreadMeter(self.device)
        guard_config = self.config.guard
        # A run shorter than two grace periods is watched over its second half: its model must not end collapsed.
        guard = CollapseGuard(
            guard_config.threshold,
            guard_config.patience,
            min(guard_config.after_epochs, optim.epochs / 2),
            guard_config.action,
        )
        lr = lr_at(position.global_step, self.steps_per_epoch, optim)
        kill_at = _test_kill_step()
        final: dict[str, EvaluationResult] | None = None  # the last epoch's evaluation is the final one
        for epoch in range(position.epoch, optim.epochs):
            epoch_start = time.perf_counter() - position.epoch_seconds
            self.backbone.train()
            self.head.train()
            for images, labels in self._loader(epoch, position.batch_in_epoch):
                lr = lr_at(position.global_step, self.steps_per_epoch, optim)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                images, labels = self._to_device(images, labels)
                with self._autocast():
                    loss, predictions, embeddings = step_module(images, labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._finish_gradients()
                self.optimizer.step()
                meter.add(loss, predictions, labels)
                spread.add(embeddings)
                position.global_step += 1
                position.batch_in_epoch += 1
                position.samples_seen += optim.batch_size
                position.epoch_seconds = time.perf_counter() - epoch_start
                bar.update(1)
                log_now = position.global_step % self.config.log.every_steps == 0
                epoch_ends = position.batch_in_epoch == self.steps_per_epoch
                # The epoch's end writes its own checkpoint of this step (_end_epoch): once is enough.
                checkpoint_now = position.global_step % self.config.checkpoint.every_steps == 0 and not epoch_ends
                if log_now or checkpoint_now or epoch_ends:
                    # The only host-device synchronisation: every log window, checkpoint and epoch end.
                    window = meter.flush(position, epoch)
                    if log_now:
                        record = {
                            "step": position.global_step,
                            "epoch": epoch + position.batch_in_epoch / self.steps_per_epoch,
                            "lr": lr,
                            **window.record(self.context.world_size),
                            "batch_spread": self.context.all_reduce_mean(spread.read()),
                        }
                        self._log(record)
                        bar.set_postfix(
                            loss=f"{record['loss']:.3f}",
                            lr=f"{lr:.2g}",
                            img_s=f"{record['images_per_second']:.0f}",
                            spread=f"{record['batch_spread']:.1f}",
                        )
                        self._say(
                            f"step {position.global_step}/{optim.epochs * self.steps_per_epoch} "
                            f"epoch {record['epoch']:.2f}: loss {record['loss']:.4f}, lr {lr:.3g}, "
                            f"{record['images_per_second']:.0f} img/s, batch spread {record['batch_spread']:.1f}"
                        )
                        meter.reset_window()
                        self._watch_collapse(guard, record, bar)
                if checkpoint_now:
                    self._checkpoint()
                if position.global_step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            final = self._end_epoch(epoch, lr)
        bar.close()
        if final is None:  # resumed after the last epoch had ended
            final = self.evaluate()
        self._catch_up_proxies()
        proxies = self.head.proxies
        if isinstance(self.head, ShardedNPTHead):
            proxies = gather_rows(self.head, proxies)  # collective: rank 0 writes the full matrix
        seconds = time.perf_counter() - start_time
        if self.context.is_main:
            self._write_outputs(final, seconds, proxies)
        self.context.barrier()
        if self._tensorboard is not None:
            self._tensorboard.close()
        return FitResult(self.run_dir, self.state.history, final, seconds, resumed_from)

    def _watch_collapse(self, guard: CollapseGuard, record: dict[str, Any], bar: tqdm) -> None:
        """The guard's verdict on a log window: a warning in the log and on the bar, or a stop.

        Every rank sees the same all-reduced spread, so under torchrun every rank stops together.
        """
        warning = guard.observe(record["batch_spread"], record["epoch"], record["step"])
        if warning is not None and self.context.is_main:
            logger.warning(warning)
            bar.set_description(f"{self.config.run.name} [EMBEDDING COLLAPSE: spread {record['batch_spread']:.1f}]")

    def _end_epoch(self, epoch: int, lr: float) -> dict[str, EvaluationResult]:
        """Log, evaluate (every ``eval.every_epochs`` and always after the last epoch) and checkpoint;
        the evaluation (empty when none ran, and on ranks other than 0) is returned."""
        position = self.state.position
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": position.global_step,
            "lr": lr,
            "loss": self.context.all_reduce_mean(position.epoch_loss_sum / self.steps_per_epoch),
            "train_accuracy": self.context.all_reduce_mean(position.epoch_correct / max(1, position.epoch_seen)),
            "seconds": position.epoch_seconds,
            "images_per_second": position.epoch_seen * self.context.world_size / max(position.epoch_seconds, 1e-9),
        }
        evaluation: dict[str, EvaluationResult] = {}
        if (epoch + 1) % self.config.eval.every_epochs == 0 or epoch + 1 == self.config.optim.epochs:
            self._catch_up_proxies()
            evaluation = self.evaluate()
            for name, result in evaluation.items():
                record[f"{name}/accuracy"] = result.verification.accuracy.mean
                for far, tar in result.verification.tar_at_far.items():
                    if tar.supported:
                        record[f"{name}/tar@far={far:.0e}"] = tar.tar
        self._log({"kind": "epoch", **record})
        self._say(
            f"epoch {epoch + 1}/{self.config.optim.epochs} done: loss {record['loss']:.4f}, train accuracy "
            f"{record['train_accuracy']:.3f}, {record['images_per_second']:.0f} img/s"
            + "".join(
                f"; {name}: accuracy {result.verification.accuracy.mean:.4f}" for name, result in evaluation.items()
            )
        )
        self.state.history.append(record)
        position.epoch = epoch + 1
        position.batch_in_epoch = 0
        position.epoch_loss_sum, position.epoch_correct, position.epoch_seen, position.epoch_seconds = 0.0, 0, 0, 0.0
        self._checkpoint()
        return evaluation

    # -- outputs -----------------------------------------------------------------------------

    def _write_outputs(self, final: dict[str, EvaluationResult], seconds: float, proxies: torch.Tensor) -> None:
        """Rank 0: the run's outputs; ``proxies`` is the full matrix (gathered when sharded)."""
        meta = CheckpointMeta(
            model=self.model_config.to_dict(),
            head=self.head.name,
            head_hparams=self.head.hparams(),
            class_names=list(self.train_set.class_names),
            extra={
                "config_hash": self.config.hash(),
                "run": self.config.run.name,
                "global_step": self.state.position.global_step,
                "training_data": self._training_data(),
                **(
                    {"init": init_record(self.config.model.init, list(self.train_set.class_names))}
                    if self.config.model.init
                    else {}
                ),
            },
        )
        save_checkpoint(self.run_dir, self.backbone, proxies, meta)
        metrics = {
            "config_hash": self.config.hash(),
            "global_step": self.state.position.global_step,
            "history": self.state.history,
            "final": {name: result.to_dict(roc_points=200) for name, result in final.items()},
            "wall_seconds_this_process": seconds,
        }
        atomic_write_json(self.run_dir / "metrics.json", metrics)
        if self.state.history:
            plot_training(self.state.history, self.run_dir / "training.png")
        if final:
            plot_roc({name: r.verification.roc for name, r in final.items()}, self.run_dir / "roc.png")
        self._write_report(final)

    def _training_data(self) -> dict[str, Any]:
        """What the model was trained on, for the model card: the kind (synthetic faces or real images) and size."""
        data = self.config.data
        return {
            "kind": data.kind,
            "path": data.path,
            "domain": data.domain if data.kind == "synthetic" else None,
            "identities": self.train_set.num_classes,
            "images": len(self.train_set),
        }

    def _write_report(self, final: dict[str, EvaluationResult]) -> None:
        atomic_write_bytes(self.run_dir / "report.md", self.report(final).markdown().encode())

    def report(self, final: dict[str, EvaluationResult]) -> RunReport:
        """The run's report.md as parts: the setup, then verification per evaluation set, then training."""
        config = self.config
        summary = (
            f"MobileFaceNet (width {config.model.width}, {config.model.input_size}px input, "
            f"{config.model.embedding_dim}-d embedding), `{self.head.name}` head "
            f"({', '.join(f'{k}={v}' for k, v in self.head.hparams().items())}), "
            f"{self.train_set.num_classes} training identities, {len(self.train_set)} images, "
            f"{config.optim.epochs} epochs at global batch {config.optim.batch_size} on "
            f"{self.context.world_size} x {self.device.type}. Config hash `{config.hash()}`."
        )
        sections = [
            ReportSection(
                f"Verification on `{name}` (cosine similarity)",
                ["\n".join(f"- {line}" for line in result.summary_lines())],
            )
            for name, result in final.items()
        ]
        if final:
            sections.append(ReportSection(None, ["![ROC](roc.png)"]))
        if self.state.history:
            header = ["epoch", "loss", "train acc", "lr", "img/s"] + [f"{n} acc" for n in final]
            rows = [
                [
                    r["epoch"],
                    f"{r['loss']:.3f}",
                    f"{r['train_accuracy']:.3f}",
                    f"{r['lr']:.3g}",
                    f"{r['images_per_second']:.0f}",
                ]
                + [f"{100 * r[f'{n}/accuracy']:.2f}%" if f"{n}/accuracy" in r else "" for n in final]
                for r in self.state.history
            ]
            sections.append(ReportSection("Training", [markdown_table(header, rows), "![training](training.png)"]))
        return RunReport(f"nptface training run: {config.run.name}", summary, sections)

    def close(self) -> None:
        distributed.teardown(self.context)


def train_from_config(config: TrainConfig, run_dir: str | Path | None = None, resume: str = "never") -> FitResult:
    trainer = Trainer(config, run_dir, resume)
    try:
        return trainer.fit(resume)
    finally:
        trainer.close()
