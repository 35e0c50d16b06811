#!/usr/bin/env bash
# Set up (first run) and start the gateway on its embedded defaults: a local nats-server
# with auth callout (xkey on), a dev OIDC issuer, SQLite audit, the audit API on :8080.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/nats-gateway dev "$@"
