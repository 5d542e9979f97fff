"""G.711 fax under random packet loss: how many one-page ECM faxes get through a lossy RTP path.

Twenty (``--calls``) vfax-to-vfax calls, each between its own pair of :class:`vfax.call.line.FaxLine` on
127.0.0.1, with ``t38=off`` at both ends so the fax stays in G.711 passthrough, ECM on, one page at
standard resolution. Each call's RTP crosses its own :class:`t38.transport.ImpairmentRelay` that loses
``--loss`` (default 0.1 %) of the packets in each direction, seeded per call (seeds ``2n`` and ``2n+1``),
so a run is repeatable up to real-time jitter. Calls run concurrently in real time, ``--batch`` at a
time (all of them by default), spread over ``--workers`` processes so the 20 ms media clock does not slip.

Bar from the project: spandsp fed zero-filled gaps gets about 4 of 20 through at 0.1 % loss; vfax (a
playout buffer that tells the modems which samples are missing) must get at least 15 of 20.

Prints, per call and in total: the RECEIVER's verdict (T.30 phase E OK with the page; this is the
number that counts), the sender's verdict, call duration, packets dropped by the relay, frames the
playout buffer reported missing, media clock slips, and the T.30 completion text of each failure.
Prints figures only; asserts nothing.

    /opt/vfax-venv/bin/python bench/g711_loss.py [--calls 20] [--loss 0.001] [--workers 2] [--batch 20]
        [--no-ecm] [--max-bit-rate 14400]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import code_version

from t38.audio_transport import MediaClock
from t38.impairment import Impairment
from t38.transport import ImpairmentRelay
from tests import docfactory
from vfax.call.fax_call import CallOptions, CallOutcome
from vfax.call.line import FaxLine, LineConfig
from vfax.call.media import T38Policy
from vfax.documents import Resolution, prepare_fax_tiff


@dataclass
class CallFigures:
    """What one call did, as plain values (sent back from a worker process)."""

    seed: int
    rx_ok: bool
    tx_ok: bool
    rx_pages: int
    rx_text: str
    tx_text: str
    rx_end: str
    tx_end: str
    media: str
    duration: float
    line_seconds: float
    dropped_a_to_b: int
    dropped_b_to_a: int
    frames_missing: int
    rtp_late: int
    slipped: int


def one_page(tmp: Path) -> Path:
    """A one-page text document prepared as TIFF-F at standard resolution (98 lines/inch)."""
    src = docfactory.text_pdf(tmp / "page.pdf", pages=1)
    return prepare_fax_tiff(src, tmp / "page.tif", resolution=Resolution.STANDARD).path


def _text(outcome: CallOutcome) -> str:
    r = outcome.result
    return "no T.30 result" if r is None else f"{r.code} {r.text}"


async def one_call(tiff: Path, tmp: Path, n: int, loss: float, ecm: bool, bit_rate: int) -> CallFigures:
    """One call from a fresh sender line to a fresh receiver line, its RTP through a lossy relay."""
    relay = ImpairmentRelay(Impairment(loss=loss, seed=2 * n), Impairment(loss=loss, seed=2 * n + 1))
    await relay.start()
    options = CallOptions(t38=T38Policy.OFF, ecm=ecm, max_bit_rate=bit_rate, max_call_seconds=180)
    rx = await FaxLine.open(LineConfig(name=f"rx{n}", inbox=tmp / f"inbox{n}", call=options))
    tx = await FaxLine.open(LineConfig(name=f"tx{n}", call=options))
    tx.route_media = lambda kind, addr: relay.addr_for_a
    rx.route_media = lambda kind, addr: relay.addr_for_b
    clock = MediaClock.shared()
    slipped0 = clock.slipped
    try:
        sent = await tx.send(tiff, rx.uri)
        received = (await asyncio.wait_for(rx.receptions.get(), 60)).outcome
    finally:
        await tx.close()
        await rx.close()
        relay.close()
    rr = received.result
    missing = late = 0
    for outcome in (sent, received):
        rtp = outcome.report.get("rtp") or {}
        missing += rtp.get("received", {}).get("frames_missing", 0)
        late += rtp.get("received", {}).get("late", 0)
    return CallFigures(
        seed=2 * n,
        rx_ok=received.ok and rr is not None and rr.pages == 1,
        tx_ok=sent.ok,
        rx_pages=rr.pages if rr else 0,
        rx_text=_text(received),
        tx_text=_text(sent),
        rx_end=received.end_reason,
        tx_end=sent.end_reason,
        media=received.media,
        duration=sent.duration_seconds,
        line_seconds=rr.line_seconds if rr else 0.0,
        dropped_a_to_b=relay.stats["a"].dropped,
        dropped_b_to_a=relay.stats["b"].dropped,
        frames_missing=missing,
        rtp_late=late,
        slipped=clock.slipped - slipped0,
    )


async def run_calls(
    numbers: list[int], loss: float, ecm: bool, bit_rate: int, batch: int
) -> list[CallFigures]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tiff = one_page(tmp)
        out: list[CallFigures] = []
        for i in range(0, len(numbers), batch):
            chunk = numbers[i : i + batch]
            out += await asyncio.gather(*(one_call(tiff, tmp, n, loss, ecm, bit_rate) for n in chunk))
        return out


def worker(args: tuple[list[int], float, bool, int, int]) -> tuple[list[CallFigures], float]:
    """One process's share of the calls, and the CPU seconds it spent on them."""
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("spandsp").setLevel(logging.CRITICAL)
    numbers, loss, ecm, bit_rate, batch = args
    cpu0 = time.process_time()
    figures = asyncio.run(run_calls(numbers, loss, ecm, bit_rate, batch))
    return figures, time.process_time() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--loss", type=float, default=0.001, help="share of packets lost in each direction")
    ap.add_argument("--workers", type=int, default=2, help="processes the calls are spread over")
    ap.add_argument("--batch", type=int, default=20, help="calls at a time in each process")
    ap.add_argument("--no-ecm", dest="ecm", action="store_false")
    ap.add_argument(
        "--max-bit-rate", type=int, default=14400, help="both ends' highest rate (9600: V.29, short training)"
    )
    args = ap.parse_args()
    workers = max(1, min(args.workers, args.calls))
    shares = [list(range(w, args.calls, workers)) for w in range(workers)]
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        parts = pool.map(worker, [(s, args.loss, args.ecm, args.max_bit_rate, args.batch) for s in shares])
    results = [f for figures, _ in parts for f in figures]
    cpu = sum(c for _, c in parts)
    wall = time.monotonic() - t0
    results.sort(key=lambda f: f.seed)
    print(f"code under test: {code_version()}")
    print(
        f"G.711 passthrough, {args.calls} one-page faxes, ECM {'on' if args.ecm else 'off'}, "
        f"at most {args.max_bit_rate} bit/s, "
        f"{args.loss * 100:g} % random loss each way, {workers} worker process(es), "
        f"{wall:.0f} s wall, {cpu:.0f} s CPU"
    )
    print(
        f"{'seed':>5} {'rx':>4} {'tx':>4} {'secs':>6} {'drop a>b':>8} {'drop b>a':>8} {'missing':>7} "
        f"{'slip':>5}  T.30 (receiver / sender)"
    )
    for f in results:
        print(
            f"{f.seed:>5} {'ok' if f.rx_ok else 'FAIL':>4} {'ok' if f.tx_ok else 'FAIL':>4} "
            f"{f.duration:>6.1f} "
            f"{f.dropped_a_to_b:>8} {f.dropped_b_to_a:>8} {f.frames_missing:>7} {f.slipped:>5}  "
            f"{f.rx_text} / {f.tx_text}"
        )
    rx_ok = sum(f.rx_ok for f in results)
    tx_ok = sum(f.tx_ok for f in results)
    print(f"received (receiver's T.30 result, 1 page, phase E OK): {rx_ok}/{len(results)}")
    print(f"sent (sender's T.30 result):                           {tx_ok}/{len(results)}")
    durations = [f.duration for f in results]
    good = [f.duration for f in results if f.rx_ok]
    print(
        f"mean call duration: {statistics.mean(durations):.1f} s all, "
        f"{statistics.mean(good) if good else float('nan'):.1f} s received"
    )
    print(
        f"relay drops: {sum(f.dropped_a_to_b for f in results)} sender->receiver, "
        f"{sum(f.dropped_b_to_a for f in results)} receiver->sender; "
        f"playout frames missing {sum(f.frames_missing for f in results)}, late packets "
        f"{sum(f.rtp_late for f in results)}; media clock ticks slipped while a call ran (summed over "
        f"calls) {sum(f.slipped for f in results)}"
    )
    for f in results:
        if not (f.rx_ok and f.tx_ok):
            print(
                f"failure seed {f.seed}: receiver '{f.rx_text}' ({f.rx_end}, {f.rx_pages} page(s)); "
                f"sender '{f.tx_text}' ({f.tx_end})"
            )


if __name__ == "__main__":
    main()
