"""Simultaneous fax calls through Kamailio: successes, stretch, CPU and memory per call, T.38 and G.711.

For each mode (``t38``, ``g711``) and each N, N vfax-to-vfax one-page faxes (standard resolution, ECM)
start at the same instant and go through Kamailio (registrar and record-routing proxy on 127.0.0.1,
started as the tests start it, 127.0.0.1 trusted so INVITEs are not challenged). The calls are spread
over ``--workers`` processes (spawned, default: one per CPU); each process runs one asyncio loop with
one receiving :class:`vfax.call.line.FaxLine` (registered as ``rx<w>``) and one sending line, and sends its
share of the calls to its own receiver through the proxy. A barrier across the processes starts all
calls at once. Mode ``t38`` is vfax's default policy (``auto`` at both ends: the call is answered in
G.711 and the receiver's re-INVITE moves it to T.38 before T.30 starts); mode ``t38direct`` offers
T.38 in the first INVITE (sender ``direct``, receiver ``auto``: no audio at all); mode ``g711`` is
``off`` at both ends (G.711 passthrough throughout, every call on the shared 20 ms media clock).

Before the loaded runs, one unloaded call (N=1, one worker) per mode gives the baseline duration.
Columns of the table:

- ``rx ok`` / ``tx ok``: calls whose receiver (resp. sender) T.30 result is a success with the page;
  the receiver's is the one that counts. ``on mode``: calls that ended on the intended media.
- ``mean s`` / ``max s``: sender's call duration (INVITE to BYE) of the successful calls; ``vs 1``: the
  mean against the unloaded call.
- ``cpu ms/call-s``: CPU of all worker processes (both ends of every call, SIP included) from the
  barrier until the last reception, over the sum of call durations; ``kam``: Kamailio's CPU (all its
  processes, from /proc) in the same unit.
- ``RSS KiB/call``: peak resident memory of the workers during the run minus their resident memory
  before the calls (lines open and registered), summed over workers, per call.
- ``other``: share of the machine's CPUs that other processes used during the run (/proc/stat minus
  the workers and Kamailio): on a shared machine, a run next to someone else's test suite is slower.
- ``lag p99 ms``: 99th percentile of the event loops' wake-up lateness (a 10 ms probe timer);
  ``slips``: 20 ms media-clock ticks skipped (t38.audio_transport.MediaClock) or UDPTL clock
  re-basings, summed over workers: non-zero means the process could not keep real time.

Prints figures only; asserts nothing. ``--quick`` (the default when no ``--n`` is given) runs N=10 and
50 in modes t38 and g711, about 3 minutes. The full table (``--n 10,50,100,200,400,600``) took 11
minutes in all three modes on 2 cores at commit b297c16; more when calls stretch or fail.

    /opt/vfax-venv/bin/python bench/calls.py [--quick]
    /opt/vfax-venv/bin/python bench/calls.py --n 10,50,100,200,400,600 --modes t38,g711 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import code_version, machine_busy_seconds, rss_kib, session_cpu_seconds

from tests import docfactory
from tests.peers.kamailio import KamailioServer, find_kamailio
from vfax.call.fax_call import CallOptions, CallOutcome
from vfax.call.line import FaxLine, LineConfig
from vfax.call.media import T38Policy
from vfax.documents import Resolution, prepare_fax_tiff
from vfax.service.runtime import tune_for_real_time

# mode -> (sender's policy, receiver's policy)
POLICY = {
    "t38": (T38Policy.AUTO, T38Policy.AUTO),
    "t38direct": (T38Policy.DIRECT, T38Policy.AUTO),
    "g711": (T38Policy.OFF, T38Policy.OFF),
}
EXPECTED_MEDIA = {"t38": "t38", "t38direct": "t38", "g711": "g711"}
PASSWORD = "bench-secret"


@dataclass
class Job:
    """What one worker process is asked to do."""

    index: int
    calls: int
    mode: str
    server: str
    tiff: str
    workdir: str
    max_call_seconds: float
    stalls: bool = False


@dataclass
class CallRecord:
    rx_ok: bool
    tx_ok: bool
    media: str
    duration: float
    end_reason: str  # sender's, then the receiver's after " | "
    t30: str
    setup: float = 0.0  # sender: INVITE sent to the final 2xx received (seconds)
    line: float = 0.0  # sender: line seconds of the last T.30 message (the fax's own clock)


@dataclass
class WorkerReport:
    index: int
    calls: list[CallRecord] = field(default_factory=list)
    missing_receptions: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    lag_ms: list[float] = field(default_factory=list)
    slips: int = 0
    slip_events: list[tuple[float, float, int]] = field(default_factory=list)
    stalls: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    error: str = ""


class _LogCounter(logging.Handler):
    """Counts warnings and errors by message template; adds up clock slips and re-basings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self.slips = 0
        self.t0 = time.monotonic()
        self.slip_events: list[tuple[float, float, int]] = []  # (seconds since the barrier, ms late, ticks)

    def emit(self, record: logging.LogRecord) -> None:
        template = str(record.msg)
        text = template if len(template) > 8 else re.sub(r"\d+", "#", record.getMessage()[:100])
        key = f"{record.name}: {text}"
        self.counts[key] += 1
        if key not in self.examples:  # the first one in full, with its exception if any
            example = record.getMessage()[:300]
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                where = traceback.extract_tb(exc.__traceback__)[-3:]
                example += f" | {exc!r} at " + " < ".join(
                    f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where)
                )
            self.examples[key] = example
        if "skipped %d ticks" in template and record.args:
            late, skipped = record.args  # type: ignore[misc]
            self.slips += int(skipped)
            self.slip_events.append((time.monotonic() - self.t0, float(late), int(skipped)))
        elif "UDPTL clock stalled" in template:
            self.slips += 1


class _StallSampler(threading.Thread):
    """``--stalls``: when the loop has not run the lag probe for 60 ms, note where the main thread is.

    The place (the innermost frames of the main thread's stack) is counted once per stall, so the
    report names the code that holds the loop: the cause of clock slips."""

    def __init__(self, threshold: float = 0.060) -> None:
        super().__init__(daemon=True)
        self.main_id = threading.get_ident()
        self.threshold = threshold
        self.beat = time.monotonic()
        self.places: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        seen = 0.0
        while not self.stop.wait(0.015):
            beat = self.beat
            if time.monotonic() - beat < self.threshold or beat == seen:
                continue
            seen = beat
            frame = sys._current_frames().get(self.main_id)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-4:]
            self.places[
                " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
            ] += 1


async def _probe_lag(out: list[float], sampler: _StallSampler | None, period: float = 0.010) -> None:
    """Wake-up lateness of the loop: how long a 10 ms timer waits beyond its deadline."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        out.append(max(0.0, (loop.time() - due) * 1000))
        if sampler is not None:
            sampler.beat = time.monotonic()


async def _sample_rss(report: WorkerReport) -> None:
    while True:
        report.rss_peak_kib = max(report.rss_peak_kib, rss_kib())
        await asyncio.sleep(0.2)


def _t30_text(outcome: CallOutcome) -> str:
    r = outcome.result
    return "no T.30 result" if r is None else f"{r.code} {r.text}"


def _phases(report: dict[str, Any]) -> tuple[float, float]:
    """(INVITE to its 2xx, line seconds of the last T.30 message) from a sender's call report."""
    ladder = report.get("sip", {}).get("ladder", [])
    sent = next((e["t"] for e in ladder if e["dir"] == "out" and e["line"].startswith("INVITE")), None)
    ok = next((e["t"] for e in ladder if e["dir"] == "in" and e["line"].startswith("SIP/2.0 200")), None)
    t30 = report.get("t30") or []
    return (ok - sent if ok is not None and sent is not None else 0.0, t30[-1]["at"] if t30 else 0.0)


async def _work(job: Job, barrier: Any, report: WorkerReport, counter: _LogCounter) -> None:
    tx_policy, rx_policy = POLICY[job.mode]
    tx_options = CallOptions(t38=tx_policy, ecm=True, max_call_seconds=job.max_call_seconds)
    rx_options = CallOptions(t38=rx_policy, ecm=True, max_call_seconds=job.max_call_seconds)
    workdir = Path(job.workdir)
    user = f"rx{job.index}"
    rx = await FaxLine.open(
        LineConfig(
            name=user, server=job.server, user=user, password=PASSWORD, channels=job.calls + 16,
            inbox=workdir / f"inbox-{job.index}", call=rx_options, transports=("udp",),
        )
    )  # fmt: skip
    tx = await FaxLine.open(
        LineConfig(
            name=f"tx{job.index}", server=job.server, channels=job.calls + 16, call=tx_options,
            transports=("udp",),
        )
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        registered = await rx.register()
        if not registered.ok:
            report.error = f"{user} could not register: {registered}"
            await loop.run_in_executor(None, barrier.wait)
            return
        target = f"sip:{user}@{job.server}"
        tiff = Path(job.tiff)
        tune_for_real_time()  # as vfax serve does
        report.rss_before_kib = report.rss_peak_kib = rss_kib()
        rss_task = asyncio.ensure_future(_sample_rss(report))
        lags: list[float] = []
        await loop.run_in_executor(None, barrier.wait)  # every worker and the parent: go
        counter.t0 = time.monotonic()
        sampler = _StallSampler() if job.stalls else None
        if sampler is not None:
            sampler.start()
        probe = asyncio.ensure_future(_probe_lag(lags, sampler))
        cpu0, t0 = time.process_time(), time.monotonic()
        sent = await asyncio.gather(
            *(tx.send(tiff, target, name=f"send{i}") for i in range(job.calls)), return_exceptions=True
        )
        received: list[CallOutcome] = []
        deadline = time.monotonic() + 60
        while len(received) < job.calls and time.monotonic() < deadline:
            try:
                got = await asyncio.wait_for(rx.receptions.get(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            received.append(got.outcome)
        report.cpu_seconds = time.process_time() - cpu0
        report.wall_seconds = time.monotonic() - t0
        probe.cancel()
        rss_task.cancel()
        if sampler is not None:
            sampler.stop.set()
            report.stalls = dict(sampler.places.most_common(6))
        report.lag_ms = lags
        report.missing_receptions = job.calls - len(received)
        # Both ends of a call carry the same Call-ID (the proxy keeps it): pair them by it.
        by_id = {o.report.get("call_id"): o for o in received}
        for s in sent:
            if isinstance(s, BaseException):
                report.calls.append(CallRecord(False, False, "none", 0.0, f"exception {s!r}", ""))
                continue
            r = by_id.get(s.report.get("call_id"))
            rx_ok = r is not None and r.ok and r.result is not None and r.result.pages == 1
            end = f"{s.end_reason} / T.30 {_t30_text(s)}"
            end += " | " + (f"{r.end_reason} / T.30 {_t30_text(r)}" if r is not None else "no reception")
            setup, line = _phases(s.report)
            report.calls.append(
                CallRecord(rx_ok, s.ok, s.media, s.duration_seconds, end, _t30_text(s), setup, line)
            )
    finally:
        await tx.close()
        await rx.close()


def worker(job: Job, barrier: Any, results: Any) -> None:
    """Process entry point (spawned): run one share of the calls, put a WorkerReport on ``results``."""
    logging.basicConfig(level=logging.ERROR)
    counter = _LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.WARNING)
    for h in logging.getLogger().handlers:
        if h is not counter:
            h.setLevel(logging.CRITICAL)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = WorkerReport(job.index)
    try:
        asyncio.run(_work(job, barrier, report, counter))
    except BaseException as exc:  # the parent prints it; a worker never hangs the run
        report.error = report.error or repr(exc)
        if not barrier.broken:
            barrier.abort()
    report.slips = counter.slips
    report.slip_events = counter.slip_events
    report.warnings = {
        f"{key} (first: {counter.examples[key]})": n for key, n in counter.counts.most_common(5)
    }
    results.put(report)


def kamailio_cpu_seconds(server: KamailioServer) -> float:
    """utime+stime of every process in Kamailio's session (it forks its workers into it)."""
    return 0.0 if server.process is None else session_cpu_seconds(server.process.pid)


@dataclass
class RunResult:
    mode: str
    n: int
    workers: int
    reports: list[WorkerReport]
    kamailio_cpu: float
    wall: float
    other_load: float  # share of the machine's CPUs busy with other processes during the run

    @property
    def calls(self) -> list[CallRecord]:
        return [c for r in self.reports for c in r.calls]


def run_one(
    mode: str, n: int, workers: int, server: KamailioServer, tiff: Path, tmp: Path, args: Any
) -> RunResult:
    workers = max(1, min(workers, n))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    shares = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    procs = []
    for w, share in enumerate(shares):
        address = f"{server.host}:{server.udp_port}"
        job = Job(w, share, mode, address, str(tiff), str(tmp), args.max_call_seconds, args.stalls)
        p = ctx.Process(target=worker, args=(job, barrier, results), daemon=True)
        p.start()
        procs.append(p)
    reports: list[WorkerReport] = []
    with contextlib.suppress(Exception):  # a worker failed to set up: its report says why
        barrier.wait(timeout=120)
    kam0, busy0, t0 = kamailio_cpu_seconds(server), machine_busy_seconds(), time.monotonic()
    limit = time.monotonic() + args.max_call_seconds + 180
    while len(reports) < workers and time.monotonic() < limit:
        try:
            reports.append(results.get(timeout=1.0))
        except queue.Empty:
            if all(not p.is_alive() for p in procs) and results.empty():
                break
    kam = kamailio_cpu_seconds(server) - kam0
    busy = machine_busy_seconds() - busy0
    wall = time.monotonic() - t0
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
    if len(reports) < workers:
        lost = WorkerReport(-1, error=f"{workers - len(reports)} worker(s) sent no report")
        reports.append(lost)
    ours = kam + sum(r.cpu_seconds for r in reports)
    other = max(0.0, busy - ours) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
    return RunResult(mode, n, workers, sorted(reports, key=lambda r: r.index), kam, wall, other)


def percentile(data: list[float], p: float) -> float:
    if not data:
        return float("nan")
    data = sorted(data)
    return data[min(len(data) - 1, round(p / 100 * (len(data) - 1)))]


COLUMNS = (
    f"{'mode':<9} {'N':>4} {'wk':>3} {'rx ok':>7} {'tx ok':>7} {'on mode':>7} {'mean s':>7} {'vs 1':>7} "
    f"{'max s':>6} {'cpu ms/call-s':>13} {'kam':>5} {'RSS KiB/call':>12} {'lag p99 ms':>10} {'slips':>5} "
    f"{'wall s':>6} {'other':>5}"
)


def row(r: RunResult, baseline: dict[str, float]) -> str:
    calls = r.calls
    good = [c.duration for c in calls if c.rx_ok and c.tx_ok]
    mean = statistics.mean(good) if good else float("nan")
    base = baseline.get(r.mode)
    stretch = f"{(mean / base - 1) * 100:+.0f} %" if base and good else "-"
    call_seconds = sum(c.duration for c in calls) or float("nan")
    cpu = sum(w.cpu_seconds for w in r.reports)
    rss = sum(w.rss_peak_kib - w.rss_before_kib for w in r.reports) / max(1, r.n)
    lag = percentile([x for w in r.reports for x in w.lag_ms], 99)
    rx_ok = sum(c.rx_ok for c in calls)
    tx_ok = sum(c.tx_ok for c in calls)
    on_mode = sum(c.media == EXPECTED_MEDIA[r.mode] for c in calls)
    return (
        f"{r.mode:<9} {r.n:>4} {r.workers:>3} {f'{rx_ok}/{r.n}':>7} {f'{tx_ok}/{r.n}':>7} {on_mode:>7} "
        f"{mean:>7.1f} {stretch:>7} {max(good, default=float('nan')):>6.1f} "
        f"{cpu * 1000 / call_seconds:>13.1f} {r.kamailio_cpu * 1000 / call_seconds:>5.2f} {rss:>12.0f} "
        f"{lag:>10.1f} {sum(w.slips for w in r.reports):>5} {r.wall:>6.0f} {r.other_load:>5.0%}"
    )


def notes(r: RunResult) -> list[str]:
    """Why calls failed, and what the workers logged, for the lines under the table."""
    out: list[str] = []
    good = [c for c in r.calls if c.rx_ok and c.tx_ok]
    if good:
        setup = [c.setup for c in good]
        line = [c.line for c in good]
        out.append(
            f"  {r.mode} N={r.n}: INVITE to 200 OK mean {statistics.mean(setup):.2f} s,"
            f" max {max(setup):.2f} s; T.30 line time mean {statistics.mean(line):.1f} s,"
            f" max {max(line):.1f} s"
        )
    reasons = collections.Counter(c.end_reason for c in r.calls if not (c.rx_ok and c.tx_ok))
    for reason, count in reasons.most_common(5):
        out.append(f"  {r.mode} N={r.n}: {count} call(s) failed, sender | receiver: {reason}")
    for w in r.reports:
        if w.error:
            out.append(f"  {r.mode} N={r.n} worker {w.index}: {w.error}")
        if w.missing_receptions:
            out.append(
                f"  {r.mode} N={r.n} worker {w.index}: {w.missing_receptions} reception(s) never reported"
            )
        for msg, count in w.warnings.items():
            out.append(f"  {r.mode} N={r.n} worker {w.index} logged {count}x {msg}")
        if w.slip_events:
            when = ", ".join(
                f"{t:.1f} s ({late:.0f} ms late, {n} skipped)" for t, late, n in w.slip_events[:8]
            )
            out.append(f"  {r.mode} N={r.n} worker {w.index} media clock slips at: {when}")
        for place, count in w.stalls.items():
            out.append(f"  {r.mode} N={r.n} worker {w.index} loop held >60 ms {count}x at: {place}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default=None, help="comma-separated call counts (default with --quick: 10,50)")
    ap.add_argument("--modes", default="t38,g711", help="any of t38, t38direct, g711, comma-separated")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes (default: CPUs)")
    ap.add_argument("--quick", action="store_true", help="N=10,50 in both modes (a few minutes)")
    ap.add_argument("--max-call-seconds", type=float, default=240.0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the unloaded N=1 call")
    ap.add_argument(
        "--stalls", action="store_true", help="name the code that holds an event loop for more than 60 ms"
    )
    args = ap.parse_args()
    sizes = [int(x) for x in ("10,50" if args.quick or not args.n else args.n).split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    if find_kamailio() is None:
        sys.exit("kamailio is not installed (Debian: apt-get install kamailio)")
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="vfax-bench-calls-") as d:
        tmp = Path(d)
        src = docfactory.text_pdf(tmp / "page.pdf", pages=1)
        tiff = prepare_fax_tiff(src, tmp / "page.tif", resolution=Resolution.STANDARD).path
        users = {f"rx{w}": PASSWORD for w in range(max(args.workers, 1))}
        server = KamailioServer(
            tmp / "kamailio", users=users, trusted=("127.0.0.1",), debug=1, shm_mb=256, pkg_mb=16, children=4,
            udp_buffer=4 << 20,
        ).start()
        print(f"code under test: {code_version()}")
        print(f"Kamailio {server.host}:{server.udp_port}, {args.workers} worker process(es), "
              f"{os.cpu_count()} CPU(s); one page, standard resolution, ECM")  # fmt: skip
        baseline: dict[str, float] = {}
        results: list[RunResult] = []
        try:
            print(COLUMNS, flush=True)
            if not args.no_baseline:
                for mode in modes:
                    r = run_one(mode, 1, 1, server, tiff, tmp, args)
                    good = [c.duration for c in r.calls if c.rx_ok and c.tx_ok]
                    if good:
                        baseline[mode] = statistics.mean(good)
                    results.append(r)
                    print(row(r, baseline), flush=True)
            for n in sizes:
                for mode in modes:
                    r = run_one(mode, n, args.workers, server, tiff, tmp, args)
                    results.append(r)
                    print(row(r, baseline), flush=True)
        finally:
            server.stop()
        lines = [line for r in results for line in notes(r)]
        if lines:
            print("notes:")
            print("\n".join(lines))


if __name__ == "__main__":
    main()
