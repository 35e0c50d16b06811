"""Load a policy directory into a PolicySet, collecting every error with file and line.

A set is all-or-nothing: one broken file fails the whole load with every problem listed
(as OPA's loader does), so the caller keeps its last good set. The set's ``content_hash``
(SHA-256 over file names and bytes) is recorded in every audit record.

Duplicate mapping keys are refused at any depth: YAML loaders keep the last value, so a
second `match:` would silently widen a policy and a second `deny:` erase the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.policy.index import PolicyIndex
from gateway.policy.model import Policy, PolicyFile
from gateway.untrusted import safe_text

__all__ = ["PolicyLoadError", "PolicySet", "SubjectKey", "load_policy_dir", "load_policy_text"]

MAX_POLICY_FILE_BYTES = 1024 * 1024
SubjectKey = tuple[str, str, str, int]
"""(policy id, ``publish``/``subscribe``, ``allow``/``deny``, index in that list); for
JetStream templates (policy id, ``jetstream``, ``publish.N.subjects`` or
``consume.N.filter``, index)"""
_DIRECTIONS = (("publish", "allow"), ("publish", "deny"), ("subscribe", "allow"),
               ("subscribe", "deny"))


class PolicyLoadError(ConfigError):
    """One or more policy files are invalid; ``problems`` holds `file:line: message`."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} policy error(s): " + "; ".join(self.problems),
                         code="policy_invalid")


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[Policy, ...]
    content_hash: str
    files: tuple[str, ...] = field(default_factory=tuple)
    sources: Mapping[str, str] = field(default_factory=dict)
    """policy id -> ``file:line`` where it is defined, for explanations."""
    subject_sources: Mapping[SubjectKey, str] = field(default_factory=dict)
    """(policy id, direction, kind, index) -> ``file:line`` of that subject template, so
    lint can point at the very line."""
    fingerprints: InitVar[Sequence[str] | None] = None
    """each policy's content digest, when its loader computed them already"""
    index: PolicyIndex = field(init=False, repr=False, compare=False)
    """candidate policies by issuer and subject prefix (index.py); built here, where the
    set is made (off the event loop), never during a decision"""

    def __post_init__(self, fingerprints: Sequence[str] | None) -> None:
        object.__setattr__(self, "index", PolicyIndex(self.policies, fingerprints))


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """Best line for a pydantic error location, walking the composed YAML tree."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:  # an unknown key: point at the key itself
                child = next((k for k, _ in node.value if getattr(k, "value", None) == part),
                             None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _shown(key: str) -> str:
    """A key as one short, printable line for a message."""
    return safe_text(key, 60)


def _duplicate_keys(root: yaml.Node | None, name: str) -> list[str]:
    """One problem per repeated key in any mapping of the composed tree. Keys compare by
    resolved tag and text, so `match` and `"match"` are the same key. Iterative, and each
    node once, because aliases can share (or loop back to) nodes."""
    found: list[tuple[int, str]] = []
    pending, seen = [root], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            found += _repeated_in(node)
            pending += [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value
    return [f"{name}:{line}: {message}" for line, message in sorted(found)]


def _repeated_in(mapping: yaml.MappingNode) -> list[tuple[int, str]]:
    first: dict[tuple[str, str], int] = {}
    repeated: list[tuple[int, str]] = []
    for key, _ in mapping.value:
        if not isinstance(key, yaml.ScalarNode):
            continue  # a complex key is refused by the constructor as unhashable
        line = key.start_mark.line + 1
        if (key.tag, key.value) in first:
            repeated.append((line, f"duplicate key `{_shown(key.value)}` (first at line "
                                   f"{first[key.tag, key.value]})"))
        else:
            first[key.tag, key.value] = line
    return repeated


def _field_path(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def _policy_lines(node: yaml.Node | None, count: int) -> list[int]:
    return [_line_of(node, ("policies", index)) for index in range(count)]


def _jetstream_locations(policy: Policy) -> list[tuple[str, tuple[int | str, ...]]]:
    """(key part, YAML path below ``permissions``) of each JetStream subject template."""
    jetstream = policy.permissions.jetstream
    out: list[tuple[str, tuple[int | str, ...]]] = []
    for rule_index, rule in enumerate(jetstream.publish):
        out += [(f"publish.{rule_index}.subjects",
                 ("jetstream", "publish", rule_index, "subjects", position))
                for position in range(len(rule.subjects))]
    out += [(f"consume.{rule_index}.filter", ("jetstream", "consume", rule_index, "filter"))
            for rule_index in range(len(jetstream.consume))]
    return out


def _subject_sources(node: yaml.Node | None, name: str,
                     policies: Sequence[Policy]) -> dict[SubjectKey, str]:
    out: dict[SubjectKey, str] = {}
    for index, policy in enumerate(policies):
        for direction, kind in _DIRECTIONS:
            templates = getattr(getattr(policy.permissions, direction), kind)
            for position in range(len(templates)):
                loc = ("policies", index, "permissions", direction, kind, position)
                out[policy.id, direction, kind, position] = f"{name}:{_line_of(node, loc)}"
        for part, path in _jetstream_locations(policy):
            position = path[-1] if isinstance(path[-1], int) else 0
            js_loc: tuple[int | str, ...] = ("policies", index, "permissions", *path)
            out[policy.id, "jetstream", part, position] = f"{name}:{_line_of(node, js_loc)}"
    return out


def load_policy_text(text: str, name: str) -> tuple[list[Policy], list[str]]:
    """Parse one file; returns its policies and its problems (never raises)."""
    parsed = _parse_policy_text(text, name)
    return parsed.policies, parsed.problems


@dataclass
class _Parsed:
    """One file: its policies (none if it has problems), each one's line, and where each
    subject template is."""

    problems: list[str]
    policies: list[Policy] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    subjects: dict[SubjectKey, str] = field(default_factory=dict)


# libyaml when PyYAML was built with it: about 5x faster than the pure-Python parser and
# the same safe constructor. Its nodes carry the same marks, so lines stay accurate.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _construct(text: str, node: yaml.Node | None) -> Any:
    """What ``safe_load`` returns, built from ``node`` when that is safe. Merge keys
    (`<<`, or a `!!merge` tag) are flattened into the tree they are built from, which would
    change the duplicate-key check and the error lines: such text is composed afresh."""
    if "<<" in text or "merge" in text:
        node = _compose(text)
    if node is None:
        return None
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _parse_policy_text(text: str, name: str) -> _Parsed:
    try:
        node = _compose(text)
        data = _construct(text, node)
    except UnicodeEncodeError:
        # libyaml takes UTF-8, which a lone surrogate cannot be (only a caller passing
        # such text can get here: files are read as UTF-8); the pure parser refuses it too.
        return _Parsed([f"{name}:1: not valid yaml: the text is not valid unicode "
                        "(lone surrogate)"])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        return _Parsed([f"{name}:{line}: not valid yaml: {getattr(exc, 'problem', exc)}"])
    duplicates = _duplicate_keys(node, name)
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        return _Parsed(duplicates + [
            f"{name}:{_line_of(node, err['loc'])}: `{_field_path(err['loc'])}`: {err['msg']}"
            for err in exc.errors()
        ])
    if duplicates:
        return _Parsed(duplicates)
    policies = list(parsed.policies)
    return _Parsed([], policies, _policy_lines(node, len(policies)),
                   _subject_sources(node, name, policies))


def _read_policy_file(path: Path, problems: list[str]) -> str | None:
    """The file's text, or None with the reason added to ``problems``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:  # removed or replaced mid-load, unreadable, a directory
        problems.append(f"{path.name}:1: cannot read: {exc.strerror or exc}")
        return None
    if len(raw) > MAX_POLICY_FILE_BYTES:
        problems.append(f"{path.name}:1: file exceeds {MAX_POLICY_FILE_BYTES} bytes")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(f"{path.name}:{line}: not valid UTF-8")
        return None


def load_policy_dir(directory: Path) -> PolicySet:
    """Load every ``*.yaml``/``*.yml`` file; raise PolicyLoadError listing every problem."""
    if not directory.is_dir():
        raise PolicyLoadError([f"{directory}: policy directory does not exist"])
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"})
    except OSError as exc:  # unreadable: a problem to report, never a crash
        raise PolicyLoadError([f"{directory}: cannot list policy directory: "
                               f"{exc.strerror or exc}"]) from exc
    digest = hashlib.sha256()
    policies: list[Policy] = []
    problems: list[str] = []
    sources: dict[str, str] = {}
    subjects: dict[SubjectKey, str] = {}
    for path in paths:
        text = _read_policy_file(path, problems)
        if text is None:
            continue
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        parsed = _parse_policy_text(text, path.name)
        problems.extend(parsed.problems)
        for policy, line in zip(parsed.policies, parsed.lines, strict=True):
            if policy.id in sources:
                problems.append(f"{path.name}:{line}: policy id `{policy.id}` already defined "
                                f"at {sources[policy.id]}")
                continue
            sources[policy.id] = f"{path.name}:{line}"
        policies.extend(parsed.policies)
        subjects.update(parsed.subjects)
    if problems:
        raise PolicyLoadError(problems)
    return PolicySet(tuple(policies), "sha256:" + digest.hexdigest(),
                     tuple(p.name for p in paths), sources, subjects)
