"""Claims: on a CPU the trainer runs at >= 0.95x a bare loop, and our MobileFaceNet at >= 1.0x the authors'.

One process, one thread setting, variants interleaved round by round so load drift hits all alike;
every figure is the median seconds per training step (forward + NPT loss + backward + SGD step).

1. Bare loop, one model per row: ours (``nptface.core.mobilefacenet``) and the authors' layout of
   the same Table 1 network (re-implemented below from the paper and the structure of their
   ``training/mfacenet/smodels/model_facemobilenet.py`` in cerebrai/npt-loss: the embedding is a
   ``Linear`` + ``BatchNorm1d`` over the flattened GDC output, Xavier-uniform init), each in NCHW
   and channels_last, and ours with ``torch.use_deterministic_algorithms(True)``.
2. The trainer (its own windowed throughput log; ``run.deterministic`` and
   ``device.channels_last`` as given) against the bare loop over the same model, head, optimiser
   recipe and batch on pre-collated tensors.

    .venv/bin/python benchmarks/bench_cpu_fast_paths.py [--rounds 3 --steps 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load_average, timed_windows  # noqa: E402

from nptface.core.heads import NPTHead  # noqa: E402
from nptface.core.mobilefacenet import BOTTLENECKS, MobileFaceNet, MobileFaceNetConfig  # noqa: E402
from nptface.core.preprocess import normalize  # noqa: E402
from nptface.server.training import trainer as trainer_module  # noqa: E402
from nptface.server.training.config import load_config  # noqa: E402
from nptface.server.training.optim import build_optimizer  # noqa: E402
from nptface.server.training.trainer import Trainer  # noqa: E402

_render = trainer_module.build_train_data
_rendered: dict[tuple, tuple] = {}


def _build_train_data_once(data, image_size, seed, progress=False):  # noqa: ANN001, ANN202
    """Render the synthetic training faces once per setting, not once per trainer run."""
    key = (repr(data), image_size, seed)
    if key not in _rendered:
        _rendered[key] = _render(data, image_size, seed, progress)
    return _rendered[key]


trainer_module.build_train_data = _build_train_data_once


def _conv(cin: int, cout: int, kernel: int, stride: int, padding: int, groups: int, prelu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return [*layers, nn.PReLU(cout)] if prelu else layers


class _AuthorsBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.layers = nn.Sequential(
            *_conv(cin, hidden, 1, 1, 0, 1, True),
            *_conv(hidden, hidden, 3, stride, 1, hidden, True),
            *_conv(hidden, cout, 1, 1, 0, 1, False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.residual else self.layers(x)


class AuthorsMobileFaceNet(nn.Module):
    """The authors' layout of MobileFaceNet at width 1.0 (benchmark only: the comparison's reference)."""

    def __init__(self, embedding_dim: int, input_size: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = 64
        for expansion, channels, repeats, stride in BOTTLENECKS:
            for i in range(repeats):
                blocks.append(_AuthorsBottleneck(cin, channels, stride if i == 0 else 1, expansion))
                cin = channels
        self.features = nn.Sequential(
            *_conv(3, 64, 3, 2, 1, 1, True),
            *_conv(64, 64, 3, 1, 1, 64, True),
            *blocks,
            *_conv(cin, 512, 1, 1, 0, 1, True),
            *_conv(512, 512, input_size // 16, 1, 0, 512, False),
        )
        self.linear = nn.Linear(512, embedding_dim)
        self.norm = nn.BatchNorm1d(embedding_dim)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The final linear embedding layer, for the trainer's optimiser recipe."""
        return [*self.linear.parameters(), *self.norm.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(self.features(x).view(x.shape[0], -1)))


def bare_step_factory(
    model: nn.Module, classes: int, embedding_dim: int, batch: int, size: int, channels_last: bool
) -> Callable[[], None]:
    """One training step of ``model`` + the NPT head + the trainer's SGD recipe on a fixed batch."""
    config = load_config("base", [])
    head = NPTHead(classes, embedding_dim, k=6, negatives="semihard")
    optimizer = build_optimizer(model, head, config.optim)  # type: ignore[arg-type]
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> None:
        loss = head(model(images), labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _reset_determinism() -> None:
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True


def time_steps(step: Callable[[], None], steps: int, deterministic: str = "off") -> list[float]:
    """``deterministic``: ``off``, ``on`` (torch's default: new tensors filled with NaN) or ``no fill``."""
    torch.use_deterministic_algorithms(deterministic != "off", warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = deterministic == "on"
    try:
        step()  # warm-up: allocation and kernel choice
        seconds = []
        for _ in range(steps):
            begin = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - begin)
        return seconds
    finally:
        _reset_determinism()


def model_rows(args: argparse.Namespace, width: float, size: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    config = MobileFaceNetConfig(embedding_dim=256, width=width, input_size=size)

    def ours(channels_last: bool) -> Callable[[], None]:
        return bare_step_factory(MobileFaceNet(config), 1000, 256, args.batch, size, channels_last)

    def authors(channels_last: bool) -> Callable[[], None]:
        return bare_step_factory(AuthorsMobileFaceNet(256, size), 1000, 256, args.batch, size, channels_last)

    variants: dict[str, tuple[Callable[[], None], str]] = {
        "ours, NCHW": (ours(False), "off"),
        "ours, channels_last": (ours(True), "off"),
        "ours, NCHW, deterministic": (ours(False), "on"),
        "ours, NCHW, deterministic without NaN fill": (ours(False), "no fill"),
        "ours, channels_last, deterministic without NaN fill": (ours(True), "no fill"),
    }
    if width == 1.0:  # the authors' network exists at width 1.0 only
        variants["authors', NCHW"] = (authors(False), "off")
        variants["authors', channels_last"] = (authors(True), "off")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (step, deterministic) in variants.items():
            times[name] += time_steps(step, args.steps, deterministic)
    return times


TRAINER_OVERRIDES = [
    "optim.epochs=1",
    "optim.milestones=[]",
    "optim.warmup_epochs=0.0",
    "eval.sets=[]",
    "log.progress=false",
    "checkpoint.every_steps=100000",
    "device.device=cpu",
]


def trainer_seconds(tmp: Path, overrides: list[str], name: str, window: int) -> tuple[list[float], Trainer]:
    config = load_config(
        "base", [*TRAINER_OVERRIDES, *overrides, f'run.output_dir="{tmp.as_posix()}"', f"run.name={name}"]
    )
    trainer = Trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.close()
        _reset_determinism()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_step = [config.optim.batch_size / r["images_per_second"] for r in records if "kind" not in r]
    return per_step[1:], trainer  # the first window includes allocation and the loader's start


def bare_windows(trainer: Trainer, batch: int, window: int, channels_last: bool, count: int) -> list[float]:
    """Seconds per step of a bare loop over the trainer's model, head, optimiser recipe and data, pre-collated."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model, head = trainer.backbone.to(memory_format=layout), trainer.head
    optimizer = build_optimizer(model, head, trainer.config.optim)
    loader = DataLoader(trainer.train_set, batch_size=batch, shuffle=True, drop_last=True)
    batches = [(normalize(images).contiguous(memory_format=layout), labels) for images, labels in loader]
    batches = batches[: window * (count + 1)]  # as many timed windows as the trainer had
    return timed_windows(model, head, optimizer, batches, window)[1:]  # the first window warms up


def trainer_rows(args: argparse.Namespace, width: float, size: int) -> dict[str, list[float]]:
    window = 4
    data = [
        f"model.width={width}",
        f"model.input_size={size}",
        "data.identities=64",
        f"data.images_per_identity={-(-window * (args.steps // window + 2) * args.batch // 64)}",
        f"log.every_steps={window}",
        f"optim.batch_size={args.batch}",
    ]
    settings = {
        "trainer as shipped before (deterministic, NCHW)": ["device.channels_last=false"],
        "trainer now (deterministic, no NaN fill, NHWC)": [],
    }
    times: dict[str, list[float]] = {"bare loop, NCHW": [], "bare loop, channels_last": []}
    times.update({name: [] for name in settings})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for round_index in range(args.rounds):
            for index, (name, overrides) in enumerate(settings.items()):
                if index == 0:  # before this change: torch's default NaN fill under the flag
                    trainer_module.Trainer._configure_backend = _shipped_before
                try:
                    seconds, trainer = trainer_seconds(tmp, data + overrides, f"r{round_index}-{index}", window)
                finally:
                    trainer_module.Trainer._configure_backend = _configure_backend_now
                times[name] += seconds
            for layout, channels_last in (("NCHW", False), ("channels_last", True)):
                times[f"bare loop, {layout}"] += bare_windows(trainer, args.batch, window, channels_last, len(seconds))
    return times


_configure_backend_now = trainer_module.Trainer._configure_backend


def _shipped_before(self: Trainer) -> None:
    _configure_backend_now(self)
    torch.utils.deterministic.fill_uninitialized_memory = True


def print_table(title: str, times: dict[str, list[float]], reference: str) -> None:
    base = statistics.median(times[reference])
    print(f"\n{title}  (load average now: {load_average()})")
    print(f"{'variant':48s} {'median s/step':>14s} {'steps':>6s} {'speed vs ' + reference:>30s}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:48s} {median:14.3f} {len(seconds):6d} {base / median:30.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="width 0.5, 64 px instead of the full-size model")
    parser.add_argument("--only", choices=("models", "trainer"), default=None)
    args = parser.parse_args()
    width, size = (0.5, 64) if args.quick else (1.0, 112)
    print(describe())
    print(f"MobileFaceNet width {width}, {size} px, 256-d, batch {args.batch}, NPT k=6 semi-hard, 1000 classes (1.)")
    if args.only in (None, "models"):
        print_table("1. bare loop: model, layout, determinism", model_rows(args, width, size), "ours, NCHW")
    if args.only in (None, "trainer"):
        print_table(
            "2. trainer against a bare loop (64 identities)", trainer_rows(args, width, size), "bare loop, NCHW"
        )


if __name__ == "__main__":
    main()
