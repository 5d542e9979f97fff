"""Virtual-time speed of the fax engine: line seconds per CPU second, ours against raw spandsp.

Runs the same 3-page fine document (the bundled sample) back to back, in T.38 and in G.711, twice:
1. ``raw``: a minimal cffi loop that calls spandsp directly (fax_tx/fax_rx with G.711 companding,
   or t38_terminal_send_timeout/t38_core_rx_ifp_packet): what spandsp itself costs;
2. ``vfax``: FaxSession + run_back_to_back, the code `vfax simulate` runs.
The difference is what our Python layer costs. Prints a table; asserts nothing.

    .venv/bin/python bench/engine_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t38 import spandsp
from t38.engine import FaxConfig, FaxSession, Media
from t38.virtual_line import run_back_to_back
from vfax.documents import Resolution, prepare_fax_tiff, sample_document

ffi, lib = spandsp.ffi, spandsp.lib


class _Done(spandsp.T30Listener):
    def __init__(self) -> None:
        self.code: int | None = None
        self.packets: list[bytes] = []

    def on_phase_e(self, completion_code: int) -> None:
        self.code = completion_code

    def on_t38_packet(self, ifp: bytes, count: int) -> None:
        self.packets.append(ifp)


def raw_audio(src: Path, dst: Path) -> tuple[float, float]:
    la, lb = _Done(), _Done()
    a, b = spandsp.FaxAudio(True, la, "a"), spandsp.FaxAudio(False, lb, "b")
    lib.t30_set_tx_file(a.t30, str(src).encode(), -1, -1)
    lib.t30_set_rx_file(b.t30, str(dst).encode(), -1)
    ga, gb = spandsp.G711Codec(True), spandsp.G711Codec(True)
    pa, pb = ffi.new("int16_t[160]"), ffi.new("int16_t[160]")
    ua, ub = ffi.new("uint8_t[160]"), ffi.new("uint8_t[160]")
    steps = 0
    t0 = time.process_time()
    while (la.code is None or lb.code is None) and steps < 50 * 600:
        a.tx(pa, 160)
        b.tx(pb, 160)
        ga.encode(pa, 160, ua)
        gb.encode(pb, 160, ub)
        ga.decode(ua, 160, pa)
        gb.decode(ub, 160, pb)
        b.rx(pa, 160)
        a.rx(pb, 160)
        steps += 1
    cpu = time.process_time() - t0
    a.close()
    b.close()
    assert la.code == 0 and lb.code == 0, (la.code, lb.code)
    return steps * 0.02, cpu


def raw_t38(src: Path, dst: Path) -> tuple[float, float]:
    la, lb = _Done(), _Done()
    a, b = spandsp.FaxT38(True, la, "a"), spandsp.FaxT38(False, lb, "b")
    for e in (a, b):
        e.configure(
            version=0,
            max_datagram=400,
            max_bit_rate=14400,
            transferred_tcf=True,
            packet_repeats=0,
            paced=True,
        )
    lib.t30_set_tx_file(a.t30, str(src).encode(), -1, -1)
    lib.t30_set_rx_file(b.t30, str(dst).encode(), -1)
    sa = sb = 0
    steps = 0
    t0 = time.process_time()
    while (la.code is None or lb.code is None) and steps < 50 * 600:
        a.advance(160)
        b.advance(160)
        for p in la.packets:
            b.rx_ifp(p, sa)
            sa += 1
        la.packets.clear()
        for p in lb.packets:
            a.rx_ifp(p, sb)
            sb += 1
        lb.packets.clear()
        steps += 1
    cpu = time.process_time() - t0
    a.close()
    b.close()
    assert la.code == 0 and lb.code == 0, (la.code, lb.code)
    return steps * 0.02, cpu


def ours(src: Path, dst: Path, media: Media) -> tuple[float, float]:
    tx = FaxSession(calling=True, send_file=src, config=FaxConfig(), media=media)
    rx = FaxSession(calling=False, receive_file=dst, config=FaxConfig(), media=media)
    t0 = time.process_time()
    r = run_back_to_back(tx, rx)
    cpu = time.process_time() - t0
    tx.close()
    rx.close()
    assert r.answering.ok, r.answering
    return r.line_seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        doc = prepare_fax_tiff(sample_document(), work / "send.tif", resolution=Resolution.FINE)
        print(f"document: bundled sample, {doc.pages} pages, fine; best and median of {args.repeat} runs")
        print(
            f"{'mode':6} {'runner':5} {'line s':>7} {'cpu s (best)':>12} {'x real time':>11} {'median x':>9}"
        )
        for mode, raw, media in (("t38", raw_t38, Media.T38), ("g711", raw_audio, Media.AUDIO)):
            best: dict[str, float] = {}
            for name, fn in (
                ("raw", lambda s, d, raw=raw: raw(s, d)),
                ("vfax", lambda s, d, m=media: ours(s, d, m)),
            ):
                runs = [fn(doc.path, work / f"rx-{mode}-{name}-{i}.tif") for i in range(args.repeat)]
                line = runs[0][0]
                cpus = [c for _, c in runs]
                best[name] = min(cpus)
                print(
                    f"{mode:6} {name:5} {line:7.1f} {min(cpus):12.4f} {line / min(cpus):11.0f} "
                    f"{line / statistics.median(cpus):9.0f}"
                )
            share = max(0.0, 1 - best["raw"] / best["vfax"])
            print(f"{mode:6} our Python layer: {share:.0%} of the CPU, spandsp itself: {1 - share:.0%}")


if __name__ == "__main__":
    main()
