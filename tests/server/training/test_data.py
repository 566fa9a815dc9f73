"""Eval sets from a config entry: the trainer's sets and ``nptface eval`` are built by the same function."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.core.datasets import SyntheticFaceDataset, write_image_folder
from nptface.core.imagefolder import BadImageError
from nptface.server.training.config import EvalSet
from nptface.server.training.data import build_eval_set


def test_the_lfw_protocol_gives_balanced_contiguous_folds():
    spec = EvalSet(kind="synthetic", name="held", identities=6, images_per_identity=4, pair_protocol="lfw", per_fold=3)
    data = build_eval_set(spec, image_size=32)
    assert data.name == "held" and len(data.dataset) == 24 and len(data.pairs) == 10 * 2 * 3
    assert all(data.pairs.is_same[k * 6 : (k + 1) * 6].sum() == 3 for k in range(10))


def test_an_image_folder_with_a_bad_file_fails_unless_bad_files_are_skipped(tmp_path):
    write_image_folder(SyntheticFaceDataset(range(3), 3, "studio", image_size=32), tmp_path, progress=False)
    (tmp_path / "synth-0000000" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="broken.png"):
        build_eval_set(EvalSet(kind="imagefolder", path=str(tmp_path)), image_size=32)
    data = build_eval_set(EvalSet(kind="imagefolder", path=str(tmp_path), skip_bad=True), image_size=32)
    assert len(data.dataset) == 9 and data.dataset.skipped
    assert np.all(data.pairs.index_a < data.pairs.index_b) and data.pairs.is_same.any()
