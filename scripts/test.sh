#!/usr/bin/env bash
# Set up (first run) and run the whole test suite with pytest: unit tests and end-to-end
# tests against a real nats-server, a real OIDC issuer on loopback and SQLite.
# Installs everything (the `dev` extra: Airflow, moto, pytest, mypy, ruff, nats-server).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
exec .venv/bin/python -m pytest "$@"
