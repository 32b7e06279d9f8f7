#!/usr/bin/env bash
# Set the checkout up if needed, then run vmha-agent's built-in demo on
# libvirt's test:///default driver.  Arguments go to vmha-agent, e.g.
#   tools/demo.sh --debug
#   tools/demo.sh --config-file my.conf   ([DEFAULT] concurrency_backend = ...)
# With --real, the story plays on real VMs (tools/demo_real.py).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh" >&2
args=()
real=
for arg in "$@"; do
    if [[ $arg == --real ]]; then real=1; else args+=("$arg"); fi
done
if [[ -n $real ]]; then
    exec "$root/.venv/bin/python" "$root/tools/demo_real.py" "${args[@]}"
fi
exec "$root/.venv/bin/vmha-agent" --demo "${args[@]}"
