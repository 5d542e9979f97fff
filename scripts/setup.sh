#!/usr/bin/env bash
# Set up vfax on Debian 12 or 13 (or Ubuntu): system libraries (spandsp; Kamailio for the tests), a
# virtualenv in .venv, and the package itself. Safe to run again: it only installs what is missing.
#   scripts/setup.sh          run-time dependencies
#   scripts/setup.sh --test   also what the test suite needs (Kamailio, pytest, pjsua2, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
apt_updated=0
apt_update() {
    [ "$apt_updated" = 1 ] && return 0
    $SUDO apt-get update -qq
    apt_updated=1
}
installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
# Whether apt can install $1 (a real package with a version, not a virtual name or an unknown one).
# The answer is read whole before it is looked at: no `| grep -q` to cut apt-cache off under pipefail.
has_candidate() {
    local policy
    policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
    case $policy in
        *"Candidate: (none)"*) return 1 ;;
        *"Candidate: "*) return 0 ;;
        *) return 1 ;;
    esac
}

# spandsp's runtime library is libspandsp2 up to Debian 12 and Ubuntu 22.04, libspandsp2t64 from
# Debian 13 and Ubuntu 24.04 on (the 64-bit time_t transition): either one installed will do,
# otherwise install the one apt offers.
spandsp=""
for p in libspandsp2t64 libspandsp2; do
    installed "$p" && spandsp=$p && break
done
missing=()
if [ -z "$spandsp" ]; then
    has_candidate libspandsp2t64 || has_candidate libspandsp2 || apt_update
    for p in libspandsp2t64 libspandsp2; do
        has_candidate "$p" && spandsp=$p && break
    done
    if [ -z "$spandsp" ]; then
        echo "setup: apt offers neither libspandsp2t64 nor libspandsp2 (is the main component enabled?)" >&2
        exit 1
    fi
    missing+=("$spandsp")
fi
# gcc and libc6-dev build the native G.711 hot path (t38/native/, see README "Performance")
apt_pkgs=(gcc libc6-dev)
# the tests start their own Kamailio, PostgreSQL and dnsmasq (DNS: NAPTR/SRV) servers (tests/peers/) on
# ports they choose, and make network namespaces with iproute2 for the cluster tests; the NAT tests
# make a masquerading router namespace with nftables and move its bindings with conntrack; the console
# tests drive headless chromium through chromium-driver (Selenium)
[ "$want_test" = 1 ] && apt_pkgs+=(kamailio kamailio-tls-modules postgresql iproute2 dnsmasq nftables conntrack
                                   chromium chromium-driver)
for p in "${apt_pkgs[@]}"; do
    installed "$p" || missing+=("$p")
done
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3 python3-venv python3-pip)
    PYTHON=/usr/bin/python3
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's kamailio, postgresql and dnsmasq packages start system services (5060, 5432, 53); the tests
# run their own.
if [ "$want_test" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop kamailio postgresql dnsmasq >/dev/null 2>&1 || true
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
