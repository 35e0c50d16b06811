"""`nats-gateway audit ...`: migrate the store, verify its integrity, purge by retention.

    nats-gateway audit migrate --config FILE
    nats-gateway audit verify --config FILE [--json]      exit 1 when tampering is found
    nats-gateway audit purge --config FILE --older-than-days N
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.audit.retention import purge
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_store
from gateway.config import load_settings
from gateway.errors import ConfigError

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
    purge_cmd = sub.add_parser("purge", help="delete old records, keeping chains verifiable")
    purge_cmd.add_argument("--config", type=Path, required=True, help=CONFIG_HELP)
    purge_cmd.add_argument("--older-than-days", type=int, required=True, metavar="DAYS",
                           help="delete records older than this many days")


def run_audit_command(args: argparse.Namespace) -> int:
    from gateway.runtime import load_checkpoint_signer, trusted_checkpoint_keys

    settings = load_settings(args.config)
    store = AuditStore(settings.audit.url)
    try:
        if args.audit_command == "migrate":
            print(f"audit store at revision {store.migrate()}")
            return 0
        if args.audit_command == "verify":
            report = verify_store(store, trusted_checkpoint_keys(settings))
            if args.json:
                print(json.dumps(report.as_dict(), indent=2))
            else:
                for problem in report.problems:
                    print(f"{problem.kind}: {problem.message}")
                for warning in report.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
                print(f"{verdict}: {report.records} records in {report.instances} chain(s), "
                      f"{report.checkpoints} checkpoint(s), {report.legacy_records} legacy")
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
