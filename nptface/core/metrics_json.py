"""A run's metric files as strict JSON: a value that could not be measured is null, never NaN.

JSON has no NaN or Infinity; Python's ``json`` writes them anyway unless told not to, and strict
readers (browsers, ``jq``, :func:`nptface.core.atomic.atomic_write_json` itself) refuse them. A
metric can fail to be measured for honest reasons — a FAR the pairs cannot support, no client
answered, a NaN local loss, the infinite distance of an empty bank — so every record and file a
run writes goes through :func:`null_non_finite` here, in one place, instead of each writer
cleaning (or forgetting to clean) its own fields.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nptface.core.atomic import atomic_write_json


def null_non_finite(value: Any) -> Any:
    """``value`` with every non-finite float (NumPy's too) inside dicts, lists and tuples replaced by None."""
    if isinstance(value, dict):
        return {key: null_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [null_non_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_metrics_json(path: str | Path, payload: Any) -> None:
    """Atomically write ``payload`` as strict JSON, non-finite floats as null."""
    atomic_write_json(path, null_non_finite(payload))
