#!/bin/sh
# Health check of the lab's Asterisk (compose.yaml runs it as `sh` in the asterisk container): healthy
# when the CLI answers and the modules the lab's faxes need are running. Exit 0 healthy, 1 not.
#
# Why not the image's /usr/local/bin/healthcheck.sh: it pipes `asterisk -rx` into `grep -q` under
# `pipefail`; grep leaves at its first match, the CLI still writing gets SIGPIPE (exit 141) and the
# check fails at random (6 of 20 runs against Asterisk 22). Here each answer of the CLI is read whole
# into a variable and tested afterwards: no pipe, so no reader can leave early.
set -u

# What the lab needs running (each is also `require`d in modules.conf).
MODULES="chan_pjsip.so res_pjsip.so res_pjsip_t38.so res_fax.so res_fax_spandsp.so"

unhealthy() {
    echo "asterisk unhealthy: $*"
    exit 1
}

# One CLI command; its whole answer on stdout. Bounded below compose's 10 s healthcheck timeout.
cli() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 8 asterisk -rx "$1" 2>&1
    else
        asterisk -rx "$1" 2>&1
    fi
}

# Whether the answer of `module show` ($2) lists module $1 as Running (not "Not Running").
running() {
    while IFS= read -r line; do
        case $line in
            "$1 "*"Not Running"*) return 1 ;;
            "$1 "*" Running "* | "$1 "*" Running") return 0 ;;
        esac
    done <<EOF
$2
EOF
    return 1
}

uptime=$(cli "core show uptime") || unhealthy "the CLI does not answer: $uptime"
case $uptime in
    *"System uptime:"*) ;;
    *) unhealthy "unexpected answer to 'core show uptime': $uptime" ;;
esac

modules=$(cli "module show") || unhealthy "'module show' failed: $modules"
for module in $MODULES; do
    running "$module" "$modules" || unhealthy "$module is not running"
done
echo "asterisk healthy: CLI answers, $MODULES running"
exit 0
