#!/usr/bin/env bash
# Set the checkout up if needed, then run vmha-agent's built-in demo on
# libvirt's test:///default driver.  Arguments go to vmha-agent, e.g.
#   tools/demo.sh --debug
#   tools/demo.sh --config-file my.conf   ([DEFAULT] concurrency_backend = ...)
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh" >&2
exec "$root/.venv/bin/vmha-agent" --demo "$@"
