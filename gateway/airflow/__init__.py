"""Apache Airflow 3 integration: a hook, a publish operator, a deferrable message trigger
and sensor, all connecting to NATS through the gateway (install the ``airflow`` extra).
An Airflow provider (:mod:`gateway.airflow.provider`, the ``apache_airflow_provider``
entry point): connection type ``natsgateway``, asset URIs ``nats://<subject>``, and
``nats://<subject>`` queues for common-messaging's ``MessageQueueTrigger``
(:mod:`gateway.airflow.queues`). Events travel through JetStream: the operator appends
with a de-duplicating message id, the trigger and sensor read a durable consumer and ack
after Airflow stored the event.

Connection (``nats_gateway_default``): host and port of nats-server, and in ``extra``
how the task proves its identity, one of:

- ``{"credential": "token_file", "token_file": "/var/run/secrets/tokens/nats-gateway"}``
- ``{"credential": "token", "token": "..."}`` (tests only)
- ``{"credential": "client_credentials", "token_endpoint": "...", "audience": "..."}``
  with the client id and secret as the connection's login and password
- ``{"credential": "aws_iam", "gateway_id": "...", "region": "...",
  "sts_endpoint": "..."}`` (boto3's default credentials)

plus optionally ``"creds_file"`` (operator mode: the sentinel credentials) and
``"refusals": {"connect_attempts": 3, "give_up_after": 10, "backoff_cap_seconds": 30}``
(how many refusals a connect takes before it fails; see docs/client.md).

TLS (docs/operations.md): ``"tls_ca_file"`` (the CA of nats-server's certificate),
``"tls_cert_file"`` and ``"tls_key_file"`` (a client certificate, where nats-server
verifies clients), ``"tls_hostname"`` (the name to check, when it is not the host).
Any of them makes the hook connect with ``tls://``; a certificate failure raises
:class:`gateway.client.TlsError`.
"""
