"""Markdown tables and percentages for reports: one format for every table nptface writes.

Training, federated and export reports, and the benchmarks, render results through these two
functions so a missing value reads the same everywhere ("n/a", never "nan%").
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; cells are rendered with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (0.9512 -> "95.12%"); None or NaN -> "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.{digits}f}%"
