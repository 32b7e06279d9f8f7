#!/usr/bin/env bash
# Start the integration-test services by hand and keep them up until
# Ctrl-C (or SIGTERM): a RabbitMQ broker on 127.0.0.1:5672 and a
# masakari-api 22 (noauth2, SQLite) using it, installing them if missing.
#
#   tools/integration-services.sh [DIR] [HOSTNAME...]
#
# DIR keeps their configuration, databases and logs (default: a new
# temporary directory); each HOSTNAME is registered as a compute host in
# Masakari.  The pytest fixtures in tests/integration/conftest.py start the
# same services by themselves; this script is for looking at them.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
fi
exec "$PYTHON" -m tests.integration.services "$@"
