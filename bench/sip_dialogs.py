"""SIP dialog throughput, memory, and the setup time of calls started at once, through Kamailio.

Three measurements, each with Kamailio started the way the test fixture starts it
(tests/peers/kamailio.py), 127.0.0.1 trusted so INVITEs are not challenged, Record-Route on so ACK and BYE
traverse the proxy too. Prints tables; asserts nothing.

- Throughput (``--sizes``, default 100 500 1000): user agent B registers at Kamailio as 1002; user agent
  A sends N INVITEs to ``sip:1002@vfax.test`` through the proxy, at most ``--window`` transactions in
  flight, waits until all N dialogs are confirmed at both ends, measures the process RSS growth, then sends
  N BYEs. Reports dialogs per second over the whole INVITE/200/ACK/BYE cycle and memory per dialog (both
  ends of a dialog live in this process, so the figure covers caller and callee).
- Burst (``--burst``, default 400): the same two user agents, N INVITEs started at once (no window).
  Reports the mean, median, p95 and max of each call's start-to-200 OK (from the common start: what a
  caller waits) and INVITE-to-200 OK (from the INVITE on the wire, the call report's ladder), the time
  until all are up, then all N BYEs at once and the time until all are torn down.
- Fax setup (``--fax``, e.g. 400): the same figures for real vfax fax calls: ``FaxLine.send`` to a
  receiving ``FaxLine`` through Kamailio (SDP, media sockets, spandsp engines, the call report), spread
  over ``--workers`` processes as bench/calls.py spreads them (each process calls its own receiver
  ``rx<w>``), started at one barrier. Timing stops at each call's 200 OK; once every call is up, every
  sender aborts its calls (BYE) and the teardown is timed until both ends of every call have ended.
  ``--modes g711`` is the media of the 0.5 s figure of bench/calls.py at 400.

``--repeat R`` runs each burst R times (a shared machine: read the spread), each row with the machine's
load average and the share of the CPUs other processes used meanwhile.

    /opt/vfax-venv/bin/python bench/sip_dialogs.py [--sizes 100 500 1000] [--window 50] [--burst 400]
    /opt/vfax-venv/bin/python bench/sip_dialogs.py --sizes --burst 400 --fax 400 --modes g711 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import logging
import multiprocessing
import os
import queue
import resource
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import code_version, machine_busy_seconds, rss_kib, session_cpu_seconds

from sip.registration import Registration
from sip.useragent import IncomingInvite, InviteResult, UserAgent
from tests.peers.kamailio import KamailioServer, find_kamailio

SDP_A = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"


@dataclass
class _Pair:
    """Two user agents, B registered at Kamailio and answering every INVITE (``confirmed`` counts ACKs)."""

    a: UserAgent
    b: UserAgent
    reg: Registration
    confirmed: int = 0


async def _registered_pair(kam: KamailioServer) -> _Pair:
    a = await UserAgent.create(contact_user="1001")
    b = await UserAgent.create(contact_user="1002")
    reg = Registration(b, kam.uri, "1002", "secret1002", domain=kam.realm)
    if not (await reg.start()).ok:
        raise SystemExit("registration at Kamailio failed")
    pair = _Pair(a, b, reg)

    async def answer(incoming: IncomingInvite) -> None:
        session = await incoming.accept(SDP_B)
        await session.confirmed
        pair.confirmed += 1

    b.on_invite = answer
    return pair


async def run_size(kam: KamailioServer, n: int, window: int, traced: bool = False) -> dict[str, float]:
    pair = await _registered_pair(kam)
    a, b, reg = pair.a, pair.b, pair.reg
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
        if pair.confirmed >= ok:
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


# --- burst: N calls started at once ---------------------------------------------------------------------


def _invite_to_200(ladder: list[tuple[float, str, str]]) -> float | None:
    """INVITE on the wire to its 200 OK, from a Call-ID's ladder (as the call report shows it)."""
    sent = next((t for t, d, line in ladder if d == "out" and line.startswith("INVITE")), None)
    ok = next((t for t, d, line in ladder if d == "in" and line.startswith("SIP/2.0 200")), None)
    return ok - sent if ok is not None and sent is not None else None


@dataclass
class BurstResult:
    what: str
    n: int
    failed: int = 0
    start_to_200: list[float] = field(default_factory=list)  # per call answered: common start to its 200 OK
    invite_to_200: list[float] = field(default_factory=list)  # per call answered: INVITE sent to its 200 OK
    all_up: float = float("nan")  # common start to the last 200 OK
    teardown: float = float("nan")  # all BYEs started to both ends of every call ended
    setup_cpu: float = 0.0  # our processes' CPU seconds from the start to the last 200 OK
    cpu: float = 0.0  # the same to the end of the teardown
    kamailio_cpu: float = 0.0
    other: float = 0.0  # share of the machine's CPUs that other processes used meanwhile
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # load averages just before the run
    reasons: dict[str, int] = field(default_factory=dict)


def kamailio_cpu_seconds(server: KamailioServer) -> float:
    """utime+stime of every process in Kamailio's session (it forks its workers into it)."""
    return 0.0 if server.process is None else session_cpu_seconds(server.process.pid)


class _Machine:
    """The CPU the rest of the machine used while a burst ran: honest figures on a shared box."""

    def __init__(self, kam: KamailioServer) -> None:
        self.kam = kam
        self.load = os.getloadavg()
        self.busy0, self.kam0, self.t0 = machine_busy_seconds(), kamailio_cpu_seconds(kam), time.monotonic()

    def finish(self, r: BurstResult) -> None:
        wall = time.monotonic() - self.t0
        r.kamailio_cpu = kamailio_cpu_seconds(self.kam) - self.kam0
        busy = machine_busy_seconds() - self.busy0
        r.other = max(0.0, busy - r.cpu - r.kamailio_cpu) / (wall * (os.cpu_count() or 1))
        r.load = self.load


async def run_burst(kam: KamailioServer, n: int) -> BurstResult:
    """N INVITEs at once from one user agent to another through the proxy, then N BYEs at once."""
    pair = await _registered_pair(kam)
    a, b, reg = pair.a, pair.b, pair.reg
    r = BurstResult("sip", n)
    up: list[float] = []

    async def one() -> InviteResult:
        result = await a.invite(f"sip:1002@{kam.realm}", SDP_A, proxy=kam.uri)
        if result.ok:
            up.append(time.monotonic())
        return result

    gc.collect()
    machine = _Machine(kam)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(n)))
    r.setup_cpu = time.process_time() - cpu0
    r.setup_cpu = time.process_time() - cpu0
    r.start_to_200 = [t - t0 for t in up]
    r.all_up = max(up) - t0 if up else float("nan")
    for res in results:
        if res.ok and res.response is not None:
            d = _invite_to_200(a.ladder(res.response.call_id))
            if d is not None:
                r.invite_to_200.append(d)
        elif not res.ok:
            key = f"{res.status} {res.reason}"
            r.reasons[key] = r.reasons.get(key, 0) + 1
    r.failed = n - len(up)
    for _ in range(600):
        if pair.confirmed >= len(up):
            break
        await asyncio.sleep(0.01)
    t1 = time.monotonic()
    await asyncio.gather(*(res.session.bye() for res in results if res.session is not None))
    r.teardown = time.monotonic() - t1
    r.cpu = time.process_time() - cpu0
    machine.finish(r)
    await reg.stop()
    await a.close(hangup=False)
    await b.close(hangup=False)
    return r


# --- fax setup: N FaxLine calls started at once, in worker processes -------------------------------------

FAX_PASSWORD = "bench-secret"


@dataclass
class FaxJob:
    index: int
    calls: int
    mode: str
    server: str
    tiff: str
    workdir: str
    profile: str = ""  # where to write where the setup's CPU went (see --profile)
    role: str = "both"  # "both": calls its own receiver rx<index>; "send": calls rx<target>; "receive"
    target: int = 0


@dataclass
class FaxWorkerReport:
    index: int
    t0: float = 0.0  # monotonic (system-wide) at the start barrier
    up: list[float] = field(default_factory=list)  # monotonic time of each call's 200 OK
    invite_to_200: list[float] = field(default_factory=list)
    t1: float = 0.0  # at the teardown barrier
    down: float = 0.0  # both ends of every call ended
    cpu: float = 0.0
    setup_cpu: float = 0.0  # from the start barrier to the last 200 OK
    reasons: dict[str, int] = field(default_factory=dict)
    error: str = ""


class _Sampler:
    """Stack samples every millisecond of CPU (SIGPROF): where the time goes, without cProfile's
    per-call overhead, which inflates Python code against C calls."""

    def __init__(self) -> None:
        self.own: collections.Counter[str] = collections.Counter()
        self.cumulative: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)

    def _sample(self, _signum: int, frame: Any) -> None:
        self.samples += 1
        seen = set()
        caller = frame.f_back.f_code if frame.f_back is not None else None
        inner = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
        self.own[inner + (f" < {Path(caller.co_filename).name}:{caller.co_name}" if caller else "")] += 1
        while frame is not None:
            code = frame.f_code
            where = f"{Path(code.co_filename).name}:{code.co_name}"
            if where not in seen:
                seen.add(where)
                self.cumulative[where] += 1
            frame = frame.f_back

    def stop(self, path: str) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        n = max(1, self.samples)
        lines = [f"{self.samples} samples (1 ms of CPU each)", "own:"]
        lines += [f"{c / n:6.1%} {w}" for w, c in self.own.most_common(40)]
        lines += ["cumulative:"] + [f"{c / n:6.1%} {w}" for w, c in self.cumulative.most_common(80)]
        Path(path).write_text("\n".join(lines) + "\n")


async def _fax_work(job: FaxJob, start: Any, teardown: Any, report: FaxWorkerReport) -> None:
    """One process's share: its receiving line, its sending line, or both (``job.role``)."""
    from vfax.call.fax_call import CallOptions, FaxCall
    from vfax.call.line import FaxLine, LineConfig
    from vfax.call.media import T38Policy
    from vfax.service.runtime import tune_for_real_time

    policy = {"g711": (T38Policy.OFF, T38Policy.OFF), "t38": (T38Policy.AUTO, T38Policy.AUTO),
              "t38direct": (T38Policy.DIRECT, T38Policy.AUTO)}[job.mode]  # fmt: skip
    user = f"rx{job.index}"
    rx = tx = None
    if job.role in ("both", "receive"):
        rx = await FaxLine.open(
            LineConfig(
                name=user, server=job.server, user=user, password=FAX_PASSWORD, channels=job.calls + 16,
                inbox=Path(job.workdir) / f"inbox-{job.index}", call=CallOptions(t38=policy[1], ecm=True),
                transports=("udp",),
            )
        )  # fmt: skip
    if job.role in ("both", "send"):
        tx = await FaxLine.open(
            LineConfig(name=f"tx{job.index}", server=job.server, channels=job.calls + 16,
                       call=CallOptions(t38=policy[0], ecm=True), transports=("udp",))
        )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        if rx is not None and not (await rx.register()).ok:
            report.error = f"{user} could not register"
            start.abort()
            return
        calls: list[FaxCall] = []
        all_up = asyncio.Event()
        answered: list[float] = report.up if tx is not None else []

        def progress(call: FaxCall, what: str) -> None:
            if what == "answered":
                answered.append(time.monotonic())
                if len(answered) == job.calls:
                    all_up.set()

        (tx or rx).on_progress = progress  # type: ignore[union-attr]
        tune_for_real_time()  # as vfax serve does
        await loop.run_in_executor(None, start.wait)
        profiler = cProfile.Profile() if job.profile.endswith(".prof") else None
        sampler = _Sampler() if job.profile and profiler is None else None
        if profiler is not None:
            profiler.enable()
        if sampler is not None:
            sampler.start()
        report.t0 = time.monotonic()
        cpu0 = time.process_time()
        target = f"sip:rx{job.index if rx is not None else job.target}@{job.server}"
        sends = [
            asyncio.ensure_future(tx.send(Path(job.tiff), target, name=f"send{i}", on_call=calls.append))
            for i in range(job.calls if tx is not None else 0)
        ]
        waits = {asyncio.ensure_future(all_up.wait())}
        if sends:
            waits.add(asyncio.ensure_future(asyncio.wait(sends)))
        with contextlib.suppress(TimeoutError):  # calls that failed: their outcome says why
            await asyncio.wait(waits, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        report.setup_cpu = time.process_time() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(job.profile)
        if sampler is not None:
            sampler.stop(job.profile)
        for call in calls:
            d = _invite_to_200(call.ua.ladder(call.call_id)) if call.answered else None
            if d is not None:
                report.invite_to_200.append(d)
        await loop.run_in_executor(None, teardown.wait)
        report.t1 = time.monotonic()
        aborts = (c.abort("bench teardown") for c in calls if not c.aborted)
        await asyncio.gather(*aborts, return_exceptions=True)
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for _ in range(3000):  # the receiving ends: each call ends when its BYE arrives
            if rx is None or not rx.active:
                break
            await asyncio.sleep(0.005)
        report.down = time.monotonic()
        report.cpu = time.process_time() - cpu0
        for c, o in zip(calls, outcomes, strict=False):
            if not c.answered:
                key = repr(o) if isinstance(o, BaseException) else o.end_reason
                report.reasons[key] = report.reasons.get(key, 0) + 1
    finally:
        for line in (tx, rx):
            if line is not None:
                await line.close()


def fax_worker(job: FaxJob, start: Any, teardown: Any, results: Any) -> None:
    """Process entry point (spawned): place this share of the calls, put a FaxWorkerReport on ``results``."""
    logging.basicConfig(level=logging.WARNING)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = FaxWorkerReport(job.index)
    try:
        asyncio.run(_fax_work(job, start, teardown, report))
    except BaseException as exc:  # the parent prints it; a worker never hangs the run
        report.error = report.error or repr(exc)
        for b in (start, teardown):
            if not b.broken:
                b.abort()
    results.put(report)


def run_fax(
    kam: KamailioServer,
    n: int,
    mode: str,
    workers: int,
    tiff: Path,
    tmp: Path,
    profile: str = "",
    split: bool = False,
) -> BurstResult:
    """N FaxLine calls at once: each of ``workers`` processes calls its own receiver, or with ``split``
    process 0 places all N calls to the receiving line of process 1 (two vfax, as two machines would)."""
    workers = 2 if split else max(1, min(workers, n))
    ctx = multiprocessing.get_context("spawn")
    start, teardown, results = ctx.Barrier(workers + 1), ctx.Barrier(workers), ctx.Queue()
    procs = []
    for w in range(workers):
        share = n if split else n // workers + (1 if w < n % workers else 0)
        prof = profile.replace("%w", str(w))
        role = ("send", "receive")[w] if split else "both"
        job = FaxJob(w, share, mode, f"{kam.host}:{kam.udp_port}", str(tiff), str(tmp), prof, role, 1)
        p = ctx.Process(target=fax_worker, args=(job, start, teardown, results), daemon=True)
        p.start()
        procs.append(p)
    with contextlib.suppress(Exception):  # a worker failed to set up: its report says why
        start.wait(timeout=120)
    machine = _Machine(kam)
    reports: list[FaxWorkerReport] = []
    limit = time.monotonic() + 300
    while len(reports) < workers and time.monotonic() < limit:
        try:
            reports.append(results.get(timeout=1.0))
        except queue.Empty:
            if all(not p.is_alive() for p in procs) and results.empty():
                break
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
    r = BurstResult(f"fax {mode}" + (" split" if split else ""), n)
    t0 = min((w.t0 for w in reports if w.t0), default=0.0)
    r.start_to_200 = [t - t0 for w in reports for t in w.up]
    r.invite_to_200 = [d for w in reports for d in w.invite_to_200]
    r.all_up = max(r.start_to_200, default=float("nan"))
    t1 = max((w.t1 for w in reports if w.t1), default=0.0)
    r.teardown = max((w.down for w in reports), default=float("nan")) - t1 if t1 else float("nan")
    r.failed = n - len(r.start_to_200)
    r.cpu = sum(w.cpu for w in reports)
    r.setup_cpu = sum(w.setup_cpu for w in reports)
    for w in reports:
        for k, v in w.reasons.items():
            r.reasons[k] = r.reasons.get(k, 0) + v
        if w.error:
            r.reasons[f"worker {w.index}: {w.error}"] = 1
    if len(reports) < workers:
        r.reasons[f"{workers - len(reports)} worker(s) sent no report"] = 1
    machine.finish(r)
    return r


def _stats(xs: list[float]) -> str:
    if not xs:
        return f"{'-':>6} {'-':>6} {'-':>6} {'-':>6}"
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"{statistics.mean(xs):>6.3f} {statistics.median(xs):>6.3f} {p95:>6.3f} {xs[-1]:>6.3f}"


BURST_COLUMNS = (
    f"{'what':<14} {'N':>4} {'failed':>6} | "
    f"{'start to 200 OK: mean':>21} {'median':>6} {'p95':>6} {'max':>6} | "
    f"{'INVITE to 200: mean':>19} {'median':>6} {'p95':>6} {'max':>6} | {'all up s':>8} {'down s':>6} "
    f"{'cpu up':>6} {'cpu s':>5} {'kam s':>5} {'load':>4} {'other':>5}"
)


def burst_row(r: BurstResult) -> str:
    return (
        f"{r.what:<14} {r.n:>4} {r.failed:>6} | "
        f"{_stats(r.start_to_200):>42} | {_stats(r.invite_to_200):>40} | "
        f"{r.all_up:>8.3f} {r.teardown:>6.3f} {r.setup_cpu:>6.2f} {r.cpu:>5.2f} {r.kamailio_cpu:>5.2f} "
        f"{r.load[0]:>4.1f} {r.other:>5.0%}"
    )


async def main_async(args: argparse.Namespace, kam: KamailioServer) -> list[dict[str, float]]:
    rows = [await run_size(kam, n, args.window) for n in args.sizes]
    for row, n in zip(rows, args.sizes, strict=True):  # a second pass for Python-level memory
        traced = await run_size(kam, n, args.window, traced=True)
        row["traced_kib_per_dialog"] = traced["traced_kib_per_dialog"]
    return rows


def print_throughput(rows: list[dict[str, float]]) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 500, 1000],
                        help="dialog counts of the throughput table (none: skip it)")  # fmt: skip
    parser.add_argument("--window", type=int, default=50, help="INVITE/BYE transactions in flight at once")
    parser.add_argument("--burst", type=int, nargs="*", default=[400],
                        help="signalling only: N INVITEs at once (none: skip)")  # fmt: skip
    parser.add_argument("--fax", type=int, nargs="*", default=[],
                        help="N FaxLine calls at once, timed to their 200 OK (e.g. 400)")  # fmt: skip
    parser.add_argument("--modes", default="g711", help="media of --fax calls: g711, t38, t38direct")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="processes of --fax (default: CPUs, as bench/calls.py)")  # fmt: skip
    parser.add_argument("--split", action="store_true",
                        help="--fax: one process sends all calls, another receives them")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each burst")
    parser.add_argument("--kamailio-children", type=int, default=4, help="Kamailio's UDP worker processes")
    parser.add_argument("--kamailio-debug", type=int, default=1,
                        help="Kamailio's log level (2 logs every message)")  # fmt: skip
    parser.add_argument("--profile", default="",
                        help="--fax: where the setup's CPU goes, per worker (%%w): cProfile's stats into "
                        "PATH.prof, else stack samples every ms of CPU into PATH as text")  # fmt: skip
    parser.add_argument("--kamailio-buffer", type=int, default=4 << 20,
                        help="Kamailio's -b, its largest UDP receive buffer (default 4 MiB; 0: Kamailio's "
                        "own default, 256 KiB, which drops datagrams of a burst of 400 INVITEs)")  # fmt: skip
    parser.add_argument("-v", action="store_true", help="show the ladder of a failed INVITE")
    args = parser.parse_args()
    if find_kamailio() is None:
        raise SystemExit("kamailio is not installed")
    logging.basicConfig(level=logging.WARNING)
    print(f"code under test: {code_version()}; {os.cpu_count()} CPU(s); Kamailio children "
          f"{args.kamailio_children}, debug {args.kamailio_debug}, -b {args.kamailio_buffer}",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vfax-bench-") as d:
        tmp = Path(d)
        users = {"1002": "secret1002", **{f"rx{w}": FAX_PASSWORD for w in range(max(args.workers, 1))}}
        kam = KamailioServer(
            tmp / "kamailio", users=users, trusted=["127.0.0.1"], shm_mb=256, pkg_mb=16,
            children=args.kamailio_children, debug=args.kamailio_debug,
            udp_buffer=args.kamailio_buffer or None,
        )  # fmt: skip
        kam.start()
        try:
            if args.sizes:
                print_throughput(asyncio.run(main_async(args, kam)))
            if args.burst or args.fax:
                print(BURST_COLUMNS, flush=True)
            for n in args.burst:
                for _ in range(args.repeat):
                    print(burst_row(asyncio.run(run_burst(kam, n))), flush=True)
            if args.fax:
                from tests import docfactory
                from vfax.documents import Resolution, prepare_fax_tiff

                src = docfactory.text_pdf(tmp / "page.pdf", pages=1)
                tiff = prepare_fax_tiff(src, tmp / "page.tif", resolution=Resolution.STANDARD).path
                for n in args.fax:
                    for mode in args.modes.split(","):
                        for _ in range(args.repeat):
                            r = run_fax(
                                kam, n, mode.strip(), args.workers, tiff, tmp, args.profile, args.split
                            )
                            print(burst_row(r), flush=True)
                            for reason, count in r.reasons.items():
                                print(f"  {count} not answered: {reason}")
        finally:
            kam.stop()
    print("(seconds; 'start to 200 OK' counts from the common start, 'INVITE to 200' from the INVITE on")
    print(" the wire;")
    print(" 'down': all BYEs started to both ends of every call ended; cpu: our processes' (up: until the")
    print(" last 200 OK, s: to the end of the teardown), kam: Kamailio's (whole run);")
    print(" load: 1-minute load average before the run; other: share of the CPUs other processes used)")


if __name__ == "__main__":
    main()
