#!/usr/bin/env bash
# Set up (first run) and run the whole test suite with pytest: unit tests and end-to-end
# tests against a real nats-server, a real OIDC issuer on loopback and SQLite.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
