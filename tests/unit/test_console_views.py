"""The console's pure parts: its decision filters (checked as the API checks them) and
the summary chart's numbers."""

from __future__ import annotations

from gateway.audit.store import encode_cursor
from gateway.console.chart import MAX_DAYS, per_dag, timeline
from gateway.console.filters import parse_filters


def test_filters_become_the_apis_query_and_blank_fields_are_no_filter() -> None:
    parsed = parse_filters({"dag": " etl ", "decision": "deny", "task": "",
                            "since": "2026-11-24T00:00", "cursor": encode_cursor(42)})
    assert not parsed.errors
    q = parsed.query
    assert (q.dag_id, q.decision, q.task_id, q.before_seq) == ("etl", "deny", None, 42)
    assert q.since == 1795478400.0  # no zone: UTC
    assert parsed.values == {"dag": "etl", "decision": "deny", "since": "2026-11-24T00:00"}
    assert "cursor" not in parsed.link() and "dag=etl" in parsed.link()


def test_bad_filters_are_named_not_queried() -> None:
    parsed = parse_filters({"dag": "a\0b", "decision": "maybe", "until": "tuesday",
                            "principal": "x" * 5000, "cursor": "nope"})
    assert len(parsed.errors) == 5
    assert any("`until`" in e for e in parsed.errors)
    assert all(not e[:2].strip("`").isupper() and not e.endswith(".") for e in parsed.errors)


ROWS = [{"day": "2026-11-20", "dag_id": "etl", "task_id": "load", "decision": "grant",
         "count": 4},
        {"day": "2026-11-22", "dag_id": "etl", "task_id": "load", "decision": "deny",
         "count": 2},
        {"day": "2026-11-22", "dag_id": "billing", "task_id": "x", "decision": "deny",
         "count": 8}]


def test_per_dag_totals_busiest_first() -> None:
    totals = per_dag(ROWS)
    assert [(t.dag_id, t.grants, t.denies) for t in totals] == [("billing", 0, 8),
                                                                ("etl", 4, 2)]


def test_the_timeline_has_every_day_and_bars_scaled_to_the_peak() -> None:
    chart = timeline(ROWS)
    assert chart.days == [("2026-11-20", 4, 0), ("2026-11-21", 0, 0), ("2026-11-22", 0, 10)]
    tallest = max(chart.bars, key=lambda b: b.height)
    assert (tallest.day, tallest.kind, tallest.count) == ("2026-11-22", "deny", 10)
    assert all(b.x + b.width <= chart.width for b in chart.bars)
    assert timeline([]).bars == []


def test_a_long_range_keeps_the_last_days() -> None:
    rows = [{"day": day, "dag_id": "d", "task_id": "t", "decision": "grant", "count": 1}
            for day in ("2025-01-01", "2026-01-01")]
    chart = timeline(rows)
    assert len(chart.days) == MAX_DAYS and chart.days[-1][0] == "2026-01-01"
    assert chart.first_day_shown is not None
