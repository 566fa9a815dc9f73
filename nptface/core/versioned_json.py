"""Reading the JSON files that mark our on-disk formats (checkpoints, bundles): one set of checks.

Each such file names its format and version; a reader refuses anything else with the path and
the field, so an old or foreign file is reported as such instead of failing somewhere later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_versioned_json(
    path: Path, fmt: str, version: int, error: type[Exception], missing_hint: str = ""
) -> dict[str, Any]:
    if not path.is_file():
        raise error(f"{path} not found{': ' + missing_hint if missing_hint else ''}")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as decode_error:
        raise error(f"{path} is not valid JSON: {decode_error}") from None
    if not isinstance(payload, dict):
        raise error(f"{path}: expected a JSON object")
    if payload.get("format") != fmt:
        raise error(f"{path}: field 'format' must be {fmt!r}, got {payload.get('format')!r}")
    if payload.get("version") != version:
        raise error(f"{path}: field 'version' must be {version}, got {payload.get('version')!r}")
    return payload
