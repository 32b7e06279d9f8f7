#!/usr/bin/env bash
# Bring this checkout up to a working development setup; safe to run again.
#
#   tools/setup.sh [PROFILE...]
#
# 1. Installs the Debian packages that bindep.txt lists for the default
#    profile (plus any PROFILE given, e.g. "integration") and that are not
#    installed yet.  bindep itself runs from a small venv in build/.
# 2. Creates .venv and installs vmha into it, editable, with its test extras
#    and the test tools.  Skipped when nothing it depends on changed.
#
# Runs as root, or through sudo when that is available.  Progress goes to
# stderr; the output of apt-get and pip is shown only when they fail.
set -Eeuo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
VENV=.venv
BINDEP_VENV=build/bindep-venv
# Keep in step with tox.ini.  ruff is pinned to a minor release: new ones
# add rules to the selected sets.
TEST_TOOLS=(pytest 'ruff>=0.17,<0.18')

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'say "FAILED (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# Run a command with its output kept back; show it all if the command fails.
quietly() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        cat -- "$log" >&2
        rm -f -- "$log"
        die "command failed (exit $rc): $*"
    fi
    rm -f -- "$log"
}

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -- "$@"
    else
        die "root is needed to run: $*"
    fi
}

apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# DPkg::Lock::Timeout does not cover the lock on apt's lists, which another
# apt-get update may hold: try a few times.
apt_update() {
    local try
    for try in 1 2 3 4 5; do
        if apt_get -q update >"$TMP/apt-update.log" 2>&1; then
            return 0
        fi
        if ((try < 5)); then
            say "apt-get update failed (try $try of 5), retrying in $((try * 10))s"
            sleep $((try * 10))
        fi
    done
    cat -- "$TMP/apt-update.log" >&2
    die "apt-get update failed 5 times"
}

install_debs() {
    command -v apt-get >/dev/null ||
        die "install these packages, then run me again: $*"
    say "installing Debian packages: $*"
    apt_update
    quietly apt_get install -y -q --no-install-recommends "$@"
}

# The missing packages of bindep.txt for profiles "$@", one a line.
missing_debs() {
    local out rc=0
    out=$("$BINDEP_VENV/bin/bindep" -b "$@") || rc=$?
    if ((rc == 1)) && [[ -n $out ]]; then
        printf '%s\n' "$out"
    elif ((rc == 1)); then
        # Nothing missing, yet a failure: installed versions that do not
        # match, which only the long output tells.
        "$BINDEP_VENV/bin/bindep" "$@" >&2 || true
        die "bindep: installed packages do not match bindep.txt; see above"
    elif ((rc != 0)); then
        die "bindep failed (exit $rc); see above"
    fi
}

TMP=$(mktemp -d)
trap 'rm -rf -- "$TMP"' EXIT
start=$SECONDS
profiles=(default "$@")

# -- Debian packages ---------------------------------------------------------

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3)"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv's ensurepip in python3-venv; bindep needs a venv.
    install_debs python3-venv
fi

if ! "$BINDEP_VENV/bin/bindep" --version >/dev/null 2>&1; then
    say "creating $BINDEP_VENV (bindep)"
    rm -rf -- "$BINDEP_VENV"
    quietly "$PYTHON" -m venv "$BINDEP_VENV"
    quietly "$BINDEP_VENV/bin/python" -m pip install -q bindep
fi

missing=$(missing_debs "${profiles[@]}")
if [[ -n $missing ]]; then
    mapfile -t packages <<<"$missing"
    install_debs "${packages[@]}"
    missing=$(missing_debs "${profiles[@]}")
    [[ -z $missing ]] ||
        die "still missing after apt-get install: ${missing//$'\n'/ }"
else
    say "Debian packages: all there (profiles: ${profiles[*]})"
fi

# -- .venv -------------------------------------------------------------------

# What the installed .venv depends on; a change reinstalls.
stamp() {
    {
        printf '%s\n' "$ROOT"
        "$VENV/bin/python" -VV
        cat setup.cfg pyproject.toml constraints.txt tools/setup.sh
    } | sha256sum | cut -d' ' -f1
}

if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    say "creating $VENV"
    rm -rf -- "$VENV"
    quietly "$PYTHON" -m venv "$VENV"
fi

want=$(stamp)
if [[ -f $VENV/.setup-stamp && $(<"$VENV/.setup-stamp") == "$want" ]]; then
    say "$VENV: up to date"
else
    say "installing vmha (editable) and test tools into $VENV"
    rm -f -- "$VENV/.setup-stamp"
    quietly "$VENV/bin/python" -m pip install -q -c constraints.txt \
        -e '.[test]' "${TEST_TOOLS[@]}"
    printf '%s\n' "$want" >"$VENV/.setup-stamp"
fi

say "ready in $((SECONDS - start))s: $VENV ($("$VENV/bin/python" -V))"
