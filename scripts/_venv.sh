# Shared by dev.sh and test.sh: create .venv with Python >= 3.11 and install the project
# with one extra, named by the caller: `run` (dev.sh: the runtime dependencies and the
# real nats-server binary) or `dev` (test.sh: everything, Airflow and the test tools too).
# Each extra has its own marker, .venv/.installed-EXTRA, so test.sh after dev.sh still
# installs the test tools; `dev` includes `run`, so dev.sh after test.sh installs nothing.
# An extra is installed again when pyproject.toml changed since its marker.
set -euo pipefail
VENV_EXTRA="${1:?usage: source _venv.sh run|dev}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON_BIN="${PYTHON:-python3}"
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
fi

_venv_current() {  # is this extra's marker newer than pyproject.toml?
    [ -f ".venv/.installed-$1" ] && [ ! pyproject.toml -nt ".venv/.installed-$1" ]
}

# .venv/.installed is the marker of the single-extra scripts before this one: it meant `dev`.
if [ -f .venv/.installed ] && [ ! -f .venv/.installed-dev ]; then
    cp -p .venv/.installed .venv/.installed-dev
fi
if _venv_current "$VENV_EXTRA" || { [ "$VENV_EXTRA" = run ] && _venv_current dev; }; then
    :
else
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$VENV_EXTRA]"
    touch ".venv/.installed-$VENV_EXTRA"
fi
