"""Worker side of the AWS IAM method: sign (do not send) ``sts:GetCallerIdentity``.

boto3 finds the worker's credentials the usual way (IRSA/EKS Pod Identity, ECS task role,
MWAA execution role, instance profile, environment); botocore's SigV4 signer signs the
request for the gateway's STS endpoint and region, with ``X-Nats-Gateway-Id`` among the
signed headers so the proof is useless to any other gateway. Needs the ``aws`` extra.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from gateway.envelope import Scope, build_envelope
from gateway.identity.aws_proof import STS_BODY, regional_sts_endpoint

__all__ = ["aws_iam_envelope", "aws_iam_proof"]


def aws_iam_proof(*, gateway_id: str, region: str, sts_endpoint: str | None = None,
                  session: Any = None) -> str:
    """The signed request as the envelope's proof (JSON of headers and body)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = session or boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise RuntimeError("no AWS credentials found for this worker")
    url = (sts_endpoint or regional_sts_endpoint(region)).rstrip("/") + "/"
    request = AWSRequest(method="POST", url=url, data=STS_BODY, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Nats-Gateway-Id": gateway_id,
        # SigV4 alone gives the same signature for the same second; proofs are single use.
        "X-Nats-Gateway-Nonce": secrets.token_hex(16),
    })
    SigV4Auth(credentials.get_frozen_credentials(), "sts", region).add_auth(request)
    return json.dumps({"headers": dict(request.headers.items()), "body": STS_BODY},
                      separators=(",", ":"))


def aws_iam_envelope(*, dag_id: str, task_id: str, run_id: str | None = None,
                     gateway_id: str, region: str, sts_endpoint: str | None = None,
                     session: Any = None) -> str:
    """The CONNECT auth_token for a worker proving its IAM role."""
    proof = aws_iam_proof(gateway_id=gateway_id, region=region, sts_endpoint=sts_endpoint,
                          session=session)
    return build_envelope("aws_iam", proof, Scope(dag_id, task_id, run_id))
