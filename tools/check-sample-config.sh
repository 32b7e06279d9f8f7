#!/usr/bin/env bash
# Fail if etc/vmha/vmha.conf.sample is not what oslo-config-generator makes
# from the code now.  Uses $PYTHON if set, else the active virtualenv's
# python3 (tox), else .venv's.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
sample=etc/vmha/vmha.conf.sample

python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -n ${VIRTUAL_ENV:-} ]]; then
        python=python3
    elif [[ -x .venv/bin/python ]]; then
        python=.venv/bin/python
    else
        python=python3
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

"$python" -m oslo_config.generator \
    --config-file etc/vmha/vmha-config-generator.conf \
    --output-file "$tmp/vmha.conf.sample"

if [[ ! -f $sample ]]; then
    echo "$sample is missing: run tox -e genconfig" >&2
    exit 1
fi
if ! diff -u --label "$sample (committed)" --label "$sample (generated)" \
        "$sample" "$tmp/vmha.conf.sample"; then
    echo "$sample is stale: run tox -e genconfig" >&2
    exit 1
fi
echo "$sample is up to date"
