"""docs/policies.md shows `policy explain` output for each shipped example; re-run every
documented command and require the same output, so the docs cannot drift."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "policies.md").read_text()
BLOCKS = re.findall(r"```console\n\$ nats-gateway (policy explain [^\n]*)\n(.*?)```", DOC,
                    flags=re.S)


def test_every_example_is_explained_in_the_docs() -> None:
    explained = " ".join(command for command, _ in BLOCKS)
    for example in (ROOT / "policies" / "examples").glob("*.yaml"):
        assert f"({example.name})" in DOC, example.name
    assert len(BLOCKS) >= 5 and "--dir policies " in explained


@pytest.mark.parametrize("command,expected", BLOCKS, ids=lambda v: str(v)[:60])
def test_documented_output_is_current(command: str, expected: str,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    denied = "\ndecision: DENY (" in expected
    assert main(shlex.split(command)) == (1 if denied else 0)
    assert capsys.readouterr().out == expected
