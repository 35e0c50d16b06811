"""Remove one defence at a time and check that its catalogue test fails (docs/security.md).

    .venv/bin/python scripts/defence_removal.py

Each experiment patches one line of the gateway, runs the tests that guard it, expects
them to FAIL, and restores the file (even on interrupt). A defence whose tests still
pass without it is reported as unguarded and the script exits 1. Not part of CI: it
runs the guarding tests once per experiment (a few minutes).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Experiment:
    defence: str
    path: str
    old: str
    new: str
    tests: list[str]


EXPERIMENTS = [
    Experiment("OIDC algorithm pinning (alg none, HS256 keyed with the public key)",
               "gateway/identity/oidc.py",
               "if not isinstance(alg, str) or alg not in config.algorithms:",
               "if not isinstance(alg, str):",
               ["tests/integration/test_end_to_end.py", "-k", "alg-none or hs256"]),
    Experiment("refusal of token-chosen keys (jku, x5u, jwk, x5c)",
               "gateway/identity/oidc.py",
               "        if name in header:\n",
               "        if False:\n",
               ["tests/integration/test_oidc.py", "-k", "token_chosen_key_material"]),
    Experiment("the IAM gateway id must be signed",
               "gateway/identity/aws_proof.py",
               '_REQUIRED_SIGNED = frozenset({"host", "x-amz-date", GATEWAY_ID_HEADER})',
               '_REQUIRED_SIGNED = frozenset({"host", "x-amz-date"})',
               ["tests/integration/test_aws_iam.py", "-k", "unsigned-gateway-id"]),
    Experiment("single-use IAM proofs (replay cache)",
               "gateway/identity/aws_sts.py",
               "self._replay.use(", "(lambda *args, **kwargs: None)(",
               ["tests/integration/test_aws_iam.py", "-k", "single_use"]),
    Experiment("injective id encoding (no subject-space escape)",
               "gateway/policy/encode.py",
               '    """Encode one id as exactly one subject token; an empty id is refused."""\n',
               '    """Encode one id as exactly one subject token; an empty id is refused."""\n'
               "    return value\n",
               ["tests/unit/test_policy_properties.py", "tests/integration/test_policy_live.py",
                "-k", "task_group or distinct_tasks or round_trips"]),
    Experiment("API roles (403 for the wrong role)",
               "gateway/api/deps.py",
               "        if not caller.has(role):", "        if False:",
               ["tests/integration/test_audit_api.py", "-k", "roles"]),
    Experiment("fail closed when the audit record cannot be committed",
               "gateway/callout/handler.py",
               'await self._audit(self._record(ctx, "grant", "granted", "granted"), '
               "self._deadline(ctx))",
               'await asyncio.gather(self._audit(self._record(ctx, "grant", "granted", '
               '"granted"), self._deadline(ctx)), return_exceptions=True)',
               ["tests/integration/test_audit_live.py", "-k", "database_is_down"]),
    Experiment("source network restriction",
               "gateway/policy/decide.py",
               "    if not restricting:\n        return ()",
               "    if True:\n        return ()",
               ["tests/unit/test_policy_engine.py", "-k", "restriction_anywhere"]),
    Experiment("the xkey header must match the signed server xkey",
               "gateway/callout/handler.py",
               "if self._xkey is not None and request.server.xkey != ctx.server_xkey:",
               "if False:",
               ["tests/integration/test_fuzz.py", "-k", "xkey_header"]),
    # Issue 19: tamper evidence against someone with write access to the audit database.
    Experiment("a chain must open with a signed genesis checkpoint",
               "gateway/audit/verify.py", "    elif not trusted:", "    elif False:",
               ["tests/integration/test_audit_tamper.py", "-k",
                "repro_1 or repro_3 or repro_4"]),
    Experiment("nothing may follow a final checkpoint",
               "gateway/audit/anchoring.py",
               "        coverage.after_final.append((last.chain_seq, None))\n", "",
               ["tests/integration/test_audit_tamper.py", "-k", "repro_2"]),
    Experiment("records older than the interval must be covered by a checkpoint",
               "gateway/audit/anchoring.py",
               "    coverage.uncovered_before = now - interval - grace",
               "    coverage.uncovered_before = None",
               ["tests/integration/test_audit_tamper.py", "-k", "no_checkpoint_covers"]),
    Experiment("heartbeat gaps are reported",
               "gateway/audit/anchoring.py",
               "        if previous is not None and gap > 2 * info.interval:",
               "        if False:",
               ["tests/integration/test_audit_tamper.py", "-k", "gap_in_the_heartbeats"]),
    Experiment("two processes on one chain are reported",
               "gateway/audit/anchoring.py",
               "        if nonce is not None and info.nonce != nonce:", "        if False:",
               ["tests/integration/test_audit_tamper.py", "-k", "interleaving"]),
    Experiment("a second live writer with the same instance name is refused",
               "gateway/audit/writer.py", "        if holder is not None:",
               "        if False:",
               ["tests/integration/test_audit_tamper.py", "-k", "same_name_is_refused"]),
    Experiment("checkpoints in the anchor but missing from the database are reported",
               "gateway/audit/verify.py", "        for checkpoint in extra:",
               "        for checkpoint in ():",
               ["tests/integration/test_audit_tamper.py", "-k",
                "missing_from_the_database or delete_last_checkpoints_and_tail"]),
    Experiment("a trusted key verifies only inside its validity window",
               "gateway/audit/verify.py", "k.covers(checkpoint.created_at)", "True",
               ["tests/integration/test_audit_tamper.py", "-k", "rotated"]),
    Experiment("the anchor stream must refuse delete and purge",
               "gateway/audit/anchors.py",
               "        if not (config.deny_delete and config.deny_purge):",
               "        if False:",
               ["tests/integration/test_audit_anchor_stream.py", "-k", "allows_delete"]),
]


def run(experiment: Experiment) -> bool:
    """True when the guarding tests fail without the defence."""
    path = ROOT / experiment.path
    original = path.read_text()
    if experiment.old not in original:
        raise SystemExit(f"{experiment.path}: patch target not found for {experiment.defence}")
    try:
        path.write_text(original.replace(experiment.old, experiment.new, 1))
        result = subprocess.run(  # noqa: S603 - our own interpreter and test files
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             *experiment.tests], cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
        path.write_text(original)
    return result.returncode != 0


def main() -> int:
    unguarded = []
    for experiment in EXPERIMENTS:
        caught = run(experiment)
        print(f"{'caught   ' if caught else 'UNGUARDED'}  {experiment.defence}", flush=True)
        if not caught:
            unguarded.append(experiment.defence)
    return 1 if unguarded else 0


if __name__ == "__main__":
    sys.exit(main())
