import math

from nptface.core.tables import markdown_table, percent


def test_markdown_table_has_header_rule_and_rows():
    text = markdown_table(["a", "b"], [[1, "x"], [2.5, None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | None |"]


def test_percent_renders_missing_values_as_na():
    assert percent(0.95123) == "95.12%"
    assert percent(None) == "n/a"
    assert percent(math.nan) == "n/a"
    assert percent(0.5, digits=0) == "50%"
