"""Faxes completed per minute by `vfax serve --workers 1` and `--workers 2` on this machine.

For each worker count: a fresh `vfax serve` (SQLite store in a temporary directory, one device on
127.0.0.1), loopback `vfax receive` processes as far ends (on the same machine: they take CPU too), a
batch of one-page standard-resolution jobs submitted at once through the API, spread over the receivers.
Figure: completed jobs per minute between the first submission and the last terminal state. Nothing is
asserted; the jobs that did not complete are counted and printed.

    .venv/bin/python bench/workers.py [--jobs 24] [--channels 24] [--mode g711|t38] [--workers 1,2]

A one-page fax lasts a fixed real time (about 10-20 s), so with enough channels a batch is limited by
CPU only when the calls saturate a core: G.711 (the modem in software, spandsp) does; T.38 mostly does
not. Worker processes can only help with the former.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import code_version  # noqa: E402
from tests import docfactory  # noqa: E402

TOKEN = "bench-workers-token-0123456789"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VFAX_")}
    return dict(clean, PYTHONPATH=str(ROOT))


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "vfax.cli", *argv], cwd=ROOT, env=env(),
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    tmp.mkdir(parents=True)
    api_port = free_port()
    sip_port = free_port(socket.SOCK_DGRAM)
    t38 = "off" if args.mode == "g711" else "auto"
    config = tmp / "vfax.toml"
    config.write_text(f"""
data_dir = "{tmp / "data"}"
log_level = "warning"
[api]
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"
[retry]
max_attempts = 1
[[devices]]
name = "line1"
listen = "127.0.0.1:{sip_port}"
transports = ["udp"]
channels = {args.channels}
t38 = "{t38}"
""")
    receivers = []
    ports = []
    for i in range(args.receivers):
        port = free_port(socket.SOCK_DGRAM)
        argv = ["receive", "--listen", f"127.0.0.1:{port}", "--inbox", str(tmp / f"far{i}"),
                "--channels", str(args.jobs), "--t38", t38]  # fmt: skip
        receivers.append(spawn(argv, tmp / f"far{i}.log"))
        ports.append(port)
    log = tmp / "serve.log"
    serve = spawn(["serve", "--config", str(config), "--workers", str(workers)], log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            up = len(re.findall(r"worker \d+ ready", text)) >= workers if workers > 1 else "API at" in text
            if up or serve.poll() is not None:
                break
            time.sleep(0.3)
        if serve.poll() is not None:
            raise SystemExit(f"vfax serve exited:\n{log.read_text()}")
        time.sleep(2)  # the receivers are up too (they start faster than the service)
        doc = docfactory.text_pdf(tmp / "doc.pdf", pages=1)
        body = doc.read_bytes()
        start = time.monotonic()
        jobs = []
        for i in range(args.jobs):
            form = {"to": f"sip:fax@127.0.0.1:{ports[i % len(ports)]}", "resolution": "standard", "t38": t38}
            r = client.post("/v1/jobs", data=form, files={"document": ("doc.pdf", body, "application/pdf")})
            r.raise_for_status()
            jobs.append(r.json()["id"])
        submitted = time.monotonic() - start
        final: dict[str, str] = {}
        last = start
        while len(final) < len(jobs) and time.monotonic() - start < args.timeout:
            for j in jobs:
                if j not in final:
                    state = client.get(f"/v1/jobs/{j}").json()["state"]
                    if state in ("completed", "failed", "cancelled"):
                        final[j] = state
                        last = time.monotonic()
            time.sleep(0.5)
        completed = sum(1 for s in final.values() if s == "completed")
        span = last - start
        return {
            "workers": workers,
            "jobs": len(jobs),
            "completed": completed,
            "not_completed": len(jobs) - completed,
            "submit_s": submitted,
            "span_s": span,
            "per_min": completed / span * 60 if span > 0 else 0.0,
        }
    finally:
        client.close()
        stop(serve)
        for r in receivers:
            stop(r)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=24, help="one-page jobs per run (default 24)")
    p.add_argument("--channels", type=int, default=24, help="device channels per worker (default 24)")
    p.add_argument("--mode", choices=("g711", "t38"), default="g711", help="media (default g711)")
    p.add_argument("--receivers", type=int, default=2, help="loopback vfax receive processes (default 2)")
    p.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated (default 1,2)")
    p.add_argument("--timeout", type=float, default=300, help="give a run up after this many seconds")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"vfax {code_version()}, {os.cpu_count()} cores, {args.jobs} one-page standard jobs per run,"
          f" {args.mode}, {args.channels} channels per worker, {args.receivers} loopback receivers")
    results = []
    with tempfile.TemporaryDirectory(prefix="vfax-bench-workers-") as tmp:
        for w in counts:
            res = run(w, args, Path(tmp) / f"w{w}")
            results.append(res)
            print(f"--workers {w}: {res['completed']}/{res['jobs']} completed in {res['span_s']:.1f} s"
                  f" (submitted in {res['submit_s']:.1f} s): {res['per_min']:.1f} faxes/min", flush=True)
    if len(results) >= 2 and results[0]["per_min"] > 0:
        print(f"ratio --workers {counts[-1]} / --workers {counts[0]}: "
              f"{results[-1]['per_min'] / results[0]['per_min']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
