#!/bin/sh
# One-shot init for the compose stack: create the gateway's keys and an admin API token
# once (mode 0600, in the `keys` volume), and write the nats-server config that trusts
# exactly those keys (auth callout, xkey on), with its monitoring port (8222, /healthz,
# for the compose healthcheck; not published).
set -eu
umask 077
if [ ! -f /keys/issuer.nk ]; then
    nats-gateway keys generate --out /keys
fi
if [ ! -f /keys/admin.token ]; then
    python -c "import secrets; print(secrets.token_urlsafe(32))" > /keys/admin.token
fi
nats-gateway nats-config --config /etc/nats-gateway/gateway.toml --listen 0.0.0.0:4222 \
    --monitor-port 8222 > /nats-config/nats-server.conf
echo "keys ready; read the admin token with: docker compose exec gateway cat /keys/admin.token"
