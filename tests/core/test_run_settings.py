"""``--set`` overrides and settings fingerprints: one parser and one hash for every command."""

from __future__ import annotations

import pytest

from nptface.core.run_settings import parse_override, settings_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b=3", ("a.b", 3)),
        ("lr = 0.05", ("lr", 0.05)),
        ("dp-delta=1e-5", ("dp-delta", 1e-5)),
        ("a.b=[1, 2]", ("a.b", [1, 2])),
        ("a.b={k = 3}", ("a.b", {"k": 3})),
        ("flag=true", ("flag", True)),
        ('mode="public"', ("mode", "public")),
        ("mode=public", ("mode", "public")),
        ("path=runs/x=1", ("path", "runs/x=1")),
    ],
)
def test_values_parse_as_toml_literals_with_the_plain_text_as_fallback(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["num-rounds", "=3", "  = x"])
def test_an_override_without_a_key_is_refused_with_the_expected_form(text):
    class SettingError(ValueError):
        pass

    with pytest.raises(SettingError, match=r"must look like section\.key=value"):
        parse_override(text, SettingError, form="section.key=value")


def test_the_settings_hash_ignores_key_order_but_not_values():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
    assert len(settings_hash({})) == 16
