"""How far a burst of uploads through the API pushes the media clock of calls in progress.

A `vfax serve` (SQLite, one device, G.711 so that the media clock matters) sends ``--calls`` faxes to a
loopback `vfax receive`; once they are all on the line, ``--uploads`` multi-page PDFs are posted at once
from ``--threads`` threads (scheduled an hour ahead, so that only their conversion costs CPU). Printed:
the upload burst's duration, how often and how far the service logged its media clock behind
(``media clock N ms behind``) from the burst's start until the calls ended, and the calls' outcome.
For a before/after figure, run this file from a worktree of the older commit (it runs its own checkout).

    .venv/bin/python bench/upload_burst.py [--calls 8] [--uploads 40] [--threads 8] [--pages 4]
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import code_version  # noqa: E402
from tests import docfactory  # noqa: E402
from tests.serve_process import Receiver, ServeProcess, free_port, wait_for, write_config  # noqa: E402

TOKEN = "bench-upload-burst-0123456789"
BEHIND = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*media clock (\d+) ms behind")


def lags_after(log: Path, since: float) -> list[int]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        match = BEHIND.match(line)
        if match and time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S")) >= int(since):
            out.append(int(match.group(2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--uploads", type=int, default=40)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--pages", type=int, default=4)
    ap.add_argument("--resolution", default="fine", choices=("standard", "fine", "superfine"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vfax-burst-") as tmp_name:
        tmp = Path(tmp_name)
        far = Receiver("127.0.0.1", tmp, options=("--channels", str(args.calls + 4)))
        api = f"127.0.0.1:{free_port()}"
        line = {"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "channels": args.calls, "t38": "off"}
        config = write_config(tmp / "node", api=api, token=TOKEN, device=line)
        node = ServeProcess("node", config, api, TOKEN, args=("--workers", "1"), client_timeout=300)
        letter = docfactory.text_pdf(tmp / "letter.pdf", pages=2)
        upload = docfactory.text_pdf(tmp / "upload.pdf", pages=args.pages)
        try:
            node.start()
            jobs = [node.submit(letter, far.uri) for _ in range(args.calls)]
            wait_for(lambda: sum(1 for j in node.get("/v1/jobs")["jobs"] if j["state"] == "in_flight")
                     >= args.calls and len(node.get("/v1/nodes")["nodes"][0]["info"].get("calls", []))
                     >= args.calls, 60, "the calls did not all start")  # fmt: skip
            time.sleep(8)  # past call set-up: the calls are in T.30 now
            start = time.time()
            later = str(int(start + 3600))
            fields = {"not_before": later, "resolution": args.resolution}
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda _: node.submit(upload, far.uri, **fields), range(args.uploads)))
            burst = time.time() - start
            finals = [node.final(j, 300) for j in jobs]
            lags = lags_after(node.log, start)
        finally:
            node.stop()
            far.close()
        result = {
            "code": code_version(),
            "calls": args.calls, "uploads": args.uploads, "threads": args.threads, "pages": args.pages,
            "resolution": args.resolution,
            "burst_s": round(burst, 2), "uploads_per_s": round(args.uploads / burst, 2),
            "behind_lines": len(lags), "behind_max_ms": max(lags, default=0),
            "completed": sum(1 for j in finals if j["state"] == "completed"),
        }  # fmt: skip
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['code']}: {args.uploads} uploads of {args.pages} pages in {burst:.1f} s"
                  f" ({result['uploads_per_s']}/s) while {args.calls} G.711 calls ran:"
                  f" media clock behind {len(lags)} times, at most {result['behind_max_ms']} ms;"
                  f" {result['completed']}/{args.calls} faxes completed")  # fmt: skip


if __name__ == "__main__":
    main()
