"""The trainer on the formats face teams have: RecordIO packs, verification .bin, LFW pairs."""

from __future__ import annotations

import json

import numpy as np

from nptface.core.datasets import SyntheticFaceDataset, materialize, write_image_folder
from nptface.core.recordio import write_insightface_pack
from nptface.core.verification_bin import write_verification_bin
from nptface.server.training.config import load_config
from nptface.server.training.trainer import train_from_config

TINY = [
    "model.width=0.25",
    "model.input_size=32",
    "model.embedding_dim=16",
    "head.params={k=2, delta=1.0, r=1.0}",
    "optim.epochs=1",
    "optim.batch_size=8",
    "optim.milestones=[]",
    "optim.warmup_epochs=0.0",
    "log.progress=false",
]


def test_train_on_a_recordio_pack_and_verify_on_bin_lfw_and_held_out_identities(tmp_path):
    faces = materialize(SyntheticFaceDataset(range(6), 4, "studio", image_size=32), progress=False)
    write_insightface_pack(tmp_path / "pack", faces.images, faces.labels)

    heldout = materialize(SyntheticFaceDataset(range(100, 104), 3, "studio", image_size=32), progress=False)
    issame = [True, False, True, False, True, False]
    pairs = [(0, 1), (0, 3), (3, 4), (4, 7), (9, 10), (10, 0)]
    write_verification_bin(tmp_path / "tiny.bin", [heldout.images[i] for pair in pairs for i in pair], issame)

    lfw = tmp_path / "lfw"
    write_image_folder(heldout, lfw, image_format="jpeg", progress=False)
    for person in lfw.iterdir():  # LFW names its images person/person_0001.jpg
        for number, image in enumerate(sorted(person.iterdir()), start=1):
            image.rename(person / f"{person.name}_{number:04d}.jpg")
    names = sorted(p.name for p in lfw.iterdir())
    lines = ["2 1"] + [f"{names[0]} 1 2", f"{names[0]} 1 {names[1]} 1", f"{names[2]} 2 3", f"{names[2]} 1 {names[3]} 2"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")

    config = load_config(
        "synthetic-quick",
        [
            *TINY,
            'data.kind="recordio"',
            f'data.path="{(tmp_path / "pack").as_posix()}"',
            "data.heldout_identities=2",
            f'eval.sets=[{{kind="bin", name="tiny-bin", path="{(tmp_path / "tiny.bin").as_posix()}"}}, '
            f'{{kind="lfw", name="lfw", path="{lfw.as_posix()}", pairs="{(tmp_path / "pairs.txt").as_posix()}"}}]',
            "eval.n_folds=2",
        ],
    )
    result = train_from_config(config, tmp_path / "run")
    assert set(result.final_eval) == {"heldout-identities", "tiny-bin", "lfw"}
    assert result.final_eval["tiny-bin"].verification.n_genuine == 3
    assert result.final_eval["lfw"].verification.n_genuine == 2
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert len(meta["class_names"]) == 4, "two of six pack identities are held out of training"
    assert np.isfinite(result.history[-1]["loss"])
