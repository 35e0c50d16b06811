"""The worker side: build the credential envelope and subjects the gateway expects.

Small and dependency-light (nats-py and authlib only when their helpers are used), so an
Airflow worker can import it. It shares the envelope and subject encoding modules with
the gateway, so both sides agree by construction.
"""

from gateway.client.airflow import scope_from_airflow
from gateway.client.aws import aws_iam_envelope, aws_iam_proof
from gateway.client.connect import connect
from gateway.client.credentials import fetch_client_credentials_token, oidc_envelope
from gateway.client.refusal import GatewayRefused, RefusalPolicy
from gateway.client.sources import (
    AwsIamCredentials,
    ClientCredentialsToken,
    CredentialSource,
    OidcToken,
    OidcTokenFile,
)
from gateway.client.subjects import render_subject, task_subject
from gateway.envelope import Scope
from gateway.errors import TlsError

__all__ = [
    "AwsIamCredentials",
    "ClientCredentialsToken",
    "CredentialSource",
    "GatewayRefused",
    "OidcToken",
    "OidcTokenFile",
    "RefusalPolicy",
    "Scope",
    "TlsError",
    "aws_iam_envelope",
    "aws_iam_proof",
    "connect",
    "fetch_client_credentials_token",
    "oidc_envelope",
    "render_subject",
    "scope_from_airflow",
    "task_subject",
]
