#!/usr/bin/env bash
# Set up vfax and run the main job: two vfax devices on 127.0.0.1 in one process, the bundled sample
# document faxed over real SIP calls, first in T.38 and then in G.711 (about 2½ minutes each).
# The received TIFF, PDF and call report of each fax land in ./out/demo/inbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vfax demo --out out/demo "$@"
