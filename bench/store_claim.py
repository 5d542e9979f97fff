"""Job claim latency at 1,000 queued jobs: SQLite (one file) and PostgreSQL (its own private server).

For each backend: queue ``--jobs`` jobs (default 1,000) with mixed priorities, then ``--claimers`` threads
(default 1 and 2, each its own store object = its own node) claim until the queue is empty and finish
each job at once (one terminal event), as the controller does. The latency of every ``claim_next`` call
is timed (the last, empty claim of each thread included) and printed as p50/p95/max with the claims per
second of the whole run. PostgreSQL is started the way the test fixture starts it
(tests/peers/postgres.PostgresServer: Debian's binaries, a temporary data directory, fsync on).
Prints a table; asserts nothing.

    .venv/bin/python bench/store_claim.py [--jobs 1000] [--claimers 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import code_version

from tests.peers.postgres import PostgresServer, find_bindir
from vfax.status import FaxStatus
from vfax.store.retry import AttemptResult
from vfax.store.sqlite import SqliteJobStore


def run(make: Callable[[str], Any], jobs: int, claimers: int, document: Path) -> dict[str, float]:
    seed = make("seed")
    for i in range(jobs):
        seed.submit(document, f"sip:{1000 + i}@127.0.0.1", priority=i % 3)
    seed.close()
    stores = [make(f"node-{n}") for n in range(claimers)]
    latencies: list[list[float]] = [[] for _ in range(claimers)]
    done = [0] * claimers
    start = threading.Barrier(claimers + 1)

    def worker(n: int) -> None:
        store = stores[n]
        start.wait()
        while True:
            t0 = time.perf_counter()
            job = store.claim_next()
            latencies[n].append(time.perf_counter() - t0)
            if job is None:
                return
            store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1))
            done[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(claimers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for s in stores:
        s.close()
    ms = sorted(x * 1000 for lat in latencies for x in lat)
    if sum(done) != jobs:
        raise SystemExit(f"claimed {sum(done)} of {jobs} jobs")
    return {
        "p50": statistics.median(ms),
        "p95": ms[min(len(ms) - 1, int(len(ms) * 0.95))],
        "max": ms[-1],
        "per_s": jobs / wall,
    }


def measure(jobs: int, claimers: list[int], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per (backend, claimer count): p50/p95/max ms of ``claim_next`` and jobs per second; a
    ``postgresql`` row with ``skipped`` when the server is not installed. ``log`` gets each row's text as
    it is measured (bench/cluster.py imports this)."""
    tmp = Path(tempfile.mkdtemp(prefix="vfax-bench-store-"))
    document = tmp / "doc.tif"
    document.write_bytes(b"II*\x00" + bytes(20_000))  # a one-page fax is some 20-50 KiB
    rows: list[dict[str, Any]] = []

    def add(backend: str, claimers: int, r: dict[str, float]) -> None:
        rows.append({"backend": backend, "claimers": claimers, "jobs": jobs, **r})
        log(f"{backend:<11} {claimers:>8} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['max']:>8.2f}"
            f" {r['per_s']:>8.0f}")

    log(f"{'backend':<11} {'claimers':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'jobs/s':>8}")
    server = None
    if find_bindir() is not None:
        server = PostgresServer()
        server.start()
    try:
        for n in claimers:
            db = tmp / f"sqlite-{n}.db"
            add("sqlite", n, run(lambda owner, db=db: SqliteJobStore(db, owner=owner), jobs, n, document))
        if server is None:
            reason = "not installed (Debian: apt-get install postgresql)"
            log(f"postgresql: {reason}, skipped")
            rows.append({"backend": "postgresql", "skipped": reason})
            return rows
        from vfax.store.postgres import PostgresJobStore

        for n in claimers:
            url = server.create_database(f"bench_{n}")
            r = run(lambda owner, url=url: PostgresJobStore(url, owner=owner), jobs, n, document)
            add("postgresql", n, r)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"code {code_version()}; {args.jobs} queued jobs; claim + finish per job; latency of claim_next")
    measure(args.jobs, args.claimers)


if __name__ == "__main__":
    main()
