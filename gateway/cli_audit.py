"""`nats-gateway audit ...`: migrate the store, verify its integrity, purge by retention.

    nats-gateway audit migrate --config FILE
    nats-gateway audit verify --config FILE [--json] [--anchors DIR]
                              [--anchors-stream NAME [--nats-url URL]]
                                                          exit 1 when tampering is found
    nats-gateway audit purge --config FILE --older-than-days N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.audit.anchors import read_directory, read_stream
from gateway.audit.migrate import head_revision, stored_revision
from gateway.audit.retention import purge
from gateway.audit.store import AuditStore, CheckpointRow
from gateway.audit.verify import VerifyReport, verify_store
from gateway.config import GatewaySettings, load_settings
from gateway.errors import ConfigError, GatewayError

__all__ = ["add_audit_commands", "run_audit_command"]


CONFIG_HELP = "the gateway's TOML config (its audit store)"


def add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="migrate, verify and purge the audit store")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    migrate = sub.add_parser("migrate", help="bring the store to the current schema")
    migrate.add_argument("--config", type=Path, required=True, help=CONFIG_HELP)
    verify = sub.add_parser("verify", help="check hash chains and signed checkpoints")
    verify.add_argument("--config", type=Path, required=True, help=CONFIG_HELP)
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument("--anchors", type=Path, metavar="DIR",
                        help="check against an anchor directory (audit.anchor_dir)")
    verify.add_argument("--anchors-stream", metavar="NAME",
                        help="check against an anchor JetStream stream (audit.anchor_stream)")
    verify.add_argument("--nats-url", help="where the anchor stream is (default nats.url)")
    purge_cmd = sub.add_parser("purge", help="delete old records, keeping chains verifiable")
    purge_cmd.add_argument("--config", type=Path, required=True, help=CONFIG_HELP)
    purge_cmd.add_argument("--older-than-days", type=int, required=True, metavar="DAYS",
                           help="delete records older than this many days")


def run_audit_command(args: argparse.Namespace) -> int:
    from gateway.runtime import load_checkpoint_signer, trusted_checkpoint_keys

    settings = load_settings(args.config)
    if args.audit_command != "migrate":
        _require_migrated(settings.audit.url)
    store = AuditStore(settings.audit.url)
    try:
        if args.audit_command == "migrate":
            print(f"audit store at revision {store.migrate()}")
            return 0
        if args.audit_command == "verify":
            anchored, warnings = _read_anchors(args, settings)
            report = verify_store(store, trusted_checkpoint_keys(settings),
                                  grace=settings.audit.verify_grace_seconds,
                                  anchored=anchored)
            report.warnings[:0] = warnings
            _print_report(report, as_json=args.json)
            return 0 if report.ok else 1
        signer = load_checkpoint_signer(settings)
        if signer is None:
            raise ConfigError("audit.checkpoint_key_file is not set: purges must be signed")
        if args.older_than_days < 1:
            raise ConfigError("--older-than-days must be at least 1")
        result = purge(store, signer, older_than_seconds=args.older_than_days * 86400,
                       now=time.time())
        print(f"deleted {result.deleted} record(s) older than {args.older_than_days} days; "
              f"{len(result.anchors)} signed purge anchor(s) written")
        return 0
    finally:
        store.close()


def _require_migrated(url: str) -> None:
    """Reading a store that was never migrated would fail deep in SQL (and SQLite would
    create an empty file): say so in one line instead, creating nothing."""
    revision = stored_revision(url)
    if revision is None:
        raise ConfigError("the audit store was never migrated: run `nats-gateway audit "
                          "migrate --config FILE` first")
    if revision != head_revision():
        raise ConfigError(f"the audit store is at revision `{revision}`: run `nats-gateway "
                          "audit migrate --config FILE` first")


def _read_anchors(args: argparse.Namespace,
                  settings: GatewaySettings) -> tuple[list[CheckpointRow] | None, list[str]]:
    if args.anchors is None and args.anchors_stream is None:
        return None, []
    rows: list[CheckpointRow] = []
    warnings: list[str] = []
    bad = 0
    if args.anchors is not None:
        found, bad_lines = read_directory(args.anchors)
        rows.extend(found)
        bad += bad_lines
    if args.anchors_stream is not None:
        found, bad_messages, stream_warnings = asyncio.run(
            _read_stream(settings, args.anchors_stream, args.nats_url))
        rows.extend(found)
        bad += bad_messages
        warnings.extend(stream_warnings)
    if bad:
        warnings.append(f"{bad} anchor entry(ies) are not checkpoints")
    return rows, warnings


async def _read_stream(settings: GatewaySettings, stream: str,
                       url: str | None) -> tuple[list[CheckpointRow], int, list[str]]:
    from gateway.runtime import anchor_connect

    try:
        nc = await anchor_connect(settings, url)()
    except Exception as exc:  # nats-py raises several unrelated types here
        raise ConfigError(f"cannot reach nats for anchor stream `{stream}`: "
                          f"{type(exc).__name__}") from exc
    try:
        return await read_stream(nc, stream)
    except GatewayError:
        raise
    except Exception as exc:  # a nats-py error: one line, not a traceback
        raise ConfigError(f"cannot read anchor stream `{stream}`: "
                          f"{type(exc).__name__}") from exc
    finally:
        await nc.close()


def _print_report(report: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for problem in report.problems:
        print(f"{problem.kind}: {problem.message}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    anchored = ("" if report.anchored_checkpoints is None
                else f", {report.anchored_checkpoints} anchored")
    print(f"{verdict}: {report.records} records in {report.instances} chain(s), "
          f"{report.checkpoints} checkpoint(s){anchored}, {report.legacy_records} legacy")
