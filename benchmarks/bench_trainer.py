"""Claims: the trainer costs <= 10% over a bare training loop, and the data path feeds >= 3x training.

1. Trainer overhead: steady-state images/s of ``nptface`` training (the Trainer's own windowed
   throughput log, evaluation and checkpoints out of the window) against a bare
   forward/backward/step loop over the same model, head, optimizer and batch size on
   pre-collated tensors, in this one process, interleaved (bare, trainer, bare, trainer, ...).
2. Data path: images/s the DataLoader delivers (no training) for synthetic faces rendered on
   the fly in workers and for an ImageFolder of PNGs decoded in workers, with the trainer's
   sampler and flip augmentation, against the training rate measured in (1).

    .venv/bin/python benchmarks/bench_trainer.py [--repeats 3 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, timed_windows  # noqa: E402

from nptface.core.datasets import SyntheticFaceDataset, write_image_folder  # noqa: E402
from nptface.core.imagefolder import ImageFolderDataset  # noqa: E402
from nptface.core.preprocess import normalize  # noqa: E402
from nptface.server.training.config import load_config  # noqa: E402
from nptface.server.training.optim import build_optimizer  # noqa: E402
from nptface.server.training.sampler import FlipView, GlobalBatchSampler  # noqa: E402
from nptface.server.training.trainer import Trainer  # noqa: E402

# The quickstart's model and batch; 40 steps an epoch, evaluation and checkpoints off.
OVERRIDES = [
    "data.identities=80",
    "data.images_per_identity=32",
    "optim.epochs=1",
    "optim.milestones=[]",
    "optim.warmup_epochs=0.0",
    "eval.sets=[]",
    "log.every_steps=10",
    "log.progress=false",
    "checkpoint.every_steps=100000",
]


def trainer_rates(tmp: Path, repeat: int) -> list[float]:
    config = load_config(
        "synthetic-quick", [*OVERRIDES, f'run.output_dir="{tmp.as_posix()}"', f'run.name="trainer-{repeat}"']
    )
    trainer = Trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.close()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["images_per_second"] for r in records if "kind" not in r]
    return windows[1:]  # the first window includes allocation warm-up


def bare_rates(tmp: Path, steps: int = 40, window: int = 10) -> list[float]:
    config = load_config("synthetic-quick", [*OVERRIDES, f'run.output_dir="{tmp.as_posix()}"', 'run.name="bare"'])
    trainer = Trainer(config)  # reuse its data, model, head and optimizer construction
    trainer.close()
    model, head = trainer.backbone, trainer.head
    optimizer = build_optimizer(model, head, config.optim)
    batch = config.optim.batch_size
    loader = DataLoader(trainer.train_set, batch_size=batch, shuffle=True, drop_last=True)
    batches = [(normalize(images), labels) for images, labels in loader][:steps]
    return [batch / seconds for seconds in timed_windows(model, head, optimizer, batches, window)[1:]]


def loader_rate(dataset, workers: int, batch: int, batches: int) -> float:
    sampler = GlobalBatchSampler(len(dataset), batch, seed=0, epoch=0)
    loader = DataLoader(FlipView(dataset), batch_sampler=sampler, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is paid once per epoch, not per image
    begin = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += len(images)
    return count / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bare, trained = [], []
        for repeat in range(args.repeats):
            bare += bare_rates(tmp)
            trained += trainer_rates(tmp, repeat)
        b, t = statistics.median(bare), statistics.median(trained)
        print("\n1. trainer overhead (synthetic-quick model: MobileFaceNet w0.5 64px, NPT k=6, batch 64)")
        print(f"   bare loop:  median {b:7.1f} img/s over {len(bare)} windows of 10 steps")
        print(f"   trainer:    median {t:7.1f} img/s over {len(trained)} windows of 10 steps")
        print(f"   trainer / bare = {t / b:.3f}  (overhead {100 * (1 - t / b):+.1f}%; target <= 10%)")

        synthetic = SyntheticFaceDataset(range(200), 16, "wild", image_size=64)
        folder_root = tmp / "folder"
        write_image_folder(SyntheticFaceDataset(range(60), 16, "wild", image_size=112), folder_root, progress=False)
        folder = ImageFolderDataset(folder_root, image_size=64)
        print(f"\n2. data path with {args.workers} DataLoader workers (batch 64, 10 batches after the first)")
        for name, dataset in (
            ("synthetic, rendered on the fly", synthetic),
            ("ImageFolder PNG 112->64 decode", folder),
        ):
            rates = [loader_rate(dataset, args.workers, 64, 10) for _ in range(args.repeats)]
            rate = statistics.median(rates)
            print(f"   {name:32s} median {rate:7.1f} img/s = {rate / t:5.2f}x the training rate (target >= 3x)")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
