"""Caller ARNs as STS GetCallerIdentity reports them, and the Identity they stand for.

``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`` is normalised to the role ARN
``arn:aws:iam::ACCOUNT:role/ROLE`` plus the session name. STS does not report a role's
path, so the role ARN never has one (Vault's aws auth method has the same limit). Only
assumed roles are accepted as worker identities; IAM users, root and federated users are
long-lived or too broad to scope to one task, and are refused with a clear reason.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import IdentityError
from gateway.identity.model import Identity

__all__ = ["CallerArn", "iam_identity", "parse_caller_arn"]

_ASSUMED_ROLE = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):sts::(?P<account>[0-9]{12}):"
    r"assumed-role/(?P<role>[\w+=,.@-]{1,64})/(?P<session>[\w+=,.@-]{2,64})"
)
_OTHER = re.compile(r"arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:(?P<kind>user|root|federated-user)")
_MAX_ARN = 2048


@dataclass(frozen=True)
class CallerArn:
    arn: str
    partition: str
    account: str
    role_name: str
    session_name: str

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role_name}"


def parse_caller_arn(arn: str) -> CallerArn:
    """The assumed-role ARN's parts, or IdentityError saying why it is not acceptable."""
    if len(arn) > _MAX_ARN:
        raise IdentityError("caller arn is too long", code="bad_caller_arn")
    match = _ASSUMED_ROLE.fullmatch(arn)
    if match is None:
        other = _OTHER.match(arn)
        if other is not None:
            raise IdentityError(
                f"caller is an IAM {other.group('kind')}, not an assumed role; workers must "
                "present a role session", code="not_an_assumed_role")
        raise IdentityError("caller arn is not an sts assumed-role arn", code="bad_caller_arn")
    return CallerArn(arn=arn, partition=match["partition"], account=match["account"],
                     role_name=match["role"], session_name=match["session"])


def iam_identity(caller: CallerArn, *, user_id: str, expires: int,
                 proof_fingerprint: str) -> Identity:
    """The Identity of a role session. Policies see the attributes below as its claims."""
    return Identity(
        method="aws_iam",
        issuer=caller.role_arn,
        subject=caller.session_name,
        expires=expires,
        fingerprint=proof_fingerprint,
        issuer_name="aws",
        claims={
            "arn": caller.arn,
            "account": caller.account,
            "role_arn": caller.role_arn,
            "role_name": caller.role_name,
            "session_name": caller.session_name,
            "user_id": user_id,
        },
    )
