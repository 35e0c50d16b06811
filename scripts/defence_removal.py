"""Remove one defence at a time and check that its catalogue test fails (docs/security.md).

    .venv/bin/python scripts/defence_removal.py [WORDS]   # WORDS: only defences naming them

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
_API_INPUT = "tests/integration/test_audit_api_input.py"
_JS_UNIT = "tests/unit/test_jetstream.py"
_JS_LIVE = "tests/integration/test_jetstream_live.py"


@dataclass(frozen=True)
class Experiment:
    defence: str
    path: str
    old: str
    new: str
    tests: list[str]


_INLINE = "tests/integration/test_audit_inline_commit.py"

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
    Experiment("duplicate YAML keys refused in policy files (a second `match:` widens)",
               "gateway/policy/load.py",
               "    duplicates = _duplicate_keys(node, name)\n",
               "    duplicates: list[str] = []\n",
               ["tests/unit/test_policy.py", "tests/unit/test_policy_reload.py",
                "tests/unit/test_policy_cli.py", "-k", "duplicate"]),
    Experiment("a matching policy that only denies admits no one (`no_allow`)",
               "gateway/policy/decide.py",
               "    if not any(_allows_something(p) for p in matched):",
               "    if False:",
               ["tests/unit/test_policy_engine.py", "-k", "only_denies"]),
    Experiment("policy check warns on allows too broad for a task (`>`, `$SYS.>`, `$JS.API.>`)",
               "gateway/policy/lint.py",
               "        warnings += _broad_allows(policy, subjects, source)\n",
               "        warnings += []\n",
               ["tests/unit/test_policy_engine.py", "tests/unit/test_policy_cli.py",
                "-k", "too_broad or admin_grant"]),
    Experiment("policy explain exits 1 on a deny (scripts cannot read a deny as a grant)",
               "gateway/cli_policy.py",
               "    return 0 if evaluation.decision is not None else 1",
               "    return 0",
               ["tests/unit/test_policy_cli.py", "-k", "exits_0_on_grant or allow_nothing"]),
    Experiment("policy explain exits 2, never 1, on input it cannot read",
               "gateway/cli_policy.py",
               "    except (OSError, UnicodeDecodeError) as exc:\n        # Exit 1",
               "    except () as exc:\n        # Exit 1",
               ["tests/unit/test_policy_cli.py", "-k", "exits_2"]),
    Experiment("IAM proof length cap, before parsing (issue 18)",
               "gateway/identity/aws_proof.py",
               "    if len(proof) > _MAX_PROOF_CHARS:", "    if False:",
               ["tests/unit/test_aws_proof.py", "-k", "refused_before_parsing and too-long"]),
    Experiment("IAM proof key-count cap, before parsing (issue 18)",
               "gateway/identity/aws_proof.py",
               '    if proof.count(":") > _MAX_COLONS:', "    if False:",
               ["tests/unit/test_aws_proof.py", "-k", "refused_before_parsing and keys"]),
    Experiment("IAM proof nesting cap, before parsing (issue 18)",
               "gateway/identity/aws_proof.py",
               '    if proof.count("{") + proof.count("[") > _MAX_CONTAINERS:', "    if False:",
               ["tests/unit/test_aws_proof.py", "-k",
                "refused_before_parsing and (deep-arrays or three-objects)"]),
    Experiment("IAM proof key cap per object (issue 18)",
               "gateway/identity/aws_proof.py",
               "    if len(pairs) > _MAX_KEYS:", "    if False:",
               ["tests/unit/test_aws_proof.py", "-k", "more_keys_than_a_proof_can_have"]),
    Experiment("IAM proof dated ahead: clock skew only (issue 18)",
               "gateway/identity/aws_proof.py",
               "    if -age > max_skew:", "    if False:",
               ["tests/unit/test_aws_proof.py", "tests/integration/test_aws_iam.py", "-k",
                "in_the_future or signing_window or future-date or clock_skew"]),
    Experiment("IAM replay slot released when a proof is not accepted (issue 18)",
               "gateway/identity/aws_sts.py",
               "            self._replay.release(slot)", "            pass",
               ["tests/integration/test_aws_iam.py", "-k",
                "fill_the_replay_cache or holds_no_slot"]),
    Experiment("CSV export: cells that start like a formula get a leading quote (OWASP)",
               "gateway/api/csv_export.py",
               "if isinstance(value, str) and value.startswith(FORMULA_STARTS):",
               "if False:",
               [_API_INPUT, "tests/integration/test_audit_api.py", "-k", "formula"]),
    Experiment("API: a cursor past a 64-bit position is refused (400, not a driver overflow)",
               "gateway/audit/store.py",
               "    if seq > MAX_CURSOR_SEQ:", "    if False:",
               [_API_INPUT, "-k", "cursor"]),
    Experiment("store: a cursor past the seq column's range matches every row (PostgreSQL)",
               "gateway/audit/store.py",
               "if q.before_seq is not None and q.before_seq <= self._seq_max:",
               "if q.before_seq is not None:",
               [_API_INPUT, "-k", "largest_cursor"]),
    Experiment("API: a NUL in a filter or decision id is refused before the database",
               "gateway/api/params.py",
               'if value is not None and "\\0" in value:', "if False:",
               [_API_INPUT, "-k", "nul"]),
    Experiment("API: filters are bounded in length",
               "gateway/api/params.py",
               "Query(max_length=MAX_FILTER)", "Query()",
               [_API_INPUT, "-k", "filter-too-long"]),
    Experiment("API: a time without a zone is UTC (no local-time overflow at year 1)",
               "gateway/api/params.py",
               "if value is not None and value.tzinfo is None:", "if False:",
               [_API_INPUT, "-k", "edges or without_a_zone"]),
    Experiment("API: a validation error echoes a bounded, escaped piece of the input",
               "gateway/api/app.py",
               "app.add_exception_handler(RequestValidationError, validation_problem)",
               "(lambda *_: None)(RequestValidationError, validation_problem)",
               [_API_INPUT, "-k", "bounded or hostile_value"]),
    Experiment("API: purge refuses a number of days past a century",
               "gateway/api/routes/audit.py",
               "Query(ge=1, le=MAX_PURGE_DAYS)", "Query(ge=1)",
               [_API_INPUT, "-k", "purge"]),
    Experiment("API: an export runs its first query before the 200 is sent",
               "gateway/api/routes/grants.py",
               "records = _started(store.iterate(", "records = (store.iterate(",
               [_API_INPUT, "-k", "export_whose_query_fails"]),
    Experiment("untrusted client text is bounded and escaped at the edge (issue 18)",
               "gateway/untrusted.py",
               "    text = value if isinstance(value, str) else repr(value)\n",
               "    text = value if isinstance(value, str) else repr(value)\n    return text\n",
               ["tests/integration/test_hostile_input.py", "tests/unit/test_untrusted.py"]),
    Experiment("every error description is made safe (it quotes client text)",
               "gateway/errors.py",
               "        description = safe_text(description, MAX_DESCRIPTION, backslash=False)\n",
               "",
               ["tests/unit/test_untrusted.py", "tests/integration/test_handler_order.py",
                "-k", "description or lone_surrogate"]),
    Experiment("a text log line stays one line",
               "gateway/logs.py",
               "        record.message = safe_line(record.message)\n", "",
               ["tests/unit/test_untrusted.py", "-k", "log_line"]),
    Experiment("a batch the store refuses is retried record by record",
               "gateway/audit/writer.py",
               "        elif len(live) > 1 and not _store_down(error):", "        elif False:",
               ["tests/integration/test_audit_writer_faults.py", "-k", "one_bad_record"]),
    Experiment("a late deny is written, marked late, not dropped",
               "gateway/audit/writer.py",
               '            elif record.decision == "grant":', "            elif True:",
               ["tests/integration/test_audit_writer_faults.py", "-k", "late"]),
    Experiment("a grant whose answer could not be sent gets a reply_failed record",
               "gateway/callout/handler.py",
               "            if answer.granted:", "            if False:",
               ["tests/integration/test_handler_order.py", "-k", "reply_failed"]),
    Experiment("the deny path cannot raise: any sink failure still answers",
               "gateway/callout/handler.py",
               "        except Exception as exc:\n            # Still a deny",
               "        except GatewayError as exc:\n            # Still a deny",
               ["tests/integration/test_handler_order.py", "-k", "whatever_the_audit_sink"]),
    Experiment("shutdown answers the decisions in flight before closing",
               "gateway/callout/service.py",
               "            await asyncio.wait_for(self._idle.wait(), timeout)",
               "            await asyncio.wait_for(self._idle.wait(), 0)",
               ["tests/integration/test_processes.py", "-k", "sigterm"]),
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
    Experiment("JetStream consumer names join encoded ids with `~`, never `_` (issue 21)",
               "gateway/policy/jetstream.py",
               'NAME_SEPARATOR = "~"', 'NAME_SEPARATOR = "_"',
               [_JS_UNIT, "-k", "injective or never_collide"]),
    Experiment("a task's reply inbox is its own prefix, never `_INBOX.>` (issue 21)",
               "gateway/policy/jetstream.py",
               '    return inbox_prefix(scope) + ".>"', '    return INBOX_ROOT + ".>"',
               [_JS_UNIT, _JS_LIVE, "-k", "every_inbox or exactly_its or inbox_replies"]),
    Experiment("JetStream acks only on the task's own consumer (issue 21)",
               "gateway/policy/jetstream.py",
               'f"{ACK_PREFIX}.{stream}.{consumer}.>"', 'f"{ACK_PREFIX}.{stream}.>"',
               [_JS_UNIT, _JS_LIVE, "-k", "share_consumer or another_tasks_consumer"]),
    Experiment("JetStream consumer reads only through the task's own consumer (issue 21)",
               "gateway/policy/jetstream.py",
               'f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"',
               'f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.*"',
               [_JS_UNIT, _JS_LIVE, "-k", "share_consumer or another_tasks_consumer"]),
    Experiment("JetStream consumer creation pins the filter in the subject (issue 21)",
               "gateway/policy/jetstream.py",
               '        subjects.append(f"{API_PREFIX}.CONSUMER.CREATE.{stream}.{consumer}."\n'
               '                        f"{render_template(rule.filter, scope)}")',
               '        subjects.append(f"{API_PREFIX}.CONSUMER.CREATE.{stream}.{consumer}")',
               [_JS_UNIT, _JS_LIVE, "-k", "exactly_its or own_durable_consumer"]),
    Experiment("a consumer filter of `>` is refused (it cannot be pinned) (issue 21)",
               "gateway/policy/model.py",
               '    if value == ">":', "    if False:",
               [_JS_UNIT, "-k", "filter-everything"]),
    Experiment("policy check warns about event loops inside a DAG (issue 21)",
               "gateway/policy/lint.py",
               "    warnings += _event_loops(policy_set)\n", "    warnings += []\n",
               [_JS_UNIT, "-k", "own_watcher or stream_publishing"]),
    Experiment("policy check warns that a task creating its consumer picks its config "
               "(issue 21)",
               "gateway/policy/lint.py",
               "        warnings += _consumer_create(policy, subjects, source)\n", "",
               [_JS_UNIT, "-k", "chooses_its_config"]),
    Experiment("an id rendered first into `_INBOX` is a deny (issue 21)",
               "gateway/policy/decide.py",
               "    if rendered.split(\".\", 1)[0] == jetstream.INBOX_ROOT and not",
               "    if False and not",
               [_JS_UNIT, "-k", "inbox_namespace_is_a_deny"]),
    Experiment("a commit on the event loop never waits for another process's lock "
               "(issue 22)",
               "gateway/audit/writer.py",
               'store.appender(lock_wait_ms=0) if store.backend == "sqlite" else None',
               'store.appender() if store.backend == "sqlite" else None',
               [_INLINE, "-k", "locked_store"]),
    Experiment("a decision is alone only when the service holds no other request "
               "(issue 22)",
               "gateway/callout/service.py",
               "        handler.nothing_queued = self._nothing_queued\n", "",
               [_INLINE, "-k", "arrive_together"]),
    Experiment("a request is decided only with room for its decision and its commit "
               "(issue 22)",
               "gateway/audit/writer.py",
               "DECISION_MARGIN_SECONDS = 0.3", "DECISION_MARGIN_SECONDS = 0.0",
               ["tests/integration/test_shedding.py", "-k", "room_for_its_decision"]),
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


def main(only: str = "") -> int:
    """Run every experiment, or those whose defence mentions ``only``."""
    unguarded = []
    for experiment in [e for e in EXPERIMENTS if only in e.defence]:
        caught = run(experiment)
        print(f"{'caught   ' if caught else 'UNGUARDED'}  {experiment.defence}", flush=True)
        if not caught:
            unguarded.append(experiment.defence)
    return 1 if unguarded else 0


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:])))
