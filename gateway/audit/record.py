"""One audit record per decision. Holds fingerprints, never a token, seed or signature."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["AuditRecord"]


@dataclass(frozen=True)
class AuditRecord:
    decision_id: str
    decided_at: float
    decision: str  # "grant" | "deny"
    reason_code: str
    reason: str
    gateway_instance: str
    latency_ms: float
    method: str = ""
    principal: str = ""
    identity_fingerprint: str = ""
    dag_id: str = ""
    task_id: str = ""
    run_id: str = ""
    client_host: str = ""
    client_id: int = 0
    client_name: str = ""
    client_lang: str = ""
    client_version: str = ""
    server_id: str = ""
    server_name: str = ""
    user_nkey: str = ""
    permissions: dict[str, Any] = field(default_factory=dict)
    expires_at: int | None = None
    policy_ids: tuple[str, ...] = ()
    policy_set_hash: str = ""
    # Set by the writer when the record joins its instance's hash chain (audit/chain.py).
    chain_seq: int | None = None
    prev_hash: str | None = None
    record_hash: str | None = None

    @property
    def decided_day(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.decided_at))

    def as_row(self) -> dict[str, Any]:
        """The stored form: JSON text for structured fields (what the chain hashes)."""
        # A shallow copy: dataclasses.asdict deep-copies every value, once per decision.
        row = {name: getattr(self, name) for name in _FIELDS}
        row["permissions"] = json.dumps(self.permissions, sort_keys=True)
        row["policy_ids"] = json.dumps(list(self.policy_ids))
        row["decided_day"] = self.decided_day
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditRecord:
        values = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        values["permissions"] = json.loads(values.get("permissions") or "{}")
        values["policy_ids"] = tuple(json.loads(values.get("policy_ids") or "[]"))
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(AuditRecord))
