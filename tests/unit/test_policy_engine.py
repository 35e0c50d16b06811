"""Policy engine v1 features: IAM matching, claim binding, responses, limits, connection
types, source networks, explanations and lint. Real YAML through the real loader."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.envelope import Scope
from gateway.errors import IdentityError, PolicyDenied
from gateway.identity.aws_arn import iam_identity, parse_caller_arn
from gateway.identity.model import Identity
from gateway.natsjwt.claims import UserGrant, user_claims
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair
from gateway.policy.decide import ClientConnection, decide, evaluate
from gateway.policy.explain import ExplainRequest, explain, format_explanation
from gateway.policy.lint import lint
from gateway.policy.load import PolicyLoadError, PolicySet, load_policy_dir

STANDARD = ClientConnection("10.20.1.2", "STANDARD")
PROD_ROLE = "arn:aws:sts::111111111111:assumed-role/airflow-prod-worker/i-0abc"


def _set(tmp_path: Path, body: str) -> PolicySet:
    (tmp_path / "p.yaml").write_text("version: 1\npolicies:\n" + textwrap.indent(
        textwrap.dedent(body), "  "))
    return load_policy_dir(tmp_path)


def _oidc(subject: str = "task:1", expires: int = 10_000, **claims: object) -> Identity:
    return Identity(method="oidc", issuer="https://idp.example", issuer_name="corp",
                    subject=subject, expires=expires, fingerprint="",
                    claims={"aud": "nats-gateway", "sub": subject, **claims})


def _iam(arn: str = PROD_ROLE, expires: int = 10_000) -> Identity:
    return iam_identity(parse_caller_arn(arn), user_id="AROAEXAMPLE:i-0abc", expires=expires,
                        proof_fingerprint="")


IAM = """\
- id: prod
  match:
    aws_iam:
      account: "111111111111"
      role: "arn:aws:iam::111111111111:role/airflow-prod-*"
      session: "i-*"
  scopes: [{dag: "*"}]
  permissions:
    publish: {allow: ["prod.{dag_id}.{task_id}.>"]}
"""


def test_iam_role_session_matches_by_account_role_glob_and_session(tmp_path: Path) -> None:
    policies = _set(tmp_path, IAM)
    decision = decide(policies, _iam(), Scope("etl", "load"), STANDARD, now=0)
    assert decision.permissions.pub_allow == ("prod.etl.load.>",)
    for arn, reason in [
        ("arn:aws:sts::222222222222:assumed-role/airflow-prod-worker/i-0abc", "account"),
        ("arn:aws:sts::111111111111:assumed-role/airflow-staging/i-0abc", "role"),
        ("arn:aws:sts::111111111111:assumed-role/airflow-prod-worker/laptop", "session"),
    ]:
        result = evaluate(policies, _iam(arn), Scope("etl", "load"), STANDARD, now=0)
        assert result.decision is None
        assert any(r.startswith(reason) for r in result.results[0].reasons), result.results


def test_methods_never_cross(tmp_path: Path) -> None:
    policies = _set(tmp_path, IAM)
    with pytest.raises(PolicyDenied, match="no policy"):
        decide(policies, _oidc(), Scope("etl", "load"), STANDARD, now=0)


@pytest.mark.parametrize("arn,code", [
    ("arn:aws:iam::111111111111:user/alice", "not_an_assumed_role"),
    ("arn:aws:iam::111111111111:root", "not_an_assumed_role"),
    ("arn:aws:sts::111111111111:federated-user/bob", "not_an_assumed_role"),
    ("arn:aws:sts::11111111111:assumed-role/r/s", "bad_caller_arn"),
    ("arn:aws:sts::111111111111:assumed-role/r", "bad_caller_arn"),
    ("arn:aws:sts::111111111111:assumed-role/r/s/extra", "bad_caller_arn"),
    ("not an arn", "bad_caller_arn"),
])
def test_only_assumed_role_arns_are_identities(arn: str, code: str) -> None:
    with pytest.raises(IdentityError) as refused:
        parse_caller_arn(arn)
    assert refused.value.code == code


def test_assumed_role_arn_normalises_to_role_arn_and_session() -> None:
    caller = parse_caller_arn("arn:aws-us-gov:sts::123456789012:assumed-role/etl/sess@x")
    assert caller.role_arn == "arn:aws-us-gov:iam::123456789012:role/etl"
    assert (caller.account, caller.session_name) == ("123456789012", "sess@x")
    assert _iam().principal == "arn:aws:iam::111111111111:role/airflow-prod-worker#i-0abc"


BOUND = """\
- id: per-task
  match: {oidc: {issuer: corp, subject: "task:*"}}
  scopes:
    - dag: "*"
      bind: {dag_id: /dag_id, task_id: /task_id}
  permissions:
    publish: {allow: ["airflow.{dag_id}.{task_id}.>"]}
"""


def test_claim_binding_ties_the_scope_to_the_token(tmp_path: Path) -> None:
    policies = _set(tmp_path, BOUND)
    token = _oidc(dag_id="etl", task_id="load")
    assert decide(policies, token, Scope("etl", "load"), STANDARD, now=0)
    for scope in (Scope("etl", "extract"), Scope("billing", "load"), Scope("etl.load", "x")):
        result = evaluate(policies, token, scope, STANDARD, now=0)
        assert result.denial is not None and result.denial.code == "no_matching_policy"
        assert "is not the value of claim" in " ".join(result.results[0].reasons)


@pytest.mark.parametrize("claims,reason", [
    ({"dag_id": "etl"}, "which is missing"),
    ({"dag_id": "etl", "task_id": ["load"]}, "is not the value of claim"),
    ({"dag_id": "etl", "task_id": 7}, "is not the value of claim"),
])
def test_claim_binding_needs_an_equal_string_claim(
        tmp_path: Path, claims: dict[str, object], reason: str) -> None:
    result = evaluate(_set(tmp_path, BOUND), _oidc(**claims), Scope("etl", "load"), STANDARD,
                      now=0)
    assert result.decision is None
    assert reason in " ".join(result.results[0].reasons)


RESTRICTED = """\
- id: wide
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    publish: {allow: ["a.{dag_id}.{task_id}.>"]}
    responses: {max: 5, ttl_seconds: 60}
    limits: {subscriptions: 100, payload_bytes: 65536}
    connection_types: [STANDARD, WEBSOCKET]
  ttl_seconds: 900
- id: narrow
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    subscribe: {allow: ["b.{dag_id}.{task_id}"]}
    responses: {max: 1}
    limits: {subscriptions: 10, data_bytes: 1000000}
    connection_types: [STANDARD]
    source_networks: ["10.20.0.0/16", "fd00::/8"]
  ttl_seconds: 300
"""


def test_restrictions_combine_to_the_strictest(tmp_path: Path) -> None:
    decision = decide(_set(tmp_path, RESTRICTED), _oidc(), Scope("d", "t"), STANDARD, now=0)
    perms = decision.permissions
    assert (perms.pub_allow, perms.sub_allow) == (("a.d.t.>",), ("b.d.t",))
    assert (perms.resp_max, perms.resp_ttl_seconds) == (1, 60)
    assert (perms.max_subscriptions, perms.max_payload_bytes, perms.max_data_bytes) == (
        10, 65536, 1000000)
    assert perms.connection_types == ("STANDARD",)
    assert perms.source_networks == ("10.20.1.2/32",)
    assert decision.expires == 300 and "narrow" in decision.expiry_bound


@pytest.mark.parametrize("client,code", [
    (ClientConnection("10.20.1.2", "WEBSOCKET"), "connection_type_not_allowed"),
    (ClientConnection("10.20.1.2", "UNKNOWN"), "connection_type_not_allowed"),
    (ClientConnection("192.168.1.1", "STANDARD"), "source_not_allowed"),
    (ClientConnection("", "STANDARD"), "source_not_allowed"),
    (ClientConnection("not-an-ip", "STANDARD"), "source_not_allowed"),
])
def test_a_restriction_anywhere_denies(tmp_path: Path, client: ClientConnection,
                                       code: str) -> None:
    with pytest.raises(PolicyDenied) as denied:
        decide(_set(tmp_path, RESTRICTED), _oidc(), Scope("d", "t"), client, now=0)
    assert denied.value.code == code


def test_ipv6_clients_and_networks(tmp_path: Path) -> None:
    client = ClientConnection("fd12::1", "STANDARD")
    decision = decide(_set(tmp_path, RESTRICTED), _oidc(), Scope("d", "t"), client, now=0)
    assert decision.permissions.source_networks == ("fd12::1/128",)


def test_client_info_maps_to_connection_types() -> None:
    assert ClientConnection.from_client_info("h", "Client", "nats").connection_type == "STANDARD"
    assert ClientConnection.from_client_info("h", "Client", "websocket").connection_type == (
        "WEBSOCKET")
    assert ClientConnection.from_client_info("h", "Client", "mqtt").connection_type == "MQTT"
    assert ClientConnection.from_client_info("h", "Leafnode", "").connection_type == "LEAFNODE"
    assert ClientConnection.from_client_info("h", "Router", "").connection_type == "UNKNOWN"


def test_user_jwt_carries_limits_types_and_source() -> None:
    user = SigningKeyPair.generate(Prefix.USER).public_key
    perms = decide(_set_text(RESTRICTED), _oidc(), Scope("d", "t"), STANDARD, now=0).permissions
    nats = user_claims(UserGrant(user, "APP", "d/t", perms, expires=10))["nats"]
    assert (nats["subs"], nats["payload"], nats["data"]) == (10, 65536, 1000000)
    assert nats["allowed_connection_types"] == ["STANDARD"]
    assert nats["src"] == ["10.20.1.2/32"]
    assert nats["resp"] == {"max": 1, "ttl": 60_000_000_000}


def _set_text(body: str) -> PolicySet:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return _set(Path(tmp), body)


@pytest.mark.parametrize("fragment,field,message", [
    ("match: {oidc: {issuer: corp}, aws_iam: {account: '111111111111'}}", "match",
     "exactly one"),
    ("match: {}", "match", "exactly one"),
    ("match: {aws_iam: {account: '1111'}}", "match.aws_iam.account", "12-digit"),
    ("match: {aws_iam: {account: '111111111111', role: 'airflow-*'}}",
     "match.aws_iam.role", "role ARN glob"),
    ("match: {oidc: {issuer: corp, claims: {team: data}}}", "match.oidc.claims",
     "JSON pointer"),
])
def test_matcher_errors_name_the_field(tmp_path: Path, fragment: str, field: str,
                                       message: str) -> None:
    body = f"""\
- id: x
  {fragment}
  scopes: [{{dag: "*"}}]
  permissions: {{}}
"""
    with pytest.raises(PolicyLoadError) as failed:
        _set(tmp_path, body)
    problem = failed.value.problems[0]
    assert problem.startswith("p.yaml:4:") or problem.startswith("p.yaml:5:"), problem
    assert f"`policies.0.{field}" in problem and message in problem


@pytest.mark.parametrize("permissions,field,message", [
    ("{source_networks: ['10.0.0.1/8']}", "source_networks.0", "CIDR"),
    ("{source_networks: []}", "source_networks", "at least 1"),
    ("{connection_types: [TELNET]}", "connection_types.0", "STANDARD"),
    ("{responses: {max: 0}}", "responses.max", "greater than or equal to 1"),
    ("{limits: {subscriptions: -1}}", "limits.subscriptions", "greater than or equal to 0"),
    ("{limits: {subs: 3}}", "limits.subs", "Extra inputs"),
])
def test_permission_errors_name_file_line_and_field(tmp_path: Path, permissions: str,
                                                    field: str, message: str) -> None:
    body = f"""\
- id: x
  match: {{oidc: {{issuer: corp}}}}
  scopes: [{{dag: "*", bind: {{dag_id: /dag_id}}}}]
  permissions: {permissions}
"""
    with pytest.raises(PolicyLoadError) as failed:
        _set(tmp_path, body)
    problem = failed.value.problems[0]
    assert problem.startswith("p.yaml:6:"), problem
    assert f"`policies.0.permissions.{field}`" in problem and message in problem


def test_binding_only_to_scope_fields(tmp_path: Path) -> None:
    body = """\
- id: x
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*", bind: {subject: /sub}}]
  permissions: {}
"""
    with pytest.raises(PolicyLoadError, match=r"bind\.subject"):
        _set(tmp_path, body)


def test_explanation_names_every_policy_and_why(tmp_path: Path) -> None:
    policies = _set(tmp_path, IAM + BOUND)
    request = ExplainRequest.model_validate({
        "identity": {"oidc": {"claims": {"iss": "https://idp.example", "sub": "task:9",
                                         "exp": 1300, "dag_id": "etl", "task_id": "load"},
                              "issuer_name": "corp"}},
        "scope": {"dag_id": "etl", "task_id": "load"}})
    identity, evaluation, now = explain(policies, request, now=1000)
    assert [(r.policy_id, r.outcome) for r in evaluation.results] == [
        ("prod", "identity"), ("per-task", "matched")]
    assert policies.sources == {"prod": "p.yaml:3", "per-task": "p.yaml:12"}
    text = format_explanation(identity, evaluation, now)
    assert "- prod (p.yaml:3): identity did not match" in text
    assert "matches aws_iam identities; this one is oidc" in text
    assert "decision: GRANT by per-task" in text
    assert "publish   allow: airflow.etl.load.>" in text
    assert "subscribe allow: (nothing)" in text
    assert "ttl: 300s (bound by identity expiry)" in text


def test_explain_refuses_an_invalid_scope(tmp_path: Path) -> None:
    from gateway.errors import CredentialError

    request = ExplainRequest.model_validate({
        "identity": {"aws_iam": {"arn": PROD_ROLE}},
        "scope": {"dag_id": "etl", "task_id": "a b"}})
    with pytest.raises(CredentialError, match="task_id"):
        explain(_set(tmp_path, IAM), request)


def test_lint_warns_about_shared_publish_rights_and_unknown_issuers(tmp_path: Path) -> None:
    body = """\
- id: shared
  match: {oidc: {issuer: elsewhere}}
  scopes: [{dag: "*"}]
  permissions:
    publish:
      allow:
        - "airflow.{dag_id}.{task_id}.>"
        - "events.{dag_id}.>"
"""
    warnings = lint(_set(tmp_path, body), issuer_names={"corp"})
    assert [(w.source, w.code) for w in warnings] == [
        ("p.yaml:10", "shared_publish"), ("p.yaml:3", "unknown_issuer")]
    assert str(warnings[0]).startswith(
        "p.yaml:10: warning: policy `shared`: publish allow `events.{dag_id}.>` does not name")
    assert str(warnings[0]).endswith(" [shared_publish]")
    assert "issuer `elsewhere` is not configured" in warnings[1].message
    assert lint(_set(tmp_path, BOUND), issuer_names={"corp"}) == []


@pytest.mark.parametrize("template,code", [
    (">", "allow_everything"), ("*.>", "allow_everything"), ("*", "allow_everything"),
    ("*.*.>", "allow_everything"),
    ("$SYS.>", "allow_system"), ("$SYS.*.>", "allow_system"),
    ("$JS.>", "allow_jetstream"), ("$JS.API.>", "allow_jetstream"),
    ("$JS.*.>", "allow_jetstream"), ("*.API.>", "allow_jetstream"),
    ("$JS.API.*.>", "allow_jetstream"), ("$KV.>", "allow_jetstream"),
    ("$KV.*.>", "allow_jetstream"), ("$O.>", "allow_jetstream"),
    ("_INBOX.>", "allow_inboxes"), ("_INBOX.*", "allow_inboxes"),
    ("_INBOX.*.*", "allow_inboxes"), ("{dag_id}.>", "allow_inboxes"),
    # Narrow enough: a literal or an id beneath the namespace.
    ("$SYS", None), ("_INBOX.{dag_id}.{task_id}.>", None), ("$JS.ACK.orders.load.>", None),
    ("$JS.API.CONSUMER.MSG.NEXT.orders.load", None), ("$KV.settings.{dag_id}", None),
    ("{dag_id}.{task_id}.>", None), ("airflow.{dag_id}.{task_id}.>", None),
], ids=lambda v: str(v))
@pytest.mark.parametrize("direction", ["publish", "subscribe"])
def test_lint_warns_about_allows_too_broad_for_a_task(tmp_path: Path, direction: str,
                                                      template: str, code: str | None) -> None:
    # One task only, so the shared-publish warning stays out of the way.
    body = f"""\
- id: broad
  match: {{oidc: {{issuer: corp}}}}
  scopes: [{{dag: etl, tasks: [load]}}]
  permissions:
    {direction}:
      allow:
        - "a.{{dag_id}}.{{task_id}}"
        - "{template}"
"""
    warnings = lint(_set(tmp_path, body), issuer_names={"corp"})
    assert [(w.source, w.code) for w in warnings] == ([] if code is None else [
        ("p.yaml:10", code)])
    if code is not None:
        assert f"{direction} allow `{template}` can reach" in warnings[0].message


def test_lint_shared_publish_only_for_a_scope_of_many_tasks(tmp_path: Path) -> None:
    template = "pipeline.data.etl.complete"
    for scopes, shared in [("[{dag: etl, tasks: [load]}]", False),
                           ("[{dag: etl, tasks: [load, extract]}]", True),
                           ("[{dag: etl, tasks: ['load_*']}]", True),
                           ("[{dag: etl, tasks: [load]}, {dag: billing, tasks: [load]}]", True),
                           ("[{dag: 'etl*', tasks: [load]}]", True)]:
        body = f"""\
- id: announce
  match: {{oidc: {{issuer: corp}}}}
  scopes: {scopes}
  permissions: {{publish: {{allow: ["{template}"]}}}}
"""
        codes = [w.code for w in lint(_set(tmp_path, body))]
        assert codes == (["shared_publish"] if shared else []), scopes


DENY_ONLY = """\
- id: deny-only
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    publish: {deny: ["a.{dag_id}.{task_id}.admin"]}
    subscribe: {deny: [">"]}
    responses: {max: 1}
"""
ALLOWING = """\
- id: allowing
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    publish: {allow: ["a.{dag_id}.{task_id}.>"]}
"""


def test_a_matching_policy_that_only_denies_admits_no_one(tmp_path: Path) -> None:
    policies = _set(tmp_path, DENY_ONLY)
    with pytest.raises(PolicyDenied) as denied:
        decide(policies, _oidc(), Scope("etl", "load"), STANDARD, now=0)
    assert denied.value.code == "no_allow"
    evaluation = evaluate(policies, _oidc(), Scope("etl", "load"), STANDARD, now=0)
    assert evaluation.decision is None
    assert "decision: DENY (no_allow: matching policies `deny-only` allow no publish or " \
           "subscribe subject)" in format_explanation(_oidc(), evaluation, 0)


def test_a_deny_only_policy_still_narrows_an_allowing_one(tmp_path: Path) -> None:
    decision = decide(_set(tmp_path, DENY_ONLY + ALLOWING), _oidc(), Scope("etl", "load"),
                      STANDARD, now=0)
    assert decision.policy_ids == ("deny-only", "allowing")
    perms = decision.permissions
    assert (perms.pub_allow, perms.pub_deny) == (("a.etl.load.>",), ("a.etl.load.admin",))
    assert (perms.sub_allow, perms.sub_deny) == ((), (">",))
