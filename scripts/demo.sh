#!/usr/bin/env bash
# Set up vfax and run the main job: fax the bundled sample document through two spandsp engines
# back to back in virtual time, first in T.38 and then in G.711 passthrough. Results land in ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
sample=$(.venv/bin/python -c 'from vfax.documents import sample_document; print(sample_document())')
.venv/bin/vfax simulate "$sample" --mode t38 --out out/t38
.venv/bin/vfax simulate "$sample" --mode g711 --out out/g711
