from __future__ import annotations

import json

import pytest

from gateway.envelope import MAX_ENVELOPE_BYTES, Scope, build_envelope, parse_envelope
from gateway.errors import CredentialError


def test_round_trip() -> None:
    scope = Scope("etl", "grp.load", "manual__2026-11-24T10:00:00+00:00")
    envelope = parse_envelope(build_envelope("oidc", "tok", scope))
    assert envelope.scope == scope
    assert "tok" not in repr(envelope)


BAD = {
    "empty": ("", "missing_credential"),
    "not-json": ("{", "bad_credential"),
    "array": ("[]", "bad_credential"),
    "unknown-field": ('{"v":1,"method":"oidc","token":"t","scope":{},"x":1}', "bad_credential"),
    "bool-version": ('{"v":true,"method":"oidc","token":"t"}', "unsupported_version"),
    "method": ('{"v":1,"method":"ldap","token":"t"}', "unsupported_method"),
    "empty-token": ('{"v":1,"method":"oidc","token":""}', "bad_credential"),
    "no-scope": ('{"v":1,"method":"oidc","token":"t"}', "bad_scope"),
    "scope-extra": ('{"v":1,"method":"oidc","token":"t","scope":'
                    '{"dag_id":"a","task_id":"b","x":"c"}}', "bad_scope"),
    "wildcard": ('{"v":1,"method":"oidc","token":"t","scope":{"dag_id":"*","task_id":"b"}}',
                 "bad_scope"),
    "gt": ('{"v":1,"method":"oidc","token":"t","scope":{"dag_id":"a","task_id":">"}}',
           "bad_scope"),
    "space": ('{"v":1,"method":"oidc","token":"t","scope":{"dag_id":"a b","task_id":"b"}}',
              "bad_scope"),
    "number-id": ('{"v":1,"method":"oidc","token":"t","scope":{"dag_id":1,"task_id":"b"}}',
                  "bad_scope"),
    "too-long-id": (json.dumps({"v": 1, "method": "oidc", "token": "t",
                                "scope": {"dag_id": "a" * 251, "task_id": "b"}}), "bad_scope"),
    "oversized": ("x" * (MAX_ENVELOPE_BYTES + 1), "oversized_credential"),
    "deep-nesting": ("[" * 5000 + "]" * 5000, "bad_credential"),
    "repeated-token": ('{"v":1,"method":"oidc","token":"t","token":"u","scope":'
                       '{"dag_id":"a","task_id":"b"}}', "bad_credential"),
    "repeated-dag": ('{"v":1,"method":"oidc","token":"t","scope":'
                     '{"dag_id":"a","dag_id":"b","task_id":"b"}}', "bad_credential"),
    "lone-surrogate-token": ('{"v":1,"method":"oidc","token":"t\\ud800","scope":'
                             '{"dag_id":"a","task_id":"b"}}', "bad_credential"),
    "lone-surrogate-key": ('{"v":1,"method":"oidc","token":"t","scope":'
                           '{"dag_id":"a","task_id":"b"},"\\udfff":1}', "bad_credential"),
    "byte-order-mark": ('\ufeff{"v":1,"method":"oidc","token":"t","scope":'
                        '{"dag_id":"a","task_id":"b"}}', "bad_credential"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_envelopes(case: str) -> None:
    text, code = BAD[case]
    with pytest.raises(CredentialError) as raised:
        parse_envelope(text)
    assert raised.value.code == code
    assert raised.value.description


def test_escapes_that_make_valid_text_are_kept() -> None:
    # The surrogate check only runs when a `\\u` escape is present; a pair that forms one
    # character, and a plain escape, decode to encodable text and are accepted.
    text = ('{"v":1,"method":"oidc","token":"t\\ud83d\\ude00\\u0041","scope":'
            '{"dag_id":"a","task_id":"b"}}')
    assert parse_envelope(text).proof == "t\U0001f600A"
