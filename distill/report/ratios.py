"""Ratios of a report row against a reference row (the PyTorch teacher, its ONNX files):
how many times smaller and faster, how much of a score is kept.

A row is a dict with ``key``, ``bytes`` and a speed (``latency.p50_ms`` by default; a task
whose speed is a rate names its own, as tokens/s). Each task chooses its columns from the
helpers here and :func:`add_ratios` fills them in on every row; a number that is missing
on either side gives None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Row = dict[str, Any]
# A ratio column: (row, reference row) -> its value.
Column = Callable[[Row, Row], Any]


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``; None when ``value`` is missing or ``reference`` missing or zero."""
    return value / reference if value is not None and reference else None


def p50_ms(row: Row) -> float | None:
    """A row's median latency (ms), when it was timed."""
    return (row.get("latency") or {}).get("p50_ms")


def times_smaller(row: Row, reference: Row) -> float | None:
    """How many times fewer bytes ``row`` takes than ``reference`` (None without a size)."""
    return reference["bytes"] / row["bytes"] if row.get("bytes") else None


def times_faster(
    row: Row,
    reference: Row,
    speed: Callable[[Row], float | None] = p50_ms,
    *,
    rate: bool = False,
) -> float | None:
    """How many times faster ``row`` is than ``reference`` by ``speed``: a time per call
    (lower is faster), or with ``rate`` a rate (higher is faster); None unless both have one."""
    mine, theirs = speed(row), speed(reference)
    if not (mine and theirs):
        return None
    return mine / theirs if rate else theirs / mine


def kept(metric: str) -> Column:
    """The column ``row[metric] / reference[metric]`` (the share of a score kept)."""
    return lambda row, reference: ratio(row.get(metric), reference.get(metric))


def difference(metric: str) -> Column:
    """The column ``row[metric] - reference[metric]`` (points gained or lost)."""
    return lambda row, reference: row[metric] - reference[metric]


def add_ratios(
    rows: list[Row],
    columns: Mapping[str, Column],
    *,
    reference: str = "teacher",
    skip_missing: bool = False,
) -> None:
    """Fill ``columns`` (name -> column) in on every row against the row keyed
    ``reference``; with ``skip_missing`` a column whose value is None is left out."""
    against = next(row for row in rows if row["key"] == reference)
    for row in rows:
        for name, column in columns.items():
            value = column(row, against)
            if value is not None or not skip_missing:
                row[name] = value


def kept_sentence(
    kept: float | None,
    score: str,
    size_fraction: float | None,
    speedup: float | None,
    speed: str = "faster at batch 1",
) -> str:
    """ "The deployed student keeps 93.1% of the teacher's F1 at 12.0% of its size, 6.20×
    faster at batch 1." (``score`` names the measure; a figure not measured is left out)."""
    text = "The deployed student"
    if kept is not None:
        text += f" keeps {kept:.1%} of the teacher's {score}"
    if size_fraction is not None:
        text += f" at {size_fraction:.1%} of its size"
    if speedup is not None:
        text += f", {speedup:.2f}× {speed}"
    return text + "."
