#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite: lint, then pytest on both cores.
# Kamailio and pjsua2 peers are started and stopped by the test fixtures themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
# Tests marked "load" (the 1,000-job cluster run, 2 minutes alone) are left out unless the caller passes
# its own -m (bash scripts/test.sh -m load runs just them; -m "" everything). worksteal: a worker that
# runs out of tests takes some from the other, so one long test at the end does not idle a core.
marks=(-m "not load")
for arg in "$@"; do
    case "$arg" in -m|-m*) marks=() ;; esac
done
exec .venv/bin/pytest -n "${VFAX_TEST_WORKERS:-2}" --dist worksteal -p no:cacheprovider "${marks[@]}" "$@"
