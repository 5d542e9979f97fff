"""bench/cluster.py keeps running: its smallest configuration of each part (``--smoke``) produces its figures.

Why a test for a benchmark: the bench drives real `vfax serve` processes, Kamailio and PostgreSQL
through the test peers and the service's API; any of those may change under it. The parts (and the two
failover scenarios) run as separate processes at once: each mostly waits on real-time faxes, so the
test stays near a minute.
Only that every figure was produced is checked, never a value: benchmarks measure, people judge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.peers.kamailio import find_kamailio
from tests.peers.postgres import find_bindir

ROOT = Path(__file__).resolve().parent.parent
PARTS = {
    "capacity": [],
    "claim": [],
    "failover-a": ["--failover", "a"],
    "failover-b": ["--failover", "b"],
}


def run_parts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    procs = {}
    for part, extra in PARTS.items():
        out, err = (tmp_path / f"{part}.json").open("wb"), (tmp_path / f"{part}.log").open("wb")
        with out, err:
            procs[part] = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "cluster.py"), "--smoke", "--json",
                 "--part", part.split("-")[0], *extra],
                cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out, stderr=err,
            )  # fmt: skip
    results = {}
    for part, proc in procs.items():
        try:
            code = proc.wait(240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            code = "timeout"
        log = (tmp_path / f"{part}.log").read_text(errors="replace")
        print(f"--- {part} ---\n{log}")
        assert code == 0, f"{part}: exit {code}\n{log[-4000:]}"
        results[part] = json.loads((tmp_path / f"{part}.json").read_text())
    return results


def test_smoke_run_of_every_part_prints_its_figures(tmp_path: Path) -> None:
    if find_kamailio() is None or find_bindir() is None:
        pytest.skip("needs kamailio and PostgreSQL (Debian packages kamailio, postgresql)")
    results = run_parts(tmp_path)

    capacity = results["capacity"]["capacity"]
    assert [r["workers"] for r in capacity["ramps"]] == [1, 2]
    for ramp in capacity["ramps"]:
        assert ramp["error"] is None, ramp
        [step] = ramp["steps"]
        assert step["calls"] == 1 and step["completed"] + step["failed"] == 1, step
        assert {"worker0", "far0", "other"} <= set(step["cpu_s"]), step
        assert step["packets"] > 0 or not step["far_ok"], step
    assert "supervisor" in capacity["ramps"][1]["steps"][0]["cpu_s"]
    assert capacity["verdicts"] and "target 1.8x" in capacity["verdicts"][0]["text"]

    rows = results["claim"]["claim"]["rows"]
    assert {(r["backend"], r["claimers"]) for r in rows} == {("sqlite", 1), ("postgresql", 1)}, rows
    assert all(r["p50"] > 0 for r in rows), rows

    dispatcher = results["failover-a"]["failover"]["dispatcher"]
    assert "error" not in dispatcher, dispatcher
    assert dispatcher["idle_down_s"] is not None and len(dispatcher["calls"]) == 2, dispatcher
    jobs = results["failover-b"]["failover"]["jobs"]
    assert "error" not in jobs, jobs
    assert jobs["killed_node"] != jobs["retried_by"], jobs
    assert jobs["kill_to_retry_dial_s"] is not None and jobs["terminal_events"], jobs
