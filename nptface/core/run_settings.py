"""Settings given on the command line, and the fingerprint of a run's settings: one way for every command.

``--set KEY=VALUE`` (``nptface train``, ``nptface quickstart``, ``nptface fed simulate``) reads
VALUE as a TOML literal — ``0.1``, ``[30, 45]``, ``"npt"``, ``true``, ``{k = 3}`` — the syntax of
the config files and of Flower's ``--run-config``, and falls back to the plain text, so
``head.name=npt`` needs no quotes. A run's settings are fingerprinted by :func:`settings_hash`
(the first 16 hex digits of the SHA-256 of their canonical JSON); a resume compares fingerprints
to refuse a checkpoint written under other settings.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from typing import Any


def parse_override(text: str, error: type[Exception] = ValueError, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, VALUE parsed as a TOML literal, else the stripped text).

    Raises ``error``, quoting ``text`` and the expected ``form``, when there is no ``=`` or no
    key before it.
    """
    key, separator, raw_value = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise error(f"override {text!r} must look like {form}")
    raw_value = raw_value.strip()
    try:
        value = tomllib.loads(f"v = {raw_value}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value
    return key, value


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short, stable fingerprint of JSON-serialisable settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
