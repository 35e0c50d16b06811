"""`nats-gateway policy check | explain | schema`, run through the real entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [*sorted((ROOT / "policies" / "examples").glob("*.yaml")),
            ROOT / "policies" / "airflow-dev.yaml",
            *sorted((ROOT / "examples" / "policies").glob("*.yaml"))]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_passes_on_each_shipped_example(
        example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(example, tmp_path / example.name)
    assert main(["policy", "check", "--strict", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: ") and "sha256:" in out.out
    assert out.err == ""


def test_check_fails_naming_file_and_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLES[0], tmp_path / "good.yaml")
    broken = (ROOT / "policies" / "examples" / "sensor-subscriber.yaml").read_text().replace(
        "connection_types: [STANDARD]", "connection_types: [STANDARD, TELNET]")
    (tmp_path / "broken.yaml").write_text(broken)
    line = broken.splitlines().index("      connection_types: [STANDARD, TELNET]") + 1
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'broken.yaml'}:{line}: `policies.0.permissions.connection_types.1`" in err
    assert "1 error(s)" in err


def test_check_strict_fails_on_warnings(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\npolicies:\n  - id: x\n    match: {oidc: {issuer: corp}}\n"
        "    scopes: [{dag: '*'}]\n    permissions: {publish: {allow: ['all.>']}}\n")
    assert main(["policy", "check", str(tmp_path)]) == 0
    assert "ok: 1 policies" in capsys.readouterr().out
    assert main(["policy", "check", "--strict", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert f"{tmp_path / 'p.yaml'}:6: warning: policy `x`: publish allow `all.>`" in out.err
    assert "[shared_publish]" in out.err and "failing under --strict" in out.err
    assert out.out == ""


def test_check_strict_fails_on_an_admin_grant(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\npolicies:\n  - id: x\n    match: {oidc: {issuer: corp}}\n"
        "    scopes: [{dag: etl, tasks: [load]}]\n"
        "    permissions:\n      subscribe:\n        allow:\n          - '$SYS.*.>'\n")
    assert main(["policy", "check", str(tmp_path)]) == 0
    assert main(["policy", "check", "--strict", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'p.yaml'}:9: warning: policy `x`: subscribe allow `$SYS.*.>`" in err
    assert "[allow_system]" in err


def test_check_of_a_missing_directory_fails(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_published_schema_is_current_and_validates_the_examples(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    committed = json.loads((ROOT / "docs" / "policy.schema.json").read_text())
    assert printed == committed, "regenerate: nats-gateway policy schema > docs/policy.schema.json"
    validator = jsonschema.Draft202012Validator(committed)
    for example in EXAMPLES:
        validator.validate(yaml.safe_load(example.read_text()))
    broken = yaml.safe_load(EXAMPLES[0].read_text())
    broken["policies"][0]["permissions"]["publish"]["allow"] = ["airflow.{dag_id}x.>"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_explain_json_for_an_iam_role(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--dir", str(ROOT / "policies" / "examples"), "--iam-arn",
            "arn:aws:sts::111111111111:assumed-role/airflow-prod-worker/i-0abc",
            "--dag", "etl", "--task", "grp.load", "--client-host", "10.20.3.4", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decision"] == "grant"
    assert result["matched_policies"] == ["prod-airflow-role"]
    assert result["permissions"]["pub"]["allow"] == ["prod.airflow.etl.grp%2Eload.>"]
    assert result["permissions"]["source_networks"] == ["10.20.3.4/32"]
    assert result["ttl_seconds"] == 900

    assert main([*argv[:-3], "--client-host", "192.0.2.1"]) == 1
    assert "DENY (source_not_allowed" in capsys.readouterr().out


def test_explain_reads_claims_and_refuses_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"iss": "https://ci.example", "sub": "airflow-task:42",
                                  "aud": "nats-gateway", "dag_id": "etl", "task_id": "load"}))
    base = ["policy", "explain", "--dir", str(ROOT / "policies" / "examples"),
            "--issuer-name", "corp", "--claims", str(claims)]
    assert main([*base, "--dag", "etl", "--task", "load"]) == 0
    assert "decision: GRANT by per-task-tokens" in capsys.readouterr().out
    assert main([*base, "--dag", "etl", "--task", "extract"]) == 1
    out = capsys.readouterr().out
    assert "task_id `extract` is not the value of claim `/task_id` ('load')" in out
    assert "decision: DENY (no_matching_policy" in out

    claims.write_text("[1, 2]")
    assert main([*base, "--dag", "etl", "--task", "load"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert main([*base[:-2], "--iam-arn", "arn:aws:iam::111111111111:user/alice",
                 "--dag", "etl", "--task", "load"]) == 2
    assert "not an assumed role" in capsys.readouterr().err


def test_check_strict_refuses_duplicate_keys(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "policies" / "airflow-dev.yaml").read_text().replace(
        "    ttl_seconds: 900", "    match: {oidc: {issuer: dev}}\n    ttl_seconds: 900")
    (tmp_path / "dup.yaml").write_text(text)
    assert main(["policy", "check", "--strict", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    line = text.splitlines().index("    match: {oidc: {issuer: dev}}") + 1
    assert f"{tmp_path / 'dup.yaml'}:{line}: duplicate key `match` (first at line 8)" in err


def _cli(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: exit statuses as a shell script sees them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


PROD = ["--iam-arn", "arn:aws:sts::111111111111:assumed-role/airflow-prod-worker/i-0abc",
        "--dag", "etl", "--task", "load"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_explain_exits_0_on_grant_and_1_on_deny(json_flag: list[str]) -> None:
    examples = ["policy", "explain", "--dir", "policies/examples", *PROD, *json_flag]
    granted = _cli(*examples, "--client-host", "10.20.3.4")
    assert (granted.returncode, granted.stderr) == (0, "")
    assert "GRANT" in granted.stdout or '"decision": "grant"' in granted.stdout
    denied = _cli(*examples, "--client-host", "192.0.2.1")
    assert (denied.returncode, denied.stderr) == (1, "")
    assert "source_not_allowed" in denied.stdout


def test_explain_exits_1_when_the_matching_policies_allow_nothing(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\npolicies:\n  - id: deny-only\n    match: {aws_iam: {account: "
        "'111111111111'}}\n    scopes: [{dag: '*'}]\n"
        "    permissions: {publish: {deny: ['>']}}\n")
    denied = _cli("policy", "explain", "--dir", str(tmp_path), *PROD)
    assert denied.returncode == 1
    assert "+ deny-only (p.yaml:3): matched" in denied.stdout
    assert "decision: DENY (no_allow: matching policies `deny-only` allow no publish or " \
           "subscribe subject)" in denied.stdout


def _write_bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "dup").mkdir()
    (tmp_path / "dup" / "p.yaml").write_text(
        (ROOT / "policies" / "airflow-dev.yaml").read_text() + "    ttl_seconds: 60\n")
    (tmp_path / "latin1.json").write_bytes(b'{"iss": "caf\xe9"}')
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    examples = ["--dir", str(ROOT / "policies" / "examples")]
    return {
        "missing-dir": ["--dir", str(tmp_path / "nope"), *PROD],
        "invalid-policies": ["--dir", str(tmp_path / "dup"), *PROD],
        "missing-claims": [*examples, "--claims", str(tmp_path / "nope.json"),
                           "--dag", "etl", "--task", "load"],
        "claims-not-utf8": [*examples, "--claims", str(tmp_path / "latin1.json"),
                            "--dag", "etl", "--task", "load"],
        "claims-not-object": [*examples, "--claims", str(tmp_path / "list.json"),
                              "--dag", "etl", "--task", "load"],
        "config-not-utf8": ["--config", str(tmp_path / "bad.toml"), *PROD],
        "not-an-assumed-role": [*examples, "--iam-arn", "arn:aws:iam::111111111111:user/a",
                                "--dag", "etl", "--task", "load"],
        "bad-scope": [*examples, *PROD[:2], "--dag", "etl", "--task", "a b"],
        "usage": [*examples, *PROD[:2], "--dag", "etl"],
    }


def test_explain_exits_2_on_an_error_never_1(tmp_path: Path) -> None:
    for case, argv in _write_bad_inputs(tmp_path).items():
        result = _cli("policy", "explain", *argv)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        assert result.stdout == "", case
        assert "Traceback" not in result.stderr, case
        assert result.stderr.strip(), case


def test_explain_help_documents_the_exit_status() -> None:
    result = _cli("policy", "explain", "--help")
    assert result.returncode == 0
    assert "exit status: 0 grant, 1 deny, 2 error" in " ".join(result.stdout.split())
