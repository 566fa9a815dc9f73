"""A run's metric files are strict JSON: what could not be measured is null."""

from __future__ import annotations

import json

import numpy as np

from nptface.core.metrics_json import null_non_finite, write_metrics_json


def _strict_load(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_anywhere_become_null_and_finite_ones_stay():
    payload = {
        "round": 0,
        "tar": float("nan"),
        "distance": float("inf"),
        "history": [{"loss": np.float32("nan"), "acc": np.float64(0.5)}, (1.0, -float("inf"))],
        "name": "nan",
        "ok": True,
    }
    assert null_non_finite(payload) == {
        "round": 0,
        "tar": None,
        "distance": None,
        "history": [{"loss": None, "acc": 0.5}, [1.0, None]],
        "name": "nan",
        "ok": True,
    }


def test_the_writer_writes_strict_json_where_plain_json_would_write_nan(tmp_path):
    path = tmp_path / "results.json"
    write_metrics_json(path, {"methods": {"server": {"client-domain/tar@far=1e-2": float("nan")}}})
    assert _strict_load(path.read_text()) == {"methods": {"server": {"client-domain/tar@far=1e-2": None}}}
