"""Claim: what ``device.compile = true`` costs once (compile time) and buys per step on a CPU (speed-up).

The trainer compiles ``TrainStep(backbone, head)`` (backbone + NPT head + loss); its backward runs
as the compiled graph's backward, the SGD step stays eager. This benchmark times exactly that step
(forward + loss + backward + ``build_optimizer``'s SGD step, Nesterov momentum 0.9 with the recipe's
layer-wise weight decay) against the same step uncompiled, in one process, on pre-made random
tensors (no data loader), with the quickstart's model, head, classes and batch (``synthetic-quick``)
and the trainer's CPU settings (its determinism flag without NaN fill, channels_last as configured).
Both copies start from the same weights. Compile time is the first compiled step's wall time minus
the median eager step, from a cold start: ``torch._dynamo.reset()`` and inductor's on-disk caches
in a fresh temporary directory (``--warm-cache`` keeps the default cache, as a second run would).
Steady state is timed in interleaved windows (eager, compiled, eager, compiled, ...) so load drift
hits both alike; figures are medians of seconds per step.

    .venv/bin/python benchmarks/bench_compile.py [--threads 1 --windows 5 --steps 10 --batch 64] [--full-size]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load_average  # noqa: E402

from nptface.core.heads import build_head  # noqa: E402
from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig  # noqa: E402
from nptface.server.training.config import TrainConfig, load_config  # noqa: E402
from nptface.server.training.optim import build_optimizer  # noqa: E402
from nptface.server.training.trainer import TrainStep  # noqa: E402

Step = Callable[[], torch.Tensor]


def step_factory(
    module: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> Step:
    """The trainer's step on a fixed batch: ``module`` is ``TrainStep`` or its compiled wrapper; returns the loss."""

    def step() -> torch.Tensor:
        loss, _, _ = module(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def build_steps(config: TrainConfig, batch: int) -> tuple[Step, Step]:
    """Eager and compiled steps over two identical copies of the quickstart's backbone, head and optimiser."""
    torch.manual_seed(config.run.seed)
    model = config.model
    classes = config.data.identities  # synthetic data: every identity is a training class
    backbone = MobileFaceNet(MobileFaceNetConfig(model.embedding_dim, model.width, model.input_size))
    head = build_head(config.head.name, classes, model.embedding_dim, **config.head.params)
    images = torch.randn(batch, 3, model.input_size, model.input_size)
    labels = torch.randint(0, classes, (batch,))
    if config.device.channels_last:  # as the trainer lays out its backbone and batches
        backbone.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    steps = []
    for compiled in (False, True):
        own_backbone, own_head = copy.deepcopy(backbone), copy.deepcopy(head)
        own_backbone.train()
        own_head.train()
        module: nn.Module = TrainStep(own_backbone, own_head)
        if compiled:
            module = torch.compile(module)  # as Trainer._step_module: default backend and mode
        optimizer = build_optimizer(own_backbone, own_head, config.optim)
        steps.append(step_factory(module, optimizer, images, labels))
    return steps[0], steps[1]


def window_seconds(step: Step, steps: int) -> float:
    """Seconds per step over ``steps`` back-to-back steps (the loss is read once, at the end)."""
    begin = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return (time.perf_counter() - begin) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant (interleaved)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--full-size", action="store_true", help="width 1.0, 112 px instead of the quickstart's")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk caches (not a cold start)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = ["model.width=1.0", "model.input_size=112"] if args.full_size else []
    config = load_config("synthetic-quick", overrides)
    if config.run.deterministic:  # the trainer's CPU setting (Trainer._configure_backend)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    print(describe())
    model, head = config.model, config.head
    print(
        f"MobileFaceNet width {model.width}, {model.input_size} px, {model.embedding_dim}-d, batch {args.batch}, "
        f"{head.name} {head.params}, {config.data.identities} classes, SGD from build_optimizer "
        f"(momentum {config.optim.momentum}, nesterov {config.optim.nesterov}), "
        f"channels_last {config.device.channels_last}, deterministic {config.run.deterministic}"
    )
    with tempfile.TemporaryDirectory() as cache:
        if not args.warm_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        return run(args, config)


def run(args: argparse.Namespace, config: TrainConfig) -> int:
    eager, compiled = build_steps(config, args.batch)
    torch._dynamo.reset()
    counters.clear()
    eager_first = eager().item()  # warm-up: allocation, kernel choice
    begin = time.perf_counter()
    try:
        compiled_first = compiled().item()
    except Exception as error:  # noqa: BLE001 - the benchmark's answer is that it failed, and how
        print(f"\ntorch.compile FAILED on the first step: {type(error).__name__}: {str(error).splitlines()[0]}")
        return 1
    first_step = time.perf_counter() - begin
    print(f"\nfirst step loss: eager {eager_first:.6f}, compiled {compiled_first:.6f} (same weights and batch)")
    eager_seconds: list[float] = []
    compiled_seconds: list[float] = []
    compiled()  # its first step ran above; one more so the window starts in steady state, like eager's
    for _ in range(args.windows):
        eager_seconds.append(window_seconds(eager, args.steps))
        compiled_seconds.append(window_seconds(compiled, args.steps))
    graphs = counters["stats"]["unique_graphs"]
    breaks = sum(counters["graph_break"].values())
    e, c = statistics.median(eager_seconds), statistics.median(compiled_seconds)
    print(f"graphs compiled: {graphs}, graph breaks: {breaks} (1 and 0: one graph, no recompile)")
    print(f"\ncompile  ({'warm inductor cache' if args.warm_cache else 'cold start: fresh inductor cache'})")
    print(f"   first compiled step (compile + run):  {first_step:8.2f} s")
    print(f"   compile time (first step - median eager step): {first_step - e:8.2f} s")
    print(
        f"\nsteady state  ({args.windows} interleaved windows of {args.steps} steps; load average now: {load_average()})"
    )
    print(f"{'variant':10s} {'median s/step':>14s} {'img/s':>8s} {'windows (s/step)':>40s}")
    for name, seconds in (("eager", eager_seconds), ("compiled", compiled_seconds)):
        median = statistics.median(seconds)
        listed = " ".join(f"{s:.3f}" for s in seconds)
        print(f"{name:10s} {median:14.4f} {args.batch / median:8.1f} {listed:>40s}")
    print(f"   speed-up compiled / eager = {e / c:.3f}x")
    print(f"   break-even after {(first_step - e) / (e - c):.0f} steps" if e > c else "   no break-even: no speed-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
