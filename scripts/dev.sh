#!/usr/bin/env bash
# Set up a virtualenv and run the embedded dev vault: SQLite and a local keyring in ./.vault-dev,
# public ingest on 127.0.0.1:8080, internal API on 127.0.0.1:8081. Extra arguments go to `session-vault dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/session-vault dev "$@"
