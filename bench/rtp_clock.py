"""Real-time cost of G.711 passthrough: N fax calls over RTP on loopback, one media clock.

Each call is two :class:`t38.audio_transport.RtpEndpoint` on 127.0.0.1, each bound to a
:class:`t38.engine.FaxSession` in audio mode (one sends a one-page fax, the other receives it), all
driven by the one shared 20 ms :class:`t38.audio_transport.MediaClock`; the calls start spread over
``--ramp`` seconds. Over ``--seconds`` of wall time it prints CPU milliseconds per call-second (both
ends of a call together, the unit Asterisk's 8.3 ms is quoted in), the same per second of media
actually moved (the honest figure when the process cannot keep up and the clock skips ticks), the
clock's wake-up lateness percentiles, slipped ticks, RTP loss and late counts, and resident memory
per call. With ``--loss P`` it instead runs each call to the end through a UDP relay
(:class:`t38.transport.ImpairmentRelay`) that loses that share of packets, and counts the faxes
received. Prints figures only; asserts nothing.

    /opt/vfax-venv/bin/python bench/rtp_clock.py --calls 100 400 --seconds 10
    /opt/vfax-venv/bin/python bench/rtp_clock.py --calls 20 --loss 0.001
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import rss_kib
from PIL import Image, ImageDraw

from t38.audio_transport import MediaClock, RtpEndpoint
from t38.engine import FaxConfig, FaxSession
from t38.impairment import Impairment
from t38.transport import ImpairmentRelay


def _page(path: Path) -> Path:
    """One standard-resolution A4 page, G4 TIFF, 1728 pixels wide (T.4 §2.2)."""
    im = Image.new("1", (1728, 1143), 1)
    d = ImageDraw.Draw(im)
    for i, y in enumerate(range(60, 1100, 20)):
        d.text((60 + (i * 37) % 400, y), f"line {i} vfax rtp clock benchmark", fill=0)
    im.save(path, compression="group4", dpi=(204, 98))
    return path


async def run(calls: int, seconds: float, ramp: float, tmp: Path) -> dict[str, float]:
    src = _page(tmp / "page.tif")
    clock = MediaClock.shared()
    clock.lateness.clear()
    gc.collect()
    rss0 = rss_kib()
    sessions: list[FaxSession] = []
    endpoints: list[RtpEndpoint] = []
    # Calls arrive spread over ``ramp`` seconds, as they would at a fax server; started all at once,
    # every call would reach the same spandsp step (opening the TIFF at DIS) in the same 20 ms tick.
    for n in range(calls):
        tx = FaxSession(calling=True, send_file=src, config=FaxConfig(ident="TX"), name=f"tx{n}")
        rx = FaxSession(calling=False, receive_file=tmp / f"rx{n}.tif", config=FaxConfig(), name=f"rx{n}")
        a = await RtpEndpoint(tx, ("127.0.0.1", 0), None).start()
        b = await RtpEndpoint(rx, ("127.0.0.1", 0), a.local_addr).start()
        assert a.local_addr is not None and b.local_addr is not None
        a.set_remote(b.local_addr)
        sessions += [tx, rx]
        endpoints += [a, b]
        await asyncio.sleep(ramp / calls)
    rss1 = rss_kib()
    await asyncio.sleep(0.5)
    ticks0, slipped0 = clock.ticks, clock.slipped
    clock.lateness.clear()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    sys_cpu = ru1.ru_stime - ru0.ru_stime
    pct = clock.lateness_percentiles(50, 90, 99, 100)
    stats = [e.stats() for e in endpoints]
    out = {
        "calls": calls,
        "wall_s": wall,
        "cpu_ms_per_call_s": cpu * 1000 / (calls * wall),
        # per second of media actually moved: differs from the above only when the clock fell behind
        "cpu_ms_per_media_s": cpu * 1000 / (calls * max(1, clock.ticks - ticks0) * clock.interval),
        "sys_share": sys_cpu / cpu if cpu else 0.0,
        "ticks_per_s": (clock.ticks - ticks0) / wall,
        "slipped": clock.slipped - slipped0,
        "late_p50_ms": pct[50],
        "late_p90_ms": pct[90],
        "late_p99_ms": pct[99],
        "late_max_ms": pct[100],
        "rtp_lost": sum(s.received.lost for s in stats),
        "rtp_late": sum(s.received.late for s in stats),
        "frames_missing": sum(s.received.frames_missing for s in stats),
        "failed_sessions": sum(1 for s in sessions if s.result is not None and not s.result.ok),
        "rss_kib_per_call": (rss1 - rss0) / calls,
    }
    for e in endpoints:
        e.close()
    for s in sessions:
        s.close()
    await asyncio.sleep(0.1)
    return out


async def run_through_relay(calls: int, loss: float, tmp: Path, timeout: float = 180.0) -> dict[str, float]:
    """``calls`` one-page ECM faxes at once, each through its own seeded loss relay, to the end."""
    src = _page(tmp / "page.tif")
    results: list[tuple[bool, int, int]] = []

    async def one(n: int) -> None:
        relay = ImpairmentRelay(Impairment(loss=loss, seed=2 * n), Impairment(loss=loss, seed=2 * n + 1))
        await relay.start()
        tx = FaxSession(calling=True, send_file=src, config=FaxConfig(ident="TX"), name=f"tx{n}")
        rx = FaxSession(calling=False, receive_file=tmp / f"rx{n}.tif", config=FaxConfig(), name=f"rx{n}")
        a = await RtpEndpoint(tx, ("127.0.0.1", 0), relay.addr_for_a).start()
        b = await RtpEndpoint(rx, ("127.0.0.1", 0), relay.addr_for_b).start()
        t0 = time.monotonic()
        while not (tx.done and rx.done) and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.2)
        sa, sb = a.stats(), b.stats()
        a.close()
        b.close()
        relay.close()
        tx.close()
        rx.close()
        ok = rx.result is not None and rx.result.ok and rx.result.pages == 1
        missing = sa.received.frames_missing + sb.received.frames_missing
        results.append((ok, missing, sa.received.late + sb.received.late))

    await asyncio.gather(*(one(n) for n in range(calls)))
    return {
        "calls": calls,
        "loss": loss,
        "received_ok": sum(1 for ok, _, _ in results if ok),
        "frames_missing": sum(m for _, m, _ in results),
        "rtp_late": sum(late for _, _, late in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured wall time")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which the calls start")
    ap.add_argument(
        "--loss",
        type=float,
        default=None,
        help="instead: run each call to the end through a relay losing this share of packets; count faxes",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("spandsp").setLevel(logging.CRITICAL)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(args.calls) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if args.loss is not None:
        for n in args.calls:
            with tempfile.TemporaryDirectory() as d:
                print(asyncio.run(run_through_relay(n, args.loss, Path(d))))
        return
    cols = [
        "calls",
        "cpu_ms_per_call_s",
        "cpu_ms_per_media_s",
        "sys_share",
        "ticks_per_s",
        "slipped",
        "late_p50_ms",
        "late_p90_ms",
        "late_p99_ms",
        "late_max_ms",
        "rtp_lost",
        "rtp_late",
        "frames_missing",
        "failed_sessions",
        "rss_kib_per_call",
    ]
    print(" ".join(f"{c:>14}" for c in cols))
    for n in args.calls:
        with tempfile.TemporaryDirectory() as d:
            r = asyncio.run(run(n, args.seconds, args.ramp, Path(d)))
        print(" ".join(f"{r[c]:>14.2f}" if isinstance(r[c], float) else f"{r[c]:>14}" for c in cols))


if __name__ == "__main__":
    main()
