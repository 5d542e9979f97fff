#!/usr/bin/env bash
# Set up vfax on Debian 12: system libraries (spandsp; Kamailio for the tests), a virtualenv in .venv,
# and the package itself. Safe to run again: it only installs what is missing.
#   scripts/setup.sh          run-time dependencies
#   scripts/setup.sh --test   also what the test suite needs (Kamailio, pytest, pjsua2, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# gcc and libc6-dev build the native G.711 hot path (t38/native/, see README "Performance")
apt_pkgs=(libspandsp2 gcc libc6-dev)
[ "$want_test" = 1 ] && apt_pkgs+=(kamailio)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3 python3-venv python3-pip)
    PYTHON=/usr/bin/python3
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian kamailio package starts a system service on port 5060; the tests run their own.
if [ "$want_test" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop kamailio >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
pip_log=$(mktemp)
target=.
[ "$want_test" = 1 ] && target='.[test]'
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"; } >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    echo "setup: pip install failed" >&2
    exit 1
fi
rm -f "$pip_log"
.venv/bin/python -c 'import t38.spandsp' || { echo "setup: spandsp does not load" >&2; exit 1; }
# The native RTP path is optional: without it every G.711 call runs the (slower) Python tick.
if ! .venv/bin/python -m t38.native_rtp >/dev/null; then
    echo "setup: the native G.711 path did not build; G.711 calls will use the Python tick" >&2
fi
.venv/bin/vfax --help >/dev/null || { echo "setup: the vfax command does not run" >&2; exit 1; }
echo "setup: ready (.venv/bin/vfax)"
