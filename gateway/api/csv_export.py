"""The CSV export's encoding: one row per record, every text cell safe to open.

Records hold text the gateway did not choose: a client's CONNECT ``name``, a token's
subject inside ``principal``, a ``reason`` quoting them. A spreadsheet runs a cell that
starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) as a
formula, so ``=HYPERLINK("http://x","y")`` as a client name would become a live link
in the auditor's copy. OWASP's CSV-injection rule: such a cell gets a leading ``'``,
which spreadsheets show as text. The JSON Lines export is JSON and is left as is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from gateway.audit.record import AuditRecord

__all__ = ["FIELDS", "FORMULA_STARTS", "csv_lines", "neutralise"]

FIELDS = ["decision_id", "decided_at", "decision", "reason_code", "reason", "method",
          "principal", "identity_fingerprint", "dag_id", "task_id", "run_id",
          "client_host", "client_id", "client_name", "client_lang", "client_version",
          "server_id", "server_name", "user_nkey", "permissions", "expires_at",
          "policy_ids", "policy_set_hash", "gateway_instance", "latency_ms", "chain_seq",
          "record_hash"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` if a spreadsheet would read it as a formula.
    Numbers are left alone: a negative number is a number, not a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _row(record: AuditRecord) -> dict[str, Any]:
    row = record.as_row()
    row["decided_at"] = datetime.fromtimestamp(record.decided_at, UTC).isoformat()
    return {name: neutralise(row[name]) for name in FIELDS}


def csv_lines(records: Iterator[AuditRecord]) -> Iterator[str]:
    """The header, then one line per record, as each record arrives (constant memory)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for record in records:
        writer.writerow(_row(record))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
