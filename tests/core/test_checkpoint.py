"""The run-directory contract: safetensors + JSON, atomic writes, clear errors, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

from nptface.core.checkpoint import (
    META_FILE,
    MODEL_FILE,
    CheckpointError,
    CheckpointMeta,
    load_backbone,
    load_meta,
    load_proxies,
    save_checkpoint,
)
from nptface.core.mobilefacenet import MobileFaceNet


def _meta(names):
    return CheckpointMeta(
        model={"embedding_dim": 16, "width": 0.25, "input_size": 32},
        head="npt",
        head_hparams={"k": 2},
        class_names=names,
    )


def test_checkpoint_round_trip_restores_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16).eval()
    proxies = torch.randn(3, 16)
    save_checkpoint(tmp_path, model, proxies, _meta(["a", "b", "c"]))
    loaded, meta = load_backbone(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    assert meta.class_names == ["a", "b", "c"] and meta.head_hparams == {"k": 2}
    torch.testing.assert_close(load_proxies(tmp_path), proxies)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files must not remain"


def test_checkpoint_refuses_proxy_rows_without_names(tmp_path):
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    with pytest.raises(CheckpointError, match="2 class names for 3 proxy rows"):
        save_checkpoint(tmp_path, model, torch.randn(3, 16), _meta(["a", "b"]))


def test_loading_a_folder_that_is_not_a_run_names_the_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint.json not found"):
        load_backbone(tmp_path)


def test_wrong_format_or_version_is_refused_with_the_field_named(tmp_path):
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    save_checkpoint(tmp_path, model, torch.randn(2, 16), _meta(["a", "b"]))
    payload = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**payload, "version": 99}))
    with pytest.raises(CheckpointError, match="'version' must be 1"):
        load_meta(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_meta(tmp_path)


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path):
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    save_checkpoint(tmp_path, model, torch.randn(2, 16), _meta(["a", "b"]))
    payload = json.loads((tmp_path / META_FILE).read_text())
    payload["model"]["embedding_dim"] = 32
    (tmp_path / META_FILE).write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_backbone(tmp_path)


def test_weights_file_is_safetensors_not_pickle(tmp_path):
    model = MobileFaceNet(width=0.25, input_size=32, embedding_dim=16)
    save_checkpoint(tmp_path, model, torch.randn(2, 16), _meta(["a", "b"]))
    header = (tmp_path / MODEL_FILE).read_bytes()[:16]
    assert not header.startswith(b"\x80"), "a pickle protocol header"
    header_length = int.from_bytes(header[:8], "little")
    assert json.loads((tmp_path / MODEL_FILE).read_bytes()[8 : 8 + header_length])["__metadata__"]["format"]
