"""Where a SQLite audit store lives: its missing directory is created owner-only, as a
service's first start would; a directory that cannot be made, or a file SQLite cannot
open, is an error naming the path and the cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.store import AuditStore
from gateway.errors import AuditUnavailable

pytestmark = pytest.mark.integration


def test_a_missing_directory_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit" / "audit.db"
    store = AuditStore(f"sqlite:///{path}")
    try:
        assert store.migrate() is not None
    finally:
        store.close()
    assert path.is_file()
    for directory in (tmp_path / "state", tmp_path / "state" / "audit"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_a_directory_that_cannot_be_made_is_named_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a file where a directory must go: refused even for root
    path = blocker / "audit" / "audit.db"
    store = AuditStore(f"sqlite:///{path}")
    with pytest.raises(AuditUnavailable) as caught:
        store.migrate()
    store.close()
    assert caught.value.description == (f"audit store `{path}`: cannot create directory "
                                        f"`{blocker / 'audit'}`: not a directory")


def test_a_file_sqlite_cannot_open_is_named_with_the_cause(tmp_path: Path) -> None:
    """Through the CLI, as an operator meets it: one line, no traceback."""
    path = tmp_path / "audit.db"
    path.mkdir()  # a directory where the database file must go
    config = tmp_path / "gateway.toml"
    config.write_text('[nats]\nuser_seed_file = "x"\n[keys]\nissuer_seed_file = "y"\n'
                      f'[audit]\nurl = "sqlite:///{path}"\n')
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "migrate",
                             "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"nats-gateway: error: audit store `{path}` migration "
                                     "failed: OperationalError: unable to open database file")
