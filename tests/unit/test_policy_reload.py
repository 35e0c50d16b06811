"""The live policy set: a good edit takes effect, a broken one never replaces the last good
set and stays visible until fixed."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from pathlib import Path

import pytest

from gateway.policy.load import PolicyLoadError, load_policy_dir
from gateway.policy.offload import load_policy_dir_isolated
from gateway.policy.reload import PolicyHolder, watch_policies

GOOD = """\
version: 1
policies:
  - id: one
    match: {oidc: {issuer: corp}}
    scopes: [{dag: "*"}]
    permissions: {publish: {allow: ["a.{dag_id}.{task_id}"]}}
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    # Some filesystems keep coarse mtimes; a distinct mtime makes the change certain.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_broken_set_at_start_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("version: 2\n")
    with pytest.raises(PolicyLoadError, match=r"p\.yaml:1"):
        PolicyHolder(tmp_path)


def test_good_edit_replaces_and_broken_edit_keeps_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(tmp_path, clock=lambda: 100.0)
    first = holder.current()
    assert not holder.poll()  # nothing changed

    _write(path, GOOD.replace("id: one", "id: two"))
    assert holder.poll()
    second = holder.current()
    assert [p.id for p in second.policies] == ["two"]
    assert second.content_hash != first.content_hash

    with caplog.at_level(logging.ERROR, logger="gateway.policy.reload"):
        _write(path, GOOD.replace("scopes:", "scopez:"))
        assert not holder.poll()
    assert holder.current() is second
    status = holder.status()
    assert status["status"] == "stale" and not holder.healthy
    assert status["reload_failures"] == 1 and status["reloads"] == 1
    assert status["last_error"]["trigger"] == "file change"
    assert any("p.yaml:5: `policies.0.scopez`" in p for p in status["last_error"]["problems"])
    assert "keeping " + second.content_hash[:19] in caplog.text

    _write(path, GOOD.replace("id: one", "id: two"))  # fixed back to the same content
    assert not holder.poll()  # same hash: nothing swapped, but the error is cleared
    assert holder.healthy and holder.status()["last_error"] is None


def test_removing_every_file_is_a_valid_empty_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(tmp_path)
    path.unlink()
    assert holder.poll()
    assert holder.current().policies == ()


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    holder = PolicyHolder(tmp_path)
    (tmp_path / "dir.yaml").mkdir()  # a directory where a file is expected
    assert not holder.reload("test")
    assert "dir.yaml:1: cannot read" in holder.status()["last_error"]["problems"][0]
    assert [p.id for p in holder.current().policies] == ["one"]


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(GOOD.encode() + b"# \xff\n")
    with pytest.raises(PolicyLoadError, match=r"p\.yaml:7: not valid UTF-8"):
        PolicyHolder(tmp_path)


async def test_the_watcher_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(tmp_path)
    task = asyncio.create_task(watch_policies(holder, 0.02))
    try:
        _write(path, GOOD.replace("id: one", "id: three"))
        for _ in range(200):
            if holder.current().policies[0].id == "three":
                break
            await asyncio.sleep(0.01)
        assert holder.current().policies[0].id == "three"
    finally:
        task.cancel()


def test_a_duplicate_key_edit_keeps_the_last_good_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(tmp_path)
    good = holder.current()
    # A second `match:` would widen the policy to every identity of the issuer if loaded.
    _write(path, GOOD + "    match: {oidc: {issuer: other}}\n")
    assert not holder.reload("test")
    assert holder.current() is good
    assert holder.status()["last_error"]["problems"] == [
        "p.yaml:7: duplicate key `match` (first at line 4)"]


def test_the_child_process_loads_what_the_process_itself_loads(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD + GOOD.split("policies:\n")[1].replace("one", "two"))
    isolated, local = load_policy_dir_isolated(tmp_path), load_policy_dir(tmp_path)
    assert isolated == local  # policies, hash, files, sources, subject lines
    assert isolated.index.fingerprints == local.index.fingerprints


def test_the_child_process_reports_the_same_lines(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD.replace("scopes:", "scopez:") + "  - [\n")
    with pytest.raises(PolicyLoadError) as isolated:
        load_policy_dir_isolated(tmp_path)
    with pytest.raises(PolicyLoadError) as local:
        load_policy_dir(tmp_path)
    assert isolated.value.problems == local.value.problems and local.value.problems


def test_a_loader_that_never_finishes_keeps_the_last_good_set(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    holder = PolicyHolder(tmp_path, loader=functools.partial(load_policy_dir_isolated,
                                                             timeout_seconds=1))
    good = holder.current()
    os.mkfifo(tmp_path / "q.yaml")  # reading it blocks the child forever: no writer
    assert not holder.reload("test")
    assert holder.current() is good and not holder.healthy
    assert "took longer than 1 s" in holder.status()["last_error"]["problems"][0]
