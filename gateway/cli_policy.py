"""`nats-gateway policy ...`: check, explain and schema, for operators and policy-repo CI.

    nats-gateway policy check DIR [--config FILE] [--strict]
    nats-gateway policy explain [--dir DIR | --config FILE] (--claims FILE | --iam-arn ARN)
                                [--issuer-name NAME] --dag D --task T [--run R] [--client-host IP]
                                [--connection-type T] [--json]
    nats-gateway policy schema

Exit codes, so a script or CI can act on them:
    check    0 valid; 1 invalid policies, or any warning under --strict; 2 a usage error
    explain  0 the request would be granted; 1 it would be denied; 2 an error (bad input,
             an unreadable or invalid policy directory, claims or config): no answer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.explain import ExplainRequest, explain, explanation_dict, format_explanation
from gateway.policy.lint import lint
from gateway.policy.load import PolicyLoadError, PolicySet, load_policy_dir
from gateway.policy.model import CONNECTION_TYPES, policy_json_schema

__all__ = ["add_policy_commands", "run_policy_command"]


def add_policy_commands(commands: Any) -> None:
    policy = commands.add_parser("policy", help="check, explain and describe policy files")
    sub = policy.add_subparsers(dest="policy_command", required=True)

    check = sub.add_parser("check", help="validate a policy directory (for CI)",
                           epilog="exit status: 0 valid, 1 invalid (or any warning under "
                                  "--strict), 2 a usage error")
    check.add_argument("dir", type=Path, help="the policy directory (*.yaml files)")
    check.add_argument("--config", type=Path, help="also check issuer names against it")
    check.add_argument("--strict", action="store_true", help="warnings fail the check")

    explain_cmd = sub.add_parser(
        "explain", help="what would this identity get, and why",
        description="Evaluate a described identity and scope as the gateway would.",
        epilog="exit status: 0 grant, 1 deny, 2 error (bad input, unreadable or invalid "
               "policies, claims or config)")
    where = explain_cmd.add_mutually_exclusive_group()
    where.add_argument("--dir", type=Path, help="policy directory (default: policies)")
    where.add_argument("--config", type=Path, help="gateway config: its policy dir and issuers")
    who = explain_cmd.add_mutually_exclusive_group(required=True)
    who.add_argument("--claims", type=Path, help="JSON file of OIDC token claims, - for stdin")
    who.add_argument("--iam-arn", help="STS caller ARN (assumed-role)")
    explain_cmd.add_argument("--issuer-name", default="",
                             help="configured name of the claims' issuer (else from --config)")
    explain_cmd.add_argument("--dag", required=True, help="the DAG id the worker asks for")
    explain_cmd.add_argument("--task", required=True, help="the task id the worker asks for")
    explain_cmd.add_argument("--run", default=None, help="the run id, if the policy uses it")
    explain_cmd.add_argument("--client-host", default="",
                             help="the client's IP address, for policies with source networks")
    explain_cmd.add_argument("--connection-type", default="STANDARD", choices=CONNECTION_TYPES,
                             help="the connection type nats-server reports (default: STANDARD)")
    explain_cmd.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("schema", help="print the policy file JSON Schema")


def _issuers(config: Path | None) -> tuple[OidcIssuerConfig, ...] | None:
    return None if config is None else load_settings(config).oidc.issuers


def _check(args: argparse.Namespace) -> int:
    try:
        policy_set = load_policy_dir(args.dir)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            print(_located(args.dir, problem), file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {args.dir}", file=sys.stderr)
        return 1
    issuers = _issuers(args.config)
    names = None if issuers is None else {n for i in issuers for n in (i.name, i.issuer)}
    warnings = lint(policy_set, names)
    for warning in warnings:
        print(_located(args.dir, str(warning)), file=sys.stderr)
    if warnings and args.strict:
        print(f"{len(warnings)} warning(s) in {args.dir}, failing under --strict",
              file=sys.stderr)
        return 1
    print(f"ok: {len(policy_set.policies)} policies in {len(policy_set.files)} file(s), "
          f"{policy_set.content_hash}")
    return 0


def _located(directory: Path, problem: str) -> str:
    """`file:line: ...` with the directory prepended, so editors and CI can jump to it."""
    name, _, rest = problem.partition(":")
    if not rest or not (directory / name).is_file():
        return problem
    return f"{directory / name}:{rest}"


def _read_claims(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        claims = json.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read claims `{path}`: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"claims `{path}` are not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"claims `{path}` are not JSON: {exc}") from exc
    if not isinstance(claims, dict):
        raise ConfigError(f"claims `{path}` must be a JSON object")
    return claims


def _explain_request(args: argparse.Namespace) -> ExplainRequest:
    identity: dict[str, Any] = (
        {"oidc": {"claims": _read_claims(args.claims), "issuer_name": args.issuer_name}}
        if args.claims is not None
        else {"aws_iam": {"arn": args.iam_arn}})
    scope = {"dag_id": args.dag, "task_id": args.task, "run_id": args.run}
    try:
        return ExplainRequest.model_validate({
            "identity": identity, "scope": scope,
            "client": {"host": args.client_host, "connection_type": args.connection_type}})
    except ValidationError as exc:
        raise ConfigError(f"explain input: {exc.errors()[0]['msg']}") from exc


def _explain_inputs(args: argparse.Namespace
                    ) -> tuple[PolicySet, ExplainRequest, tuple[OidcIssuerConfig, ...]]:
    issuers: tuple[OidcIssuerConfig, ...] = ()
    directory = args.dir or Path("policies")
    try:
        if args.config is not None:
            settings = load_settings(args.config)
            issuers, directory = settings.oidc.issuers, settings.policy.dir
        return load_policy_dir(directory), _explain_request(args), issuers
    except (OSError, UnicodeDecodeError) as exc:
        # Exit 1 means "denied": an input that cannot be read must not look like one.
        raise ConfigError(f"cannot read explain input: {exc}") from exc


def _explain(args: argparse.Namespace) -> int:
    """0 grant, 1 deny; errors raise GatewayError, which `main` turns into 2."""
    policy_set, request, issuers = _explain_inputs(args)
    identity, evaluation, now = explain(policy_set, request, issuers)
    if args.json:
        print(json.dumps(explanation_dict(identity, evaluation, now), indent=2))
    else:
        print(format_explanation(identity, evaluation, now))
    return 0 if evaluation.decision is not None else 1


def run_policy_command(args: argparse.Namespace) -> int:
    if args.policy_command == "check":
        return _check(args)
    if args.policy_command == "explain":
        return _explain(args)
    print(json.dumps(policy_json_schema(), indent=2))
    return 0
