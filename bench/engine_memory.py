"""Resident memory of spandsp fax engines over a fax: where the per-call memory of ``bench/calls.py`` goes.

N sending/receiving :class:`t38.engine.FaxSession` pairs (one standard-resolution page, ECM) run in
lockstep in virtual time, as calls that started together would: in T.38 the IFPs go straight from
one engine to the other, in G.711 the audio does. Every 2.5 s of line time it prints the process's
resident memory above its level before the engines, per pair (one pair = both ends of one call), and
at the end the peak and when it happened. No sockets, no SIP, no Python call objects: this is
spandsp's share (plus our thin engine wrappers). Prints figures only; asserts nothing.

    /opt/vfax-venv/bin/python bench/engine_memory.py [--pairs 100] [--media t38|g711]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import code_version, rss_kib
from rtp_clock import _page

from t38.engine import FRAME_SAMPLES, FaxConfig, FaxSession, Media


def run(pairs: int, media: Media, tmp: Path) -> None:
    src = _page(tmp / "page.tif")
    gc.collect()
    base = rss_kib()
    calls: list[tuple[FaxSession, FaxSession]] = []
    for n in range(pairs):
        tx = FaxSession(calling=True, send_file=src, config=FaxConfig(ident="TX"), media=media, name=f"t{n}")
        rx = FaxSession(
            calling=False, receive_file=tmp / f"rx{n}.tif", config=FaxConfig(), media=media, name=f"r{n}"
        )
        calls.append((tx, rx))
    print(f"engines created: {(rss_kib() - base) / pairs:.0f} KiB per pair")
    peak, peak_at = 0, 0.0
    seq: dict[int, int] = {}
    for step in range(50 * 60):
        now = step * 0.02
        for tx, rx in calls:
            if media is Media.T38:
                for a, b in ((tx, rx), (rx, tx)):
                    a.advance(FRAME_SAMPLES)
                    for ifp in a.take_t38_tx():
                        k = seq[id(a)] = (seq.get(id(a), -1) + 1) & 0xFFFF
                        b.t38_rx(ifp, k)
            else:
                a_out = bytes(tx.audio_tx_bytes())
                b_out = bytes(rx.audio_tx_bytes())
                rx.audio_rx(a_out)
                tx.audio_rx(b_out)
        if step % 25 == 0:
            now_kib = (rss_kib() - base) / pairs
            if now_kib > peak:
                peak, peak_at = now_kib, now
            if step % 125 == 0:
                print(f"  {now:5.1f} s line time: {now_kib:5.0f} KiB per pair")
        if all(tx.done and rx.done for tx, rx in calls):
            break
    ok = sum(1 for _, rx in calls if rx.result is not None and rx.result.ok)
    print(f"  {now:5.1f} s line time: {(rss_kib() - base) / pairs:5.0f} KiB per pair (all in phase E)")
    print(f"received {ok}/{pairs}; peak {peak:.0f} KiB per pair at {peak_at:.1f} s of line time")
    for tx, rx in calls:
        tx.close()
        rx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--media", choices=("t38", "g711"), default="t38")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"code under test: {code_version()}; {args.pairs} pairs, {args.media}, one standard page, ECM")
    with tempfile.TemporaryDirectory(prefix="vfax-bench-mem-") as d:
        run(args.pairs, Media.T38 if args.media == "t38" else Media.AUDIO, Path(d))


if __name__ == "__main__":
    main()
