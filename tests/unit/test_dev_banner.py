"""The commands `nats-gateway dev` prints work when pasted into a fresh shell: absolute
paths to this environment's `nats-gateway` and `python`, and the absolute state dir."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from gateway.dev.environment import dev_banner, venv_commands


def _banner(state_dir: Path) -> str:
    return dev_banner(
        nats_url="nats://127.0.0.1:4222", listen="127.0.0.1:4222", xkey=True,
        issuer="http://127.0.0.1:9000", admin_token="tok", policy_dir="/p",
        audit_url="sqlite:///a.db", state_dir=state_dir,
        commands=venv_commands(Path(sys.executable)))


def _command_lines(banner: str) -> list[str]:
    text = banner.split("(another shell):", 1)[1]
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("      ") and ":" not in line[:20]
            and not line.strip().startswith("curl")]


def test_printed_commands_use_absolute_paths(tmp_path: Path) -> None:
    lines = _command_lines(_banner(tmp_path / "state dir"))
    assert len(lines) == 2, lines
    for line in lines:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        program = lexer.get_token() or ""  # only the first word: the rest spans two lines
        assert Path(program).is_absolute() and Path(program).is_file(), line
    assert shlex.quote(str(tmp_path / "state dir")) in lines[0]


def test_the_token_command_runs_without_the_venv_on_path(tmp_path: Path) -> None:
    [token, _] = _command_lines(_banner(tmp_path))
    command = [*shlex.split(token.split(">")[0]), "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--dag" in done.stdout


def test_without_a_console_script_the_module_is_run(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    gateway, printed_python = venv_commands(python)
    assert gateway == f"{python} -m gateway.cli" and printed_python == str(python)
