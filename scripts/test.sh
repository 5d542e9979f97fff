#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite: lint, then pytest on both cores.
# Kamailio and pjsua2 peers are started and stopped by the test fixtures themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
exec .venv/bin/pytest -n "${VFAX_TEST_WORKERS:-2}" -p no:cacheprovider "$@"
