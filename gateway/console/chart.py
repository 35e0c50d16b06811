"""The summary page's numbers: per-DAG totals and a day-by-day timeline of grants and
denies, laid out as SVG geometry on the server (the page needs no script). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

__all__ = ["MAX_DAYS", "Bar", "DagTotals", "Timeline", "per_dag", "timeline"]

MAX_DAYS = 92  # a quarter: more days than that would be bars thinner than a pixel
_LEFT, _RIGHT, _BOTTOM, _TOP = 48, 72, 28, 12  # room for the axis and the last label


@dataclass
class DagTotals:
    dag_id: str
    grants: int = 0
    denies: int = 0
    tasks: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Bar:
    kind: str  # "grant" | "deny"
    day: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]  # x, day: a few, so they do not overlap
    ticks: list[tuple[float, int]]  # y, count
    days: list[tuple[str, int, int]]  # day, grants, denies: the chart as a table
    first_day_shown: str | None  # set when older days were left out


def per_dag(rows: Iterable[Mapping[str, Any]]) -> list[DagTotals]:
    totals: dict[str, DagTotals] = {}
    for row in rows:
        entry = totals.setdefault(row["dag_id"], DagTotals(row["dag_id"]))
        if row["decision"] == "grant":
            entry.grants += row["count"]
        else:
            entry.denies += row["count"]
        entry.tasks.add(row["task_id"])
    return sorted(totals.values(), key=lambda t: (-(t.grants + t.denies), t.dag_id))


def _days(counts: Mapping[str, list[int]]) -> tuple[list[str], str | None]:
    """Every day from the first to the last with decisions (the last MAX_DAYS)."""
    parsed = sorted(date.fromisoformat(d) for d in counts)
    first, last = parsed[0], parsed[-1]
    cut = None
    if (last - first).days >= MAX_DAYS:
        first = last - timedelta(days=MAX_DAYS - 1)
        cut = first.isoformat()
    return [(first + timedelta(days=i)).isoformat()
            for i in range((last - first).days + 1)], cut


def timeline(rows: Iterable[Mapping[str, Any]], *, width: int = 760,
             height: int = 220) -> Timeline:
    counts: dict[str, list[int]] = {}
    for row in rows:
        if row["day"] is None:
            continue
        pair = counts.setdefault(row["day"], [0, 0])
        pair[0 if row["decision"] == "grant" else 1] += row["count"]
    if not counts:
        return Timeline(width, height, [], [], [], [], None)
    days, cut = _days(counts)
    peak = max(max(pair) for pair in counts.values())
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _BOTTOM - _TOP
    slot = plot_w / len(days)
    bar_w = max(slot / 2 - 1, 0.5)
    bars: list[Bar] = []
    table: list[tuple[str, int, int]] = []
    for index, day in enumerate(days):
        grants, denies = counts.get(day, [0, 0])
        table.append((day, grants, denies))
        for offset, kind, count in ((0, "grant", grants), (1, "deny", denies)):
            h = plot_h * count / peak
            bars.append(Bar(kind, day, count, round(_LEFT + index * slot + offset * bar_w, 2),
                            round(_TOP + plot_h - h, 2), round(bar_w, 2), round(h, 2)))
    step = max(1, len(days) // 6)
    labels = [(round(_LEFT + i * slot, 2), days[i]) for i in range(0, len(days), step)]
    ticks = [(round(_TOP + plot_h - plot_h * n / peak, 2), n)
             for n in sorted({0, peak // 2, peak})]
    return Timeline(width, height, bars, labels, ticks, table, cut)
