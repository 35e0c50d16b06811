"""Every test the attack catalogue and fault table in docs/security.md name exists (and
every parametrized case it names is one of that test's ids), so the catalogue cannot
point at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()
REFERENCES = sorted(set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([\w-]+)\])?`", DOC)))


def test_the_catalogue_names_tests() -> None:
    assert len(REFERENCES) >= 30


@pytest.mark.parametrize("path,name,case", REFERENCES,
                         ids=[f"{n}[{c}]" if c else n for _, n, c in REFERENCES])
def test_each_named_test_exists(path: str, name: str, case: str) -> None:
    source = (ROOT / path).read_text()
    assert re.search(rf"^(async )?def {name}\(", source, flags=re.M), f"{path}::{name}"
    if case:
        assert f'"{case}"' in source, f"{path}::{name} has no case `{case}`"
