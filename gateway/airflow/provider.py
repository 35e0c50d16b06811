"""What Airflow's ProvidersManager reads (the ``apache_airflow_provider`` entry point in
pyproject.toml): hooks, operators, sensors, triggers, the ``natsgateway`` connection type
with one form field per ``extra`` key, the ``nats`` asset URI scheme, and the ``nats``
queue provider for common-messaging's ``MessageQueueTrigger`` (:mod:`gateway.airflow.queues`;
Airflow imports it only when that provider is installed, and skips it quietly when not)."""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]

INTEGRATION = "NATS (nats-gateway)"
_STRING = {"type": ["string", "null"]}


def _field(label: str, description: str, schema: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": schema or _STRING}


# Stored in the connection's `extra` under these keys: the hook reads them (hook.py).
CONN_FIELDS = {
    "credential": _field("Credential", "how the worker proves who it is", {
        "type": ["string", "null"], "default": "token_file",
        "enum": ["token_file", "client_credentials", "aws_iam", "token"]}),
    "token_file": _field("Token file", "token_file: a projected service-account token"),
    "token_endpoint": _field("Token endpoint", "client_credentials: the IdP's token URL"),
    "audience": _field("Audience", "client_credentials: the audience to request"),
    "scope": _field("OAuth scope", "client_credentials: the scope to request"),
    "gateway_id": _field("Gateway id", "aws_iam: the gateway's server-id header value"),
    "region": _field("AWS region", "aws_iam: the STS region"),
    "sts_endpoint": _field("STS endpoint", "aws_iam: optional STS endpoint"),
    "creds_file": _field("Credentials file", "operator mode: the sentinel .creds file"),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "nats-gateway",
        "name": INTEGRATION,
        "description": "NATS through nats-gateway: identity-aware auth callout, each task "
                       "scoped to its DAG and task, task events on JetStream.",
        "integrations": [{"integration-name": INTEGRATION,
                          "external-doc-url": "https://docs.nats.io/",
                          "tags": ["protocol"]}],
        "hooks": [{"integration-name": INTEGRATION,
                   "python-modules": ["gateway.airflow.hook"]}],
        "operators": [{"integration-name": INTEGRATION,
                       "python-modules": ["gateway.airflow.operators"]}],
        "sensors": [{"integration-name": INTEGRATION,
                     "python-modules": ["gateway.airflow.sensors"]}],
        "triggers": [{"integration-name": INTEGRATION,
                      "python-modules": ["gateway.airflow.triggers"]}],
        "connection-types": [{
            "hook-class-name": "gateway.airflow.hook.NatsGatewayHook",
            "hook-name": "NATS through nats-gateway",
            "connection-type": "natsgateway",
            "conn-fields": CONN_FIELDS,
            "ui-field-behaviour": {"hidden-fields": ["schema"], "relabeling": {},
                                   "placeholders": {"port": "4222"}},
        }],
        "asset-uris": [{"schemes": ["nats"], "handler": "gateway.airflow.assets.sanitize_uri",
                        "factory": "gateway.airflow.assets.create_asset"}],
        "queues": ["gateway.airflow.queues.NatsMessageQueueProvider"],
    }
