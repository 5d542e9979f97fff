"""Alias kept for old command lines: the worker figures are `bench/cluster.py --part capacity`.

Faxes per minute and peak simultaneous calls of `vfax serve --workers 1` and `--workers 2`, with the CPU
of every process, are measured there (issue 13's one cluster bench; bench/README.md, "Cluster"). This
runs that part, uncapped, with whatever cluster.py options follow (the old --jobs/--channels/--mode/
--receivers are gone: --calls, --far-ends):

    .venv/bin/python bench/workers.py [--workers 1,2] [--calls 1,100,200,400] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster

if __name__ == "__main__":
    cluster.main(["--part", "capacity", "--worker-cpu", "0", *sys.argv[1:]])
