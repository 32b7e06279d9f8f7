#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called by run_stage
# Every check CI runs, after tools/setup.sh:
#   ruff check, the sample config check, and pytest on tests/unit,
#   tests/functional and tests/integration once per concurrency backend
#   (eventlet, threading).  The integration tests install and start what
#   they need themselves: RabbitMQ, masakari-api, libvirtd and QEMU guests.
# All stages run even when one fails; a summary closes the output and the
# exit status is non-zero when any stage failed.
#
#   tools/test.sh [PYTEST_ARG...]     e.g. tools/test.sh -k reconnect -x
#
# Runs from the repository root: relative paths in PYTEST_ARGs are taken
# from there.  PYTEST_TIMEOUT (seconds, default 1800) bounds each pytest run.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
if ! tools/setup.sh; then
    echo "tools/test.sh: FAILED: tools/setup.sh could not set up; see above" >&2
    exit 1
fi

VENV=$PWD/.venv
TEST_DIRS=(tests/unit tests/functional tests/integration)
BACKENDS=(eventlet threading)
# Seconds one pytest run may take before it is stopped.
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-1800}

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

summary=()
failed=0

# run_stage NAME COMMAND...: run one stage and record how it went.
run_stage() {
    local name=$1 start=$SECONDS rc=0
    shift
    printf '\n=== %s\n' "$name"
    "$@" || rc=$?
    if ((rc == 0)); then
        summary+=("$(printf 'PASS  %-28s %4ss' "$name" $((SECONDS - start)))")
    else
        local why="exit $rc"
        if ((rc == 124 || rc == 137)); then
            why="timed out"
        fi
        summary+=("$(printf 'FAIL  %-28s %4ss  (%s)' \
            "$name" $((SECONDS - start)) "$why")")
        failed=1
    fi
}

ruff_check() {
    "$VENV/bin/ruff" check .
}

sample_config() {
    PYTHON=$VENV/bin/python tools/check-sample-config.sh
}

# pytest_backend BACKEND [PYTEST_ARG...]: the unit and functional tests on
# that backend.
pytest_backend() {
    local backend=$1 dirs=() dir rc=0
    shift
    for dir in "${TEST_DIRS[@]}"; do
        if [[ -d $dir ]]; then
            dirs+=("$dir")
        else
            echo "note: $dir does not exist, skipped"
        fi
    done
    if ((${#dirs[@]} == 0)); then
        echo "no test directory found" >&2
        return 1
    fi
    # One pytest process per directory: some functional tests fail only
    # after the unit tests ran in the same process (global state not yet
    # found), so each directory starts from a fresh interpreter.
    # A hung test must not eat CI's time: SIGINT makes pytest print where
    # it was and its summary; SIGKILL follows if that does not end it.
    local one
    for dir in "${dirs[@]}"; do
        one=0
        VMHA_CONCURRENCY_BACKEND=$backend timeout -s INT -k 60 \
            "$PYTEST_TIMEOUT" "$VENV/bin/pytest" \
            --junitxml="$tmp/pytest-$backend-${dir//\//-}.xml" \
            "$dir" "$@" || one=$?
        case $one in
            0) ;;
            5)  # nothing there matched the PYTEST_ARGs: fine, unless none
                if (($# == 0)); then
                    echo "pytest collected no test in $dir" >&2
                    rc=$one
                fi ;;
            124 | 137)
                echo "pytest timed out after ${PYTEST_TIMEOUT}s in $dir" >&2
                rc=$one ;;
            *) rc=$one ;;
        esac
    done
    return "$rc"
}

run_stage "ruff check" ruff_check
run_stage "sample config up to date" sample_config
for backend in "${BACKENDS[@]}"; do
    run_stage "pytest ($backend)" pytest_backend "$backend" "$@"
done

printf '\n=== summary\n'
printf '%s\n' "${summary[@]}"
if ((failed)); then
    echo "tools/test.sh: FAILED"
else
    echo "tools/test.sh: all stages passed"
fi
# Last line: the tests of both pytest runs added up.
"$VENV/bin/python" - "$tmp"/pytest-*.xml <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        continue
    for suite in root.iter('testsuite'):
        tests, failures, errors, skips = (
            int(suite.get(key, 0))
            for key in ('tests', 'failures', 'errors', 'skipped'))
        passed += tests - failures - errors - skips
        failed += failures + errors
        skipped += skips
print(f'tests: {passed} passed, {failed} failed, {skipped} skipped')
EOF
exit "$failed"
