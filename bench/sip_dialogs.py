"""SIP dialog throughput and memory: vfax calls vfax through Kamailio, N simultaneous dialogs in a process.

For each N (default 100, 500, 1000): user agent B registers at Kamailio as 1002; user agent A sends N
INVITEs to ``sip:1002@vfax.test`` through the proxy (Record-Route on, so ACK and BYE traverse it too),
waits until all N dialogs are confirmed at both ends, measures the process RSS growth, then sends N BYEs.
Reports dialogs per second over the whole INVITE/200/ACK/BYE cycle and memory per dialog (both ends of
a dialog live in this process, so the figure covers caller and callee). Kamailio is started the way the
test fixture starts it (tests/peers/kamailio.py), with 127.0.0.1 trusted so INVITEs are not challenged.
Prints a table; asserts nothing.

    /opt/vfax-venv/bin/python bench/sip_dialogs.py [--sizes 100 500 1000] [--window 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import rss_kib

from sip.registration import Registration
from sip.useragent import IncomingInvite, InviteResult, UserAgent
from tests.peers.kamailio import KamailioServer, find_kamailio

SDP_A = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"


async def run_size(kam: KamailioServer, n: int, window: int, traced: bool = False) -> dict[str, float]:
    a = await UserAgent.create(contact_user="1001")
    b = await UserAgent.create(contact_user="1002")
    reg = Registration(b, kam.uri, "1002", "secret1002", domain=kam.realm)
    if not (await reg.start()).ok:
        raise SystemExit("registration at Kamailio failed")
    confirmed = 0

    async def answer(incoming: IncomingInvite) -> None:
        nonlocal confirmed
        session = await incoming.accept(SDP_B)
        await session.confirmed
        confirmed += 1

    b.on_invite = answer
    gate = asyncio.Semaphore(window)

    async def one() -> InviteResult:
        async with gate:
            return await a.invite(f"sip:1002@{kam.realm}", SDP_A, proxy=kam.uri)

    gc.collect()
    before = rss_kib()
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)))
    ok = sum(1 for r in results if r.ok)
    for _ in range(600):
        if confirmed >= ok:
            break
        await asyncio.sleep(0.05)
    t1 = time.perf_counter()
    gc.collect()
    during = rss_kib()
    traced_bytes = 0
    if traced:
        traced_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    failed = n - ok
    if failed:
        print(f"n={n}: {failed} INVITEs failed:", sorted({(r.status, r.reason) for r in results if not r.ok}))
        bad = next(r for r in results if not r.ok)
        if bad.response is not None and "-v" in sys.argv:
            t_start = a.ladder(bad.response.call_id)[0][0]
            for t, d, first in a.ladder(bad.response.call_id):
                print(f"  {t - t_start:7.3f} {d:3} {first}")

    async def hangup(r: InviteResult) -> None:
        if r.session is not None:
            async with gate:
                await r.session.bye()

    await asyncio.gather(*(hangup(r) for r in results))
    t2 = time.perf_counter()
    sent = a.core.stats["sent"] + b.core.stats["sent"]
    await reg.stop()
    await a.close(hangup=False)
    await b.close(hangup=False)
    return {
        "n": n,
        "failed": failed,
        "setup_s": t1 - t0,
        "teardown_s": t2 - t1,
        "dialogs_per_s": n / (t2 - t0),
        "msgs_per_dialog": sent / n,
        "kib_per_dialog": (during - before) / n,
        "traced_kib_per_dialog": traced_bytes / 1024 / n,
    }


async def main_async(sizes: list[int], window: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="vfax-bench-") as tmp:
        kam = KamailioServer(Path(tmp) / "kamailio", trusted=["127.0.0.1"], shm_mb=256, pkg_mb=16, children=4)
        kam.start()
        try:
            rows = [await run_size(kam, n, window) for n in sizes]
            for row, n in zip(rows, sizes, strict=True):  # a second pass for Python-level memory
                row["traced_kib_per_dialog"] = (await run_size(kam, n, window, traced=True))[
                    "traced_kib_per_dialog"
                ]
            return rows
        finally:
            kam.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--window", type=int, default=50, help="INVITE/BYE transactions in flight at once")
    parser.add_argument("-v", action="store_true", help="show the ladder of a failed INVITE")
    args = parser.parse_args()
    if find_kamailio() is None:
        raise SystemExit("kamailio is not installed")
    rows = asyncio.run(main_async(args.sizes, args.window))
    print(
        f"{'dialogs':>8} {'failed':>7} {'setup s':>8} {'teardown s':>11} {'dialogs/s':>10} "
        f"{'sent/dlg':>9} {'RSS KiB/dlg':>12} {'traced KiB/dlg':>15}"
    )
    for r in rows:
        print(
            f"{r['n']:>8} {r['failed']:>7} {r['setup_s']:>8.2f} {r['teardown_s']:>11.2f} "
            f"{r['dialogs_per_s']:>10.1f} {r['msgs_per_dialog']:>9.1f} {r['kib_per_dialog']:>12.1f} "
            f"{r['traced_kib_per_dialog']:>15.1f}"
        )
    print("(sent/dlg: messages our two UAs sent per dialog; 6 without retransmissions: INVITE, 100, 200,")
    print(" ACK, BYE, 200. Both ends of each dialog live in this process. RSS is noisy after the first")
    print(" size, as freed memory is reused; 'traced' is what Python objects hold, measured by tracemalloc)")


if __name__ == "__main__":
    main()
