"""``/v1/audit``: verify the log's integrity (auditor) and purge by retention (admin)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from gateway.api.deps import Admin, Auditor, Store
from gateway.audit.chain import CheckpointSigner
from gateway.audit.retention import purge
from gateway.audit.verify import TrustedKey, verify_store

router = APIRouter(prefix="/v1/audit", tags=["audit"])

# A century: more is "keep everything", and a number of days too large for a float of
# seconds would fail in the cutoff's arithmetic rather than be refused.
MAX_PURGE_DAYS = 36500


@router.get("/verify")
def verify(store: Store, request: Request, _: Auditor) -> dict[str, Any]:
    """Walk every hash chain and checkpoint; `problems` names each tampered record."""
    trusted: tuple[str | TrustedKey, ...] = request.app.state.trusted_checkpoint_keys
    return verify_store(store, trusted).as_dict()


@router.post("/purge")
def purge_old(store: Store, request: Request, caller: Admin,
              older_than_days: Annotated[int, Query(ge=1, le=MAX_PURGE_DAYS)]) -> dict[str, Any]:
    """Delete records older than N days, leaving a signed purge anchor per chain."""
    signer: CheckpointSigner | None = request.app.state.checkpoint_signer
    if signer is None:
        raise HTTPException(409, "no checkpoint key is configured: purges must be signed")
    result = purge(store, signer, older_than_seconds=older_than_days * 86400, now=time.time())
    return {"deleted": result.deleted, "cutoff": result.cutoff, "by": caller.name,
            "anchors": [{"instance": a.gateway_instance, "through_chain_seq": a.chain_seq}
                        for a in result.anchors]}
