"""A bundle's manifest values are checked before use: types, ranges, and thresholds ordered over FAR."""

from __future__ import annotations

import copy
import json

import pytest

from nptface.edge_export.bundle import FORMAT, MANIFEST, VERSION, BundleError, load_bundle

VALID = {
    "format": FORMAT,
    "version": VERSION,
    "input": {"size": [112, 112], "normalization": {"mean": 127.5, "std": 127.5}},
    "embedding": {"size": 256, "metric": "cosine"},
    "thresholds": {"cosine": {"1e-04": 0.45, "1e-03": 0.38, "1e-02": 0.30}},
    "variants": [{"name": "onnx-fp32", "file": "models/onnx-fp32.onnx", "format": "onnx"}],
    "files": {},
    "source": {"checkpoint_sha256": "0" * 64},
}


def _bundle(tmp_path, edit=None):
    manifest = copy.deepcopy(VALID)
    if edit is not None:
        edit(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_a_valid_manifest_loads_and_gives_its_thresholds(tmp_path):
    bundle = load_bundle(_bundle(tmp_path))
    assert bundle.threshold(1e-3) == 0.38 and bundle.input_size == 112


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": -1.5}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": float("nan")}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": "0.4"}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": True}), "thresholds.cosine['1e-03']"),
        (lambda m: m["thresholds"]["cosine"].update({"1e-03": 0.5}), "thresholds.cosine['1e-04']"),  # out of order
        (lambda m: m["thresholds"]["cosine"].update({"often": 0.1}), "thresholds.cosine['often']"),
        (lambda m: m["thresholds"].update({"cosine": {}}), "thresholds.cosine"),
        (lambda m: m["input"].update({"size": [112, 96]}), "input.size"),
        (lambda m: m["input"].update({"size": ["112", "112"]}), "input.size"),
        (lambda m: m["input"]["normalization"].update({"std": 0}), "input.normalization.std"),
        (lambda m: m["embedding"].update({"size": 0}), "embedding.size"),
        (lambda m: m["embedding"].update({"metric": "euclidean"}), "embedding.metric"),
        (lambda m: m["variants"][0].update({"format": "tensorrt"}), "variants[0].format"),
        (lambda m: m["variants"][0].update({"file": 3}), "variants[0].file"),
        (lambda m: m["variants"].append(dict(m["variants"][0])), "variants[1].name"),
        (lambda m: m["files"].update({"x": {"sha256": "abc", "size": 1}}), "files['x'].sha256"),
        (lambda m: m["source"].update({"checkpoint_sha256": None}), "source.checkpoint_sha256"),
    ],
)
def test_untrustworthy_manifest_values_are_refused_naming_the_field(tmp_path, edit, field):
    with pytest.raises(BundleError, match=f"field {__import__('re').escape(repr(field))} must be"):
        load_bundle(_bundle(tmp_path, edit))
