"""Retention: delete records older than the retention period, keeping chains verifiable.

For each instance, the last record older than the cutoff becomes a signed purge anchor
(kind ``purge``: its position and hash, with the cutoff and count). The anchor and the
deletion commit together, so verify restarts each chain exactly after its anchor and the
purge itself stays on record. A purge needs the checkpoint key: an unsigned anchor would
let anyone with database access hide deletions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from gateway.audit.chain import CheckpointSigner, checkpoint_payload
from gateway.audit.store import AuditStore, CheckpointRow

__all__ = ["PurgeResult", "purge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    deleted: int
    cutoff: float
    anchors: tuple[CheckpointRow, ...]


def purge(store: AuditStore, signer: CheckpointSigner, *, older_than_seconds: float,
          now: float) -> PurgeResult:
    cutoff = now - older_than_seconds
    anchors = []
    for instance, chain_seq, head_hash in store.last_before(cutoff):
        detail = json.dumps({"cutoff": cutoff, "reason": "retention"}, sort_keys=True)
        payload = checkpoint_payload(instance=instance, kind="purge", chain_seq=chain_seq,
                                     record_hash=head_hash, created_at=now, detail=detail)
        anchors.append(CheckpointRow(instance, "purge", chain_seq, head_hash, now, detail,
                                     signer.public_key, signer.sign(payload)))
    deleted = store.purge_through(anchors) if anchors else 0
    log.info("audit purge: %d record(s) older than %.0f deleted across %d chain(s)",
             deleted, cutoff, len(anchors))
    return PurgeResult(deleted, cutoff, tuple(anchors))
