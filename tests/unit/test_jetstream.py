"""JetStream rights per task (gateway/policy/jetstream.py): the exact subjects, the derived
consumer names and inboxes, their injectivity, the policy format, explain and lint.
Real YAML through the real loader."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gateway.client.subjects import consumer_name as client_consumer_name
from gateway.client.subjects import inbox_prefix as client_inbox_prefix
from gateway.envelope import Scope
from gateway.errors import PolicyDenied
from gateway.identity.model import Identity
from gateway.policy import jetstream
from gateway.policy.decide import ClientConnection, decide, evaluate
from gateway.policy.explain import explanation_dict, format_explanation
from gateway.policy.lint import lint
from gateway.policy.load import PolicyLoadError, PolicySet, load_policy_dir
from gateway.policy.model import PolicyPermissions
from tests.unit.test_policy_properties import airflow_ids, patterns_overlap

CLIENT = ClientConnection("10.0.0.1", "STANDARD")
IDENTITY = Identity(method="oidc", issuer="https://idp.example", issuer_name="corp",
                    subject="worker", expires=10_000, fingerprint="", claims={})

FULL = """\
- id: js
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    jetstream:
      publish:
        - stream: EVENTS
          subjects: ["events.{dag_id}.{task_id}.>"]
      consume:
        - stream: EVENTS
          filter: "events.{dag_id}.>"
          create: true
        - stream: EVENTS
          name: audit
          filter: "audit.{dag_id}.{task_id}"
"""


def _set(tmp_path: Path, body: str) -> PolicySet:
    (tmp_path / "p.yaml").write_text("version: 1\npolicies:\n" + textwrap.indent(
        textwrap.dedent(body), "  "))
    return load_policy_dir(tmp_path)


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as caught:
        _set(tmp_path, body)
    return caught.value.problems


def test_a_task_gets_exactly_its_stream_consumer_and_inbox_subjects(tmp_path: Path) -> None:
    decision = decide(_set(tmp_path, FULL), IDENTITY, Scope("etl", "grp.load"), CLIENT, now=0)
    own = "etl~grp%2Eload"
    assert decision.permissions.pub_allow == (
        "events.etl.grp%2Eload.>",
        f"$JS.API.CONSUMER.INFO.EVENTS.{own}",
        f"$JS.API.CONSUMER.MSG.NEXT.EVENTS.{own}",
        f"$JS.ACK.EVENTS.{own}.>",
        f"$JS.API.CONSUMER.CREATE.EVENTS.{own}.events.etl.>",
        f"$JS.API.CONSUMER.INFO.EVENTS.{own}~audit",
        f"$JS.API.CONSUMER.MSG.NEXT.EVENTS.{own}~audit",
        f"$JS.ACK.EVENTS.{own}~audit.>",
    )
    assert decision.permissions.sub_allow == ("_INBOX.etl.grp%2Eload.>",)
    assert decision.inbox_prefix == "_INBOX.etl.grp%2Eload"
    assert not decision.permissions.pub_deny and not decision.permissions.sub_deny


def test_the_client_helpers_name_what_the_policy_grants() -> None:
    scope = Scope("a.b", "c_d")
    assert client_inbox_prefix(scope) == "_INBOX.a%2Eb.c_d"
    assert client_consumer_name(scope) == "a%2Eb~c_d"
    assert client_consumer_name(scope, "audit") == "a%2Eb~c_d~audit"
    assert jetstream.inbox_subscription(scope) == client_inbox_prefix(scope) + ".>"


def test_consumer_names_are_injective_where_an_underscore_join_is_not() -> None:
    assert jetstream.consumer_name(Scope("a_b", "c")) != jetstream.consumer_name(Scope("a", "b_c"))
    assert jetstream.consumer_name(Scope("a", "b~c")) == "a~b%7Ec"  # `~` in an id is escaped


def _parts(name: str) -> list[str]:
    return name.split(jetstream.NAME_SEPARATOR)


@settings(max_examples=400)
@given(airflow_ids, airflow_ids, st.none() | st.sampled_from(["audit", "x_1"]),
       airflow_ids, airflow_ids, st.none() | st.sampled_from(["audit", "x_1"]))
@example("a_b", "c", None, "a", "b_c", None)
@example("a", "b", "c", "a", "b~c", None)
def test_consumer_names_and_inboxes_never_collide(d1: str, t1: str, n1: str | None, d2: str,
                                                  t2: str, n2: str | None) -> None:
    assume((d1, t1, n1) != (d2, t2, n2))
    first = jetstream.consumer_name(Scope(d1, t1), n1)
    second = jetstream.consumer_name(Scope(d2, t2), n2)
    assert first != second
    for name in (first, second):  # a valid name nats-server accepts, and a subject token
        assert not set(name) & set(".*> \t\r\n/\\")
    if (d1, t1) != (d2, t2):
        assert not patterns_overlap(jetstream.inbox_subscription(Scope(d1, t1)),
                                    jetstream.inbox_subscription(Scope(d2, t2)))


_IDS = st.text(min_size=1, max_size=30)


@settings(max_examples=300)
@given(_IDS, _IDS, st.sampled_from(["private", "none"]), st.booleans())
def test_no_rendered_permission_is_an_admin_or_every_inbox_grant(
        dag: str, task: str, inbox: str, create: bool) -> None:
    """Whatever the ids (even hostile ones), the JetStream and inbox subjects stay inside
    one stream, one consumer and one inbox: never `$JS.API.>`, `$JS.>`, `_INBOX.>`."""
    permissions = PolicyPermissions.model_validate({
        "inbox": inbox,
        "jetstream": {
            "publish": [{"stream": "EVENTS", "subjects": ["events.{dag_id}.{task_id}.>"]}],
            "consume": [{"stream": "EVENTS", "filter": "events.*.{task_id}.>",
                         "create": create}]}})
    try:
        rendered = jetstream.render(permissions, Scope(dag, task))
    except jetstream.ConsumerNameTooLong:
        return  # a deny (consumer_name_too_long), nothing rendered
    consumer = jetstream.consumer_name(Scope(dag, task))
    for subject in rendered.publish_allow + rendered.subscribe_allow:
        assert subject not in {">", "$JS.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"}
        tokens = subject.split(".")
        if tokens[0] == "$JS":
            # Wildcards only after the stream and consumer tokens (acks, the create filter).
            fixed = 4 if tokens[1] == "ACK" else 6 if tokens[3] != "MSG" else 7
            assert not {"*", ">"} & set(tokens[:fixed]), subject
            assert consumer in tokens and "EVENTS" in tokens
        elif tokens[0] == "_INBOX":
            assert subject == jetstream.inbox_subscription(Scope(dag, task))
    assert rendered.subscribe_allow == (jetstream.inbox_subscription(Scope(dag, task)),)


@settings(max_examples=300)
@given(airflow_ids, airflow_ids, airflow_ids, airflow_ids)
@example("a.b", "c", "a", "b.c")
@example("a_b", "c", "a", "b_c")
def test_distinct_tasks_never_share_consumer_rights(d1: str, t1: str, d2: str,
                                                    t2: str) -> None:
    assume((d1, t1) != (d2, t2))
    permissions = PolicyPermissions.model_validate({"jetstream": {"consume": [
        {"stream": "EVENTS", "filter": "events.>", "create": True}]}})
    first = jetstream.render(permissions, Scope(d1, t1))
    second = jetstream.render(permissions, Scope(d2, t2))
    for a in first.publish_allow + first.subscribe_allow:
        for b in second.publish_allow + second.subscribe_allow:
            assert not patterns_overlap(a, b), (a, b)


def test_jetstream_alone_is_something_allowed_and_inbox_alone_is_not(tmp_path: Path) -> None:
    decide(_set(tmp_path, FULL), IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    inbox_only = """\
- id: inbox
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions: {inbox: private}
"""
    with pytest.raises(PolicyDenied) as denied:
        decide(_set(tmp_path, inbox_only), IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    assert denied.value.code == "no_allow"


def test_inbox_private_grants_the_inbox_beside_core_subjects(tmp_path: Path) -> None:
    body = """\
- id: rpc
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    inbox: private
    publish: {allow: ["rpc.{dag_id}.{task_id}"]}
"""
    decision = decide(_set(tmp_path, body), IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    assert decision.permissions.sub_allow == ("_INBOX.etl.load.>",)
    assert decision.inbox_prefix == "_INBOX.etl.load" and decision.jetstream == ()


def test_a_consumer_name_past_the_server_limit_is_a_deny(tmp_path: Path) -> None:
    scope = Scope("d" * 200, "." * 30)  # 30 dots encode to 90 characters
    evaluation = evaluate(_set(tmp_path, FULL), IDENTITY, scope, CLIENT, now=0)
    assert evaluation.denial is not None
    assert evaluation.denial.code == "consumer_name_too_long"


def test_a_run_id_placeholder_without_a_run_is_a_deny(tmp_path: Path) -> None:
    body = FULL.replace('"events.{dag_id}.>"', '"events.{dag_id}.{run_id}.>"')
    with pytest.raises(PolicyDenied) as denied:
        decide(_set(tmp_path, body), IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    assert denied.value.code == "run_id_required"
    decision = decide(_set(tmp_path, body), IDENTITY, Scope("etl", "load", "r1"), CLIENT, now=0)
    assert "$JS.API.CONSUMER.CREATE.EVENTS.etl~load.events.etl.r1.>" in (
        decision.permissions.pub_allow)


@pytest.mark.parametrize("edit,line,message", [
    (("stream: EVENTS\n          subjects", "stream: EV.ENTS\n          subjects"), 9,
     "`policies.0.permissions.jetstream.publish.0.stream`: Value error, `EV.ENTS` must be"),
    (('filter: "events.{dag_id}.>"', 'filter: ">"'), 13,
     "`policies.0.permissions.jetstream.consume.0.filter`: Value error, filter `>` cannot"),
    (("name: audit", "name: a~b"), 16,
     "`policies.0.permissions.jetstream.consume.1.name`: Value error, `a~b` must be"),
    (('filter: "audit.{dag_id}.{task_id}"', 'filter: "audit.x{dag_id}"'), 17,
     "`policies.0.permissions.jetstream.consume.1.filter`: Value error, placeholder in"),
    (("create: true", "create: true\n          durable: x"), 15,
     "`policies.0.permissions.jetstream.consume.0.durable`: Extra inputs are not permitted"),
    (('subjects: ["events.{dag_id}.{task_id}.>"]', "subjects: []"), 10,
     "`policies.0.permissions.jetstream.publish.0.subjects`: Tuple should have at least 1"),
], ids=["stream-dot", "filter-everything", "name-separator", "filter-placeholder",
        "unknown-field", "no-subjects"])
def test_invalid_jetstream_sections_are_refused_with_their_line(
        tmp_path: Path, edit: tuple[str, str], line: int, message: str) -> None:
    assert edit[0] in FULL
    [problem] = _problems(tmp_path, FULL.replace(*edit))
    assert problem.startswith(f"p.yaml:{line}: {message}"), problem


def test_explain_shows_the_jetstream_subjects_by_purpose(tmp_path: Path) -> None:
    evaluation = evaluate(_set(tmp_path, FULL), IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    text = format_explanation(IDENTITY, evaluation, now=0)
    assert "  inbox prefix: _INBOX.etl.load (replies, PubAcks, pulls)" in text
    assert "    publish into stream EVENTS: events.etl.load.>" in text
    assert ("    consume EVENTS as etl~load: $JS.API.CONSUMER.INFO.EVENTS.etl~load, "
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.etl~load, $JS.ACK.EVENTS.etl~load.>, "
            "$JS.API.CONSUMER.CREATE.EVENTS.etl~load.events.etl.>") in text
    data = json.loads(json.dumps(explanation_dict(IDENTITY, evaluation, now=0)))
    assert data["inbox_prefix"] == "_INBOX.etl.load"
    assert {"for": "consume EVENTS as etl~load~audit",
            "subject": "$JS.ACK.EVENTS.etl~load~audit.>"} in data["jetstream"]


WATCHER = """\
- id: producer
  match: {oidc: {issuer: corp}}
  scopes: [{dag: DAG, tasks: ["*"]}]
  permissions:
    publish: {allow: [PUBLISH]}
- id: watcher
  match: {oidc: {issuer: corp}}
  scopes: [{dag: etl, tasks: [on_event]}]
  permissions:
    jetstream:
      consume: [{stream: EVENTS, filter: "events.etl.>"}]
"""


@pytest.mark.parametrize("dag,publish,loop", [
    ("etl", '"events.etl.done"', True),
    ("etl", '"events.{dag_id}.{task_id}"', True),    # {dag_id} is etl here
    ("etl", '"events.*.x"', True),
    ("e*", '"events.{dag_id}.x"', True),             # the glob covers etl
    ("billing", '"events.etl.done"', False),         # another DAG: no loop
    ("etl", '"events.billing.done"', False),
    ("etl", '"other.{dag_id}.>"', False),
    ("etl", '"events.%.x"', False),                  # not an encoded id: no DAG renders to it
], ids=["literal", "placeholder", "wildcard", "dag-glob", "other-dag", "other-subject",
        "other-prefix", "not-an-id"])
def test_lint_warns_when_a_dag_publishes_where_its_own_watcher_consumes(
        tmp_path: Path, dag: str, publish: str, loop: bool) -> None:
    body = WATCHER.replace("DAG", dag).replace("PUBLISH", publish)
    warnings = [w for w in lint(_set(tmp_path, body), {"corp"}) if w.code == "event_loop"]
    assert [w.source for w in warnings] == (["p.yaml:7"] if loop else [])
    if loop:
        assert warnings[0].message.startswith(
            f"policy `producer`: publish allow `{publish.strip(chr(34))}` can reach stream "
            "EVENTS consumer filter `events.etl.>` of policy `watcher` in the same DAG")


def test_lint_event_loop_covers_stream_publishing_and_core_subscribers(tmp_path: Path) -> None:
    body = """\
- id: both
  match: {oidc: {issuer: corp}}
  scopes: [{dag: etl, tasks: [load, on_event]}]
  permissions:
    subscribe: {allow: ["events.{dag_id}.on_event"]}
    jetstream:
      publish:
        - stream: EVENTS
          subjects: ["events.{dag_id}.{task_id}"]
"""
    warnings = [w for w in lint(_set(tmp_path, body), {"corp"}) if w.code == "event_loop"]
    assert [(w.source, w.message.split(":")[0]) for w in warnings] == [
        ("p.yaml:11", "policy `both`")]
    assert "of it in the same DAG" in warnings[0].message


def test_lint_a_task_reading_its_own_space_is_no_loop(tmp_path: Path) -> None:
    """The dev policy: each task publishes and subscribes in its own space; a watcher is
    a task of its own, so no other task of the DAG reaches it."""
    body = """\
- id: own
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    publish: {allow: ["airflow.{dag_id}.{task_id}.>"]}
    subscribe: {allow: ["airflow.{dag_id}.{task_id}.>"]}
"""
    assert not [w for w in lint(_set(tmp_path, body), {"corp"}) if w.code == "event_loop"]


def test_lint_warns_that_a_task_creating_its_consumer_chooses_its_config(
        tmp_path: Path) -> None:
    warnings = [w for w in lint(_set(tmp_path, FULL), {"corp"}) if w.code == "consumer_create"]
    assert [w.source for w in warnings] == ["p.yaml:13"]
    assert "push `deliver_subject`" in warnings[0].message


def test_lint_checks_stream_subjects_like_allows(tmp_path: Path) -> None:
    body = FULL.replace('subjects: ["events.{dag_id}.{task_id}.>"]',
                        'subjects: ["events.{dag_id}.>"]')
    codes = [(w.source, w.code) for w in lint(_set(tmp_path, body), {"corp"})]
    assert ("p.yaml:10", "shared_publish") in codes


def test_an_id_rendered_first_into_the_inbox_namespace_is_a_deny(tmp_path: Path) -> None:
    body = """\
- id: loose
  match: {oidc: {issuer: corp}}
  scopes: [{dag: "*"}]
  permissions:
    subscribe: {allow: ["{dag_id}.{task_id}.>"]}
"""
    policies = _set(tmp_path, body)
    assert decide(policies, IDENTITY, Scope("etl", "load"), CLIENT, now=0)
    with pytest.raises(PolicyDenied) as denied:  # would read every inbox of DAG `etl`
        decide(policies, IDENTITY, Scope("_INBOX", "etl"), CLIENT, now=0)
    assert denied.value.code == "reserved_subject"


def test_lint_warns_that_a_leading_wildcard_reaches_private_inboxes(tmp_path: Path) -> None:
    body = """\
- id: loose
  match: {oidc: {issuer: corp}}
  scopes: [{dag: etl, tasks: [load]}]
  permissions:
    subscribe: {allow: ["*.x.{task_id}"]}
"""
    warnings = lint(_set(tmp_path, body), {"corp"})
    assert [(w.source, w.code) for w in warnings] == [("p.yaml:7", "allow_inboxes")]
