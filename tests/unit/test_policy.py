from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.identity.model import Identity
from gateway.policy.decide import ClientConnection, decide
from gateway.policy.load import PolicyLoadError, PolicySet, load_policy_dir, load_policy_text

ISSUER = "https://idp.example"


def _identity(subject: str = "sa:airflow:etl", expires: int = 10_000, **claims: object
              ) -> Identity:
    return Identity(method="oidc", issuer=ISSUER, issuer_name="corp", subject=subject,
                    expires=expires, fingerprint="sha256:x",
                    claims={"aud": "nats-gateway", "sub": subject, **claims})


CLIENT = ClientConnection("10.1.2.3", "STANDARD")


def _set(tmp_path: Path, body: str) -> PolicySet:
    (tmp_path / "p.yaml").write_text("version: 1\npolicies:\n" + textwrap.indent(
        textwrap.dedent(body), "  "))
    return load_policy_dir(tmp_path)


BASE = """\
- id: etl
  match: {oidc: {issuer: corp, subject: "sa:airflow:*", claims: {"/team": data}}}
  scopes: [{dag: "etl*", tasks: [load, "grp.*"]}]
  permissions:
    publish: {allow: ["airflow.{dag_id}.{task_id}.>"], deny: ["airflow.{dag_id}.{task_id}.secret"]}
    subscribe: {allow: ["airflow.{dag_id}.{task_id}.>"]}
  ttl_seconds: 600
"""


def test_grant_renders_encoded_subjects(tmp_path: Path) -> None:
    policies = _set(tmp_path, BASE)
    decision = decide(policies, _identity(team="data"), Scope("etl", "grp.load"), CLIENT, now=1000)
    assert decision.permissions.pub_allow == ("airflow.etl.grp%2Eload.>",)
    assert decision.permissions.pub_deny == ("airflow.etl.grp%2Eload.secret",)
    assert decision.policy_ids == ("etl",)
    assert decision.expires == 1600
    assert decision.policy_set_hash.startswith("sha256:")


@pytest.mark.parametrize("identity,scope", [
    (_identity(team="other"), Scope("etl", "load")),          # claim differs
    (_identity(), Scope("etl", "load")),                       # claim missing
    (_identity("sa:other:x", team="data"), Scope("etl", "load")),  # subject glob
    (_identity(team="data"), Scope("billing", "load")),        # dag not in scope
    (_identity(team="data"), Scope("etl", "extract")),         # task not in scope
], ids=["claim-differs", "claim-missing", "subject", "dag", "task"])
def test_deny_by_default(tmp_path: Path, identity: Identity, scope: Scope) -> None:
    with pytest.raises(PolicyDenied) as denied:
        decide(_set(tmp_path, BASE), identity, scope, CLIENT, now=1000)
    assert denied.value.code == "no_matching_policy"


def test_matches_combine_and_ttl_never_outlives_identity(tmp_path: Path) -> None:
    second = """\
- id: audit-readers
  match: {oidc: {issuer: "https://idp.example"}}
  scopes: [{dag: "*"}]
  permissions:
    subscribe: {allow: ["audit.{dag_id}"], deny: ["airflow.{dag_id}.{task_id}.>"]}
  ttl_seconds: 60
"""
    policies = _set(tmp_path, BASE + second)
    decision = decide(policies, _identity(team="data", expires=1030), Scope("etl", "load"),
                      CLIENT, now=1000)
    assert decision.policy_ids == ("etl", "audit-readers")
    assert decision.permissions.sub_allow == ("airflow.etl.load.>", "audit.etl")
    assert decision.permissions.sub_deny == ("airflow.etl.load.>",)  # deny wins at the server
    assert decision.expires == 1030


def test_run_id_template_needs_a_run_id(tmp_path: Path) -> None:
    body = BASE.replace('"airflow.{dag_id}.{task_id}.>"]}\n  ttl', '"run.{run_id}.>"]}\n  ttl')
    policies = _set(tmp_path, body)
    with pytest.raises(PolicyDenied, match="run_id"):
        decide(policies, _identity(team="data"), Scope("etl", "load"), CLIENT, now=1)
    granted = decide(policies, _identity(team="data"), Scope("etl", "load", "r.1"), CLIENT, now=1)
    assert "run.r%2E1.>" in granted.permissions.sub_allow


def test_bool_claim_never_matches_an_integer(tmp_path: Path) -> None:
    policies = _set(tmp_path, BASE.replace('{"/team": data}', '{"/ci": true}'))
    with pytest.raises(PolicyDenied):
        decide(policies, _identity(ci=1), Scope("etl", "load"), CLIENT, now=1)
    assert decide(policies, _identity(ci=True), Scope("etl", "load"), CLIENT, now=1)


@pytest.mark.parametrize("template,message", [
    ("a.{dag_id}x", "whole token"), ("a.>.b", "last token"), ("a..b", "invalid token"),
    ("a b", "invalid token"),
])
def test_bad_templates_name_file_line_and_field(template: str, message: str) -> None:
    text = textwrap.dedent(f"""\
        version: 1
        policies:
          - id: p
            match: {{oidc: {{issuer: x}}}}
            scopes: [{{dag: a}}]
            permissions:
              publish:
                allow: ["{template}"]
        """)
    policies, problems = load_policy_text(text, "f.yaml")
    assert not policies
    [problem] = problems
    assert problem.startswith("f.yaml:8: `policies.0.permissions.publish.allow.0`")
    assert message in problem


def test_a_broken_file_fails_the_whole_set_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("version: 1\npolicies: []\n")
    (tmp_path / "bad.yaml").write_text("version: 2\npolicies:\n  - id: x\n    extra: 1\n")
    (tmp_path / "worse.yaml").write_text("version: 1\npolicies: [\n")
    with pytest.raises(PolicyLoadError) as failed:
        load_policy_dir(tmp_path)
    text = " ".join(failed.value.problems)
    assert "bad.yaml:1: `version`" in text
    assert "worse.yaml:" in text and "not valid yaml" in text


def test_shipped_policies_load() -> None:
    shipped = load_policy_dir(Path(__file__).resolve().parents[2] / "policies")
    assert [p.id for p in shipped.policies] == ["dev-airflow-workers"]


WIDENED = """\
version: 1
policies:
  - id: etl
    match: {oidc: {issuer: corp, subject: "sa:airflow:etl"}}
    scopes: [{dag: etl}]
    permissions:
      publish:
        allow: ["airflow.{dag_id}.{task_id}.>"]
        deny: ["airflow.{dag_id}.{task_id}.admin"]
        deny: ["airflow.{dag_id}.{task_id}.other"]
    match: {oidc: {issuer: corp}}
"""


@pytest.mark.parametrize("text,problems", [
    (WIDENED, ["f.yaml:10: duplicate key `deny` (first at line 9)",
               "f.yaml:11: duplicate key `match` (first at line 4)"]),
    ("version: 1\npolicies: []\n'policies': []\n",
     ["f.yaml:3: duplicate key `policies` (first at line 2)"]),
    ("version: 1\npolicies:\n  - {id: a, id: b}\n",
     ["f.yaml:3: duplicate key `id` (first at line 3)"]),
], ids=["second-match-and-deny", "quoted-top-level", "flow-mapping"])
def test_duplicate_keys_are_refused_at_any_depth(text: str, problems: list[str]) -> None:
    policies, found = load_policy_text(text, "f.yaml")
    assert policies == []
    assert found[:len(problems)] == problems


def test_duplicate_keys_are_collected_with_every_other_problem(tmp_path: Path) -> None:
    (tmp_path / "dup.yaml").write_text(WIDENED.replace("scopes:", "scopez:"))
    (tmp_path / "other.yaml").write_text("version: 2\n")
    with pytest.raises(PolicyLoadError) as failed:
        load_policy_dir(tmp_path)
    problems = failed.value.problems
    assert "dup.yaml:10: duplicate key `deny` (first at line 9)" in problems
    assert "dup.yaml:11: duplicate key `match` (first at line 4)" in problems
    assert any(p.startswith("dup.yaml:5: `policies.0.scopez`") for p in problems)
    assert any(p.startswith("other.yaml:1: `version`") for p in problems)


def test_a_merge_key_is_not_a_duplicate() -> None:
    # `<<` merges are explicit YAML: only keys written twice in one mapping are refused.
    text = textwrap.dedent("""\
        version: 1
        policies:
          - &base
            id: a
            match: {oidc: {issuer: corp}}
            scopes: [{dag: a}]
            permissions: {publish: {allow: ["a.{dag_id}.{task_id}"]}}
          - <<: *base
            id: b
        """)
    policies, problems = load_policy_text(text, "f.yaml")
    assert problems == [] and [p.id for p in policies] == ["a", "b"]


def test_text_that_is_not_valid_unicode_is_a_problem_not_a_crash() -> None:
    """Found by the fuzz test: libyaml encodes to UTF-8, which a lone surrogate is not."""
    policies, problems = load_policy_text("version: 1\npolicies: [\ud800]", "bad.yaml")
    assert not policies
    assert problems == ["bad.yaml:1: not valid yaml: the text is not valid unicode "
                        "(lone surrogate)"]
