"""`nats-gateway --help` is written for users: every option of every command says what it
does, every command has a one-line help, and the top-level usage and description name
every command (nested ones too), so nothing is found only by reading the source."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from gateway.cli import _parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(_parser()))


def _subcommand_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction[
        argparse.ArgumentParser]]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "top")
def test_every_option_has_a_help_line(path: tuple[str, ...]) -> None:
    parser = COMMANDS[path]
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
               and (not a.help or a.help == argparse.SUPPRESS)]
    assert missing == [], f"options without help in `nats-gateway {' '.join(path)}`"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "top")
def test_every_subcommand_has_a_help_line(path: tuple[str, ...]) -> None:
    for action in _subcommand_actions(COMMANDS[path]):
        helped = {choice.dest for choice in action._choices_actions if choice.help}
        assert helped == set(action.choices), path


def test_the_top_level_help_names_every_command() -> None:
    parser = _parser()
    usage = parser.format_usage()
    top = {path[0] for path in COMMANDS if path}
    assert all(name in usage for name in top), usage
    description = parser.description or ""
    for path in COMMANDS:
        if path:
            assert f"nats-gateway {' '.join(path)}" in description or (
                len(path) > 1 and path[-1] in description), path
    assert "the only module that prints" not in description  # written for users


def test_the_readme_documents_every_nats_config_option_it_uses() -> None:
    """README step 3 names both modes and --listen; every flag it shows exists."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    step = readme[readme.index("3. Generate the nats-server"):readme.index("4. Run `nats")]
    known = {o for a in COMMANDS[("nats-config",)]._actions for o in a.option_strings}
    used = set(re.findall(r"(--[a-z][a-z-]+)", step))
    assert {"--mode", "--listen", "--keep-user", "--out"} <= used
    assert used <= known, used - known
    assert "--mode full" in step and "--mode merge" in step
