"""The cluster bench of issue 13: worker capacity, job claim latency, failover. Figures only.

Three parts, each alone with ``--part`` (default: all three, in this order):

capacity
    ``vfax serve --workers W`` (SQLite, one device on 127.0.0.1, ``max_attempts = 1``) sends one-page
    standard-resolution G.711 faxes to ``--far-ends`` loopback ``vfax receive`` processes on the same
    machine. For each W, steps of C simultaneous calls (``--calls``, ramped): C jobs are submitted through
    the API with one ``not_before`` a little ahead, so they start together; the step ends when every job
    is terminal. A step is *carried* when every job completed (the sender's T.30 phase E), the far ends
    got every fax, their RTP counters say the media stayed on time (late + lost packets at most
    ``--max-late`` of those received: a sender that falls behind real time delivers late or not at all)
    and the calls were not stretched (far ends' mean call time at most ``--max-stretch`` times the
    unloaded one, the first step of 1 call). The ramp stops at the first step not carried. Figures per
    step: peak simultaneous calls (overlap of the far ends' calls), faxes per minute (completed over the
    time from the common start to the last terminal state), and CPU seconds of each process (from
    /proc: the workers, the supervisor, the far ends; ``other`` is the rest of the machine), also per fax.
    ``--worker-cpu Q`` repeats the ramp with each worker limited to Q of a core (a cgroup CPU quota,
    10 ms period; needs root and the cgroup cpu controller): the far ends then have CPU to spare, so the
    ratio between 2 workers and 1 is the workers' own scaling, not the machine's. The output says which
    figure meets the 1.8x target and why the other does not.

claim
    bench/store_claim.py's measurement (imported): latency of ``claim_next`` at ``--claim-jobs`` queued
    jobs, SQLite and PostgreSQL (a private server as the tests start it), one and two claimers.

failover
    (a) Kamailio on lab/cluster/kamailio.cfg as the tests run it (tests/peers/kamailio_dispatcher.py) in
    front of three `vfax serve` nodes, each on its own host (network namespaces when root, else
    127.0.0.x: tests/peers/netns.py). kill -9 of an idle node: time until Kamailio marks it DOWN (OPTIONS
    probing). Then kill -9 of another node and at once ``--failover-calls`` calls from the PBX address
    through the dispatcher (`vfax send`): for each, the node chain it was routed to and its INVITE-to-200
    time; one sent to the dead node shows the time until a live node answered it.
    (b) Two `vfax serve --workers 1` nodes on one PostgreSQL database (``--lease``, ``--heartbeat``,
    ``--give-up``) and a far end: a 2-page job, kill -9 of the node sending it once its call is on the line;
    times from the kill to the other node's requeue (its log), to the retry's INVITE (the job's dialing
    event) and to the job's completion, with the job's attempts and terminal events.

    .venv/bin/python bench/cluster.py                                  # everything, ~30 min
    .venv/bin/python bench/cluster.py --part capacity --workers 1,2 --calls 1,200,400 --worker-cpu 0
    .venv/bin/python bench/cluster.py --part capacity --worker-cpu 0.25 --cap-calls 1,100,200 --uncapped no
    .venv/bin/python bench/cluster.py --part failover --json
    .venv/bin/python bench/cluster.py --smoke                          # smallest of each part (tests)

``--json`` prints one JSON object (every figure) on stdout; the text goes to stderr then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import store_claim
from benchlib import code_version, machine_busy_seconds, proc_cpu_seconds

from tests import docfactory
from tests.peers.kamailio import find_kamailio
from tests.peers.kamailio_dispatcher import DispatcherServer
from tests.peers.netns import TestNetwork, netns_allowed
from tests.peers.postgres import PostgresServer, find_bindir
from tests.serve_process import (
    Receiver,
    ServeProcess,
    free_port,
    spawn,
    stop_process,
    vfax_argv,
    wait_for,
    write_config,
)

TOKEN = "bench-cluster-token-0123456789"
TARGET = 1.8
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup/unified")
QUOTA_PERIOD_US = 10_000  # short: a worker throttled for most of a 100 ms period would miss 20 ms ticks

_say: Callable[[str], None] = print


def say(text: str = "") -> None:
    _say(text)


# ======================================================================================================
# capacity
# ======================================================================================================


class CpuCap:
    """A cgroup per worker with a CPU quota of ``cores`` (cgroup v1 cpu controller, else v2 cpu.max)."""

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self.made: list[Path] = []

    @staticmethod
    def unavailable() -> str | None:
        if os.geteuid() != 0:
            return "not root"
        if (CGROUP_V1 / "cpu.cfs_quota_us").exists() and os.access(CGROUP_V1, os.W_OK):
            return None
        if (CGROUP_V2 / "cgroup.controllers").exists() and "cpu" in (
            CGROUP_V2 / "cgroup.controllers"
        ).read_text().split():
            return None
        return "no writable cgroup cpu controller"

    def limit(self, pid: int, name: str) -> None:
        quota = max(1000, round(self.cores * QUOTA_PERIOD_US))
        if (CGROUP_V1 / "cpu.cfs_quota_us").exists():
            group = CGROUP_V1 / f"vfax-bench-{os.getpid()}-{name}"
            group.mkdir()
            self.made.append(group)
            (group / "cpu.cfs_period_us").write_text(str(QUOTA_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            group = CGROUP_V2 / f"vfax-bench-{os.getpid()}-{name}"
            group.mkdir()
            self.made.append(group)
            (group / "cpu.max").write_text(f"{quota} {QUOTA_PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> dict[str, float]:
        """Seconds each group was held back by its quota so far."""
        out = {}
        for group in self.made:
            with contextlib.suppress(OSError):
                stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
                if "throttled_time" in stat:
                    out[group.name] = int(stat["throttled_time"]) / 1e9
                elif "throttled_usec" in stat:
                    out[group.name] = int(stat["throttled_usec"]) / 1e6
        return out

    def close(self) -> None:
        for group in self.made:
            root = group.parent
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (root / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.made.clear()


@dataclass
class Step:
    calls: int
    completed: int = 0
    failed: int = 0
    far_ok: int = 0
    peak_simultaneous: int = 0
    submit_s: float = 0.0
    late_start_s: float = 0.0  # how far submission ran past the common start (0: all were queued in time)
    span_s: float = 0.0  # common start -> last terminal state
    per_min: float = 0.0
    mean_call_s: float = 0.0
    max_call_s: float = 0.0
    stretch: float = 0.0
    packets: int = 0
    late: int = 0
    lost: int = 0
    frames_missing: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # process label -> CPU seconds in the span
    cores: dict[str, float] = field(default_factory=dict)  # process label -> mean cores used in the span
    worker_cpu_ms_per_fax: float = 0.0
    far_cpu_ms_per_fax: float = 0.0
    throttled_s: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    jobs_per_worker: dict[str, int] = field(default_factory=dict)  # which worker's node sent them
    channels_per_worker: int = 0
    carried: bool = False
    why_not: list[str] = field(default_factory=list)


@dataclass
class Ramp:
    workers: int
    cap_cores: float | None
    far_ends: int
    steps: list[Step] = field(default_factory=list)
    baseline_s: float = 0.0
    peak: Step | None = None
    error: str | None = None


class CapacityRig:
    """One `vfax serve --workers W` and its far ends, up for one ramp."""

    def __init__(self, root: Path, workers: int, channels: int, far_ends: int, cap: CpuCap | None,
                 far_channels: int) -> None:  # fmt: skip
        self.workers = workers
        self.cap = cap
        api = f"127.0.0.1:{free_port()}"
        sip = free_port(socket.SOCK_DGRAM)
        config = write_config(
            root, api=api, token=TOKEN, log_level="warning", retry={"max_attempts": 1},
            device={"listen": f"127.0.0.1:{sip}", "transports": ["udp"], "channels": channels, "t38": "off"},
        )  # fmt: skip
        self.serve = ServeProcess("serve", config, api, TOKEN, args=["--workers", str(workers)],
                                  client_timeout=60)  # fmt: skip
        self.fars = [
            Receiver("127.0.0.1", root, name=f"far{i}", options=["--channels", str(far_channels), "--t38",
                                                                   "off"])
            for i in range(far_ends)
        ]
        self.pids: dict[str, int] = {}
        self.node_label: dict[str, str] = {}
        self.channels = channels

    def start(self) -> None:
        self.serve.start(timeout=120)
        nodes = wait_for(self._nodes_up, 120, f"{self.workers} worker nodes not up")
        for i, node in enumerate(sorted(nodes, key=lambda n: n["id"])):
            pid = int(str(node["info"]["process"]).split(":")[1])
            self.pids[f"worker{i}"] = pid
            self.node_label[str(node["id"])] = f"worker{i}"
            if self.cap is not None:
                self.cap.limit(pid, f"w{i}")
        if self.workers > 1:
            assert self.serve.proc is not None
            self.pids["supervisor"] = self.serve.proc.pid
        for i, far in enumerate(self.fars):
            self.pids[f"far{i}"] = far.proc.pid
        for far in self.fars:
            wait_for(lambda far=far: _udp_bound(far.port), 30, f"{far.name} not listening")

    def _nodes_up(self) -> list[dict[str, Any]] | None:
        try:
            nodes = [n for n in self.serve.get("/v1/nodes")["nodes"] if n["state"] == "up"]
        except Exception:
            return None
        ready = [n for n in nodes if (n.get("info") or {}).get("process")]
        return ready if len(ready) >= self.workers else None

    def cpu(self) -> dict[str, float]:
        return {label: proc_cpu_seconds(pid) or 0.0 for label, pid in self.pids.items()}

    def close(self) -> None:
        self.serve.stop(60)
        for far in self.fars:
            far.close()


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _report(call: dict[str, Any]) -> dict[str, Any] | None:
    path = call.get("report")
    if not path:
        return None
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    level = peak = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


def run_step(rig: CapacityRig, calls: int, document: bytes, lead: float, args: argparse.Namespace,
             baseline: float) -> Step:  # fmt: skip
    step = Step(calls, channels_per_worker=rig.channels)
    offsets = [len(f.calls()) for f in rig.fars]
    client = rig.serve.client
    begin = time.time()
    start_at = begin + lead
    ids: list[str] = []
    for i in range(calls):
        far = rig.fars[i % len(rig.fars)]
        form = {"to": far.uri, "resolution": "standard", "t38": "off", "not_before": f"{start_at:.3f}"}
        r = client.post("/v1/jobs", data=form, files={"document": ("page.tif", document, "image/tiff")})
        r.raise_for_status()
        ids.append(r.json()["id"])
    step.submit_s = time.time() - begin
    step.late_start_s = max(0.0, time.time() - start_at)
    while time.time() < start_at:
        time.sleep(min(0.05, start_at - time.time()))
    cpu0, busy0, t0 = rig.cpu(), machine_busy_seconds(), time.time()
    throttled0 = sum(rig.cap.throttled().values()) if rig.cap else 0.0
    mine = set(ids)
    deadline = time.monotonic() + args.step_timeout
    while time.monotonic() < deadline:
        pending = client.get("/v1/jobs", params={"state": ["queued", "in_flight"], "limit": 1000}).json()
        if not any(j["id"] in mine for j in pending["jobs"]):
            break
        time.sleep(1.0)
    cpu1, busy1, t1 = rig.cpu(), machine_busy_seconds(), time.time()
    step.throttled_s = (sum(rig.cap.throttled().values()) if rig.cap else 0.0) - throttled0
    jobs = []
    offset = 0
    while True:
        page = client.get("/v1/jobs", params={"limit": 1000, "offset": offset}).json()["jobs"]
        jobs += [j for j in page if j["id"] in mine]
        if len(page) < 1000:
            break
        offset += 1000
    finished = [datetime.fromisoformat(j["finished_at"]).timestamp() for j in jobs if j["finished_at"]]
    step.completed = sum(1 for j in jobs if j["state"] == "completed")
    step.failed = calls - step.completed
    for j in jobs:
        with contextlib.suppress(Exception):
            events = client.get(f"/v1/jobs/{j['id']}").json()["events"]
            node = next((e["payload"]["node"] for e in events if (e.get("payload") or {}).get("node")), "?")
            label = rig.node_label.get(node, node)
            step.jobs_per_worker[label] = step.jobs_per_worker.get(label, 0) + 1
        if j["state"] != "completed":
            key = f"{j['state']}: {j['status'] or ''} {j['last_error'][:80]}".strip()
            step.failures[key] = step.failures.get(key, 0) + 1
    end = max(finished) if finished else t1
    step.span_s = end - start_at
    step.per_min = step.completed / step.span_s * 60 if step.span_s > 0 else 0.0

    # the far ends: their view of the calls (a JSON line each once it ended; bounded wait for the last)
    def far_calls() -> list[dict[str, Any]]:
        return [c for f, n in zip(rig.fars, offsets, strict=True) for c in f.calls()[n:]]

    with contextlib.suppress(AssertionError):  # a bounded wait: the figures say what arrived
        wait_for(lambda: len(far_calls()) >= calls, 20, "far ends")
    fc = far_calls()
    step.far_ok = sum(1 for c in fc if c.get("ok"))
    durations, spans = [], []
    for c in fc:
        rep = _report(c)
        if c.get("ok"):
            durations.append(float(c["duration_seconds"]))
        if rep:
            started = float(rep.get("started_at") or 0)
            spans.append((started, started + float(rep.get("duration_seconds") or 0)))
            rtp = (rep.get("rtp") or {}).get("received") or {}
            step.packets += int(rtp.get("packets_received", 0))
            step.late += int(rtp.get("late", 0))
            step.lost += int(rtp.get("lost", 0))
            step.frames_missing += int(rtp.get("frames_missing", 0))
    step.peak_simultaneous = _peak_overlap(spans)
    if durations:
        step.mean_call_s = statistics.fmean(durations)
        step.max_call_s = max(durations)
    step.stretch = step.mean_call_s / baseline if baseline and durations else 1.0
    window = max(t1 - t0, 1e-6)
    step.cpu_s = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
    ours = sum(step.cpu_s.values())
    step.cpu_s["other"] = round(max(0.0, busy1 - busy0 - ours), 2)
    step.cores = {k: round(v / window, 2) for k, v in step.cpu_s.items()}
    worker_cpu = sum(v for k, v in step.cpu_s.items() if k.startswith(("worker", "supervisor")))
    far_cpu = sum(v for k, v in step.cpu_s.items() if k.startswith("far"))
    step.worker_cpu_ms_per_fax = worker_cpu / max(step.completed, 1) * 1000
    step.far_cpu_ms_per_fax = far_cpu / max(step.far_ok, 1) * 1000

    if step.completed < calls:
        step.why_not.append(f"{calls - step.completed} of {calls} jobs not completed")
    if step.far_ok < calls:
        step.why_not.append(f"far ends received {step.far_ok} of {calls}")
    if step.packets and (step.late + step.lost) > args.max_late * step.packets:
        step.why_not.append(f"late+lost RTP {step.late + step.lost} of {step.packets} packets"
                            f" (> {args.max_late:.2%})")  # fmt: skip
    if baseline and step.stretch > args.max_stretch:
        step.why_not.append(f"mean call {step.mean_call_s:.1f} s = {step.stretch:.2f}x the unloaded"
                            f" {baseline:.1f} s (> {args.max_stretch}x)")  # fmt: skip
    if step.late_start_s > 2:
        step.why_not.append(f"submission overran the common start by {step.late_start_s:.1f} s")
    step.carried = not step.why_not
    return step


def ramp(root: Path, workers: int, cap_cores: float | None, steps: list[int], args: argparse.Namespace,
         document: bytes) -> Ramp:  # fmt: skip
    result = Ramp(workers, cap_cores, args.far_ends)
    cap = CpuCap(cap_cores) if cap_cores else None
    label = f"--workers {workers}" + (f", each capped at {cap_cores:g} core" if cap_cores else "")
    rig: CapacityRig | None = None
    say(f"{label}: a fresh service per step, each worker's device with ceil(calls / {workers}) channels")
    try:
        per_job = 0.15  # seconds to submit one job (upload, conversion): then as the last batch measured
        for calls in steps:
            # a fresh service per step, its channels split evenly: a worker claims up to its channels,
            # so with more it could take a whole batch while the other idles
            rig = CapacityRig(root / f"step{calls}", workers, -(-calls // workers), args.far_ends, cap, calls)
            rig.start()
            lead = max(3.0, calls * per_job * 1.5 + 3.0)
            step = run_step(rig, calls, document, lead, args, result.baseline_s)
            rig.close()
            if cap is not None:
                cap.close()
            if step.calls > 1:
                per_job = step.submit_s / step.calls
            if not result.baseline_s and calls == 1 and step.carried:
                result.baseline_s = step.mean_call_s
            result.steps.append(step)
            say(step_line(step))
            if step.carried:
                result.peak = step
            else:
                break
    except Exception as exc:  # a bench reports what it saw; the error is part of the figures
        result.error = f"{type(exc).__name__}: {exc}"
        say(f"{label}: error: {result.error}\n{rig.serve.output()[-2000:] if rig else ''}")
    finally:
        if rig is not None:
            rig.close()
        if cap is not None:
            cap.close()
    return result


def step_line(s: Step) -> str:
    cores = " ".join(f"{k} {v:.2f}" for k, v in s.cores.items())
    text = (f"  {s.calls:>4} calls: {s.completed}/{s.calls} completed, far ok {s.far_ok}, peak simultaneous"
            f" {s.peak_simultaneous}, {s.per_min:.1f} faxes/min (span {s.span_s:.1f} s, submit"
            f" {s.submit_s:.1f} s), call mean {s.mean_call_s:.1f} s max {s.max_call_s:.1f} s"
            f" (x{s.stretch:.2f}), RTP late {s.late} lost {s.lost} of {s.packets},"
            f" missing frames {s.frames_missing}\n"
            f"        cores used: {cores}; CPU per fax: workers {s.worker_cpu_ms_per_fax:.0f} ms,"
            f" far ends {s.far_cpu_ms_per_fax:.0f} ms"
            + (f"; quota throttled {s.throttled_s:.1f} s" if s.throttled_s else "")
            + f"; jobs per worker {s.jobs_per_worker}"
            + ("  -> carried" if s.carried else "  -> NOT carried: " + "; ".join(s.why_not)))  # fmt: skip
    if s.failures:
        text += "\n        failures: " + "; ".join(f"{n}x {k}" for k, n in s.failures.items())
    return text


def verdict(ramps: list[Ramp]) -> list[dict[str, Any]]:
    """One comparison per cap setting between the fewest and the most workers."""
    out = []
    for cap in sorted({r.cap_cores for r in ramps}, key=lambda c: c or 0):
        rs = sorted((r for r in ramps if r.cap_cores == cap), key=lambda r: r.workers)
        if len(rs) < 2:
            continue
        one, many = rs[0], rs[-1]
        item: dict[str, Any] = {"cap_cores": cap, "workers": [one.workers, many.workers]}
        if one.peak is None or many.peak is None:
            item["text"] = "no comparison: a ramp carried no step" + (f" ({one.error or many.error})"
                                                                      if one.error or many.error else "")
            out.append(item)
            continue
        calls = many.peak.peak_simultaneous / max(one.peak.peak_simultaneous, 1)
        rate = many.peak.per_min / max(one.peak.per_min, 1e-9)
        item |= {"calls_ratio": round(calls, 2), "per_min_ratio": round(rate, 2), "met": calls >= TARGET}
        topped = [r for r in (one, many) if r.peak is r.steps[-1]]
        where = f"capped at {cap:g} core per worker" if cap else "uncapped, far ends on the same cores"
        text = (f"{where}: peak simultaneous calls {one.peak.peak_simultaneous} ({one.workers} worker) vs"
                f" {many.peak.peak_simultaneous} ({many.workers}): {calls:.2f}x;"
                f" faxes/min {one.peak.per_min:.1f} vs {many.peak.per_min:.1f}: {rate:.2f}x;"
                f" target {TARGET}x "
                + ("MET" if calls >= TARGET else "NOT MET"))  # fmt: skip
        brackets = []
        for r in (one, many):
            above = r.steps[-1].calls if r.steps[-1] is not r.peak else None
            brackets.append(f"{r.workers} worker(s) [{r.peak.calls}, {above if above else 'untested'})")
        text += " (limits bracketed by the steps: " + ", ".join(brackets) + ")"
        if topped:
            names = ", ".join(f"--workers {r.workers}" for r in topped)
            text += f" (the ramp of {names} carried its largest step: its limit is higher; add --calls)"
        if calls < TARGET and one.peak is not one.steps[-1]:
            first_fail = one.steps[-1] if not one.steps[-1].carried else None
            at = first_fail or one.peak
            busy = sum(at.cores.values())
            text += (f". Why: at {at.calls} calls with {one.workers} worker the machine was already busy"
                     f" {busy:.2f} of {os.cpu_count()} cores (workers"
                     f" {sum(v for k, v in at.cores.items() if k.startswith(('worker', 'supervisor'))):.2f},"
                     f" far ends {sum(v for k, v in at.cores.items() if k.startswith('far')):.2f},"
                     f" other {at.cores.get('other', 0):.2f}); per fax the far ends cost"
                     f" {at.far_cpu_ms_per_fax:.0f} ms CPU and the sender {at.worker_cpu_ms_per_fax:.0f} ms")
            if at.cores.get("other", 0) > 0.3:
                text += (f"; other processes took {at.cores['other']:.2f} cores meanwhile"
                         + (f" and the submission overran the start by {at.late_start_s:.1f} s"
                            if at.late_start_s > 2 else "") + ": rerun on a quiet machine")
            else:
                text += ("; the far ends on the same machine need as much CPU as the sender, so a second"
                         " worker finds no free core")
        item["text"] = text
        out.append(item)
    return out


def capacity(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    say(f"== capacity: G.711 one-page standard faxes, {args.far_ends} loopback far ends, steps {args.calls}")
    tmp.mkdir(parents=True, exist_ok=True)
    page = docfactory.fax_tiff(tmp / "page.tif", y_dpi=98)
    document = page.read_bytes()
    caps: list[float | None] = []
    if args.uncapped:
        caps.append(None)
    skipped = None
    if args.worker_cpu:
        skipped = CpuCap.unavailable()
        if skipped:
            say(f"--worker-cpu {args.worker_cpu}: skipped ({skipped})")
        else:
            caps.append(args.worker_cpu)
    ramps = []
    for cap in caps:
        for w in args.workers:
            steps = args.cap_calls if cap else args.calls
            ramps.append(ramp(tmp / f"cap{cap or 0}-w{w}", w, cap, steps, args, document))
    verdicts = verdict(ramps)
    for v in verdicts:
        say(v["text"])
    return {"ramps": [asdict(r) for r in ramps], "verdicts": verdicts, "cap_skipped": skipped}


# ======================================================================================================
# claim latency
# ======================================================================================================


def claim(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    say(f"== claim latency: {args.claim_jobs} queued jobs (bench/store_claim.py)")
    return {"rows": store_claim.measure(args.claim_jobs, args.claimers, log=say)}


# ======================================================================================================
# failover
# ======================================================================================================


def _send(doc: Path, to: str, source: str, out: Path, wrap: Callable[[list[str]], list[str]] = list
          ) -> tuple[Any, Path, Path]:  # fmt: skip
    report = out.with_suffix(".report.json")
    argv = vfax_argv("send", str(doc), "--to", to, "--listen", f"{source}:0", "--resolution", "standard",
                     "--t38", "off", "--json", "--report", str(report))  # fmt: skip
    return spawn(wrap(argv), out.with_suffix(".log"), out=out), out, report


def _answered(report: dict[str, Any]) -> tuple[float | None, float | None]:
    """(INVITE-to-200 seconds, wall time of the 200) from a call report's SIP ladder."""
    ladder = report.get("sip", {}).get("ladder", [])
    invite = next((s["t"] for s in ladder if s["dir"] == "out" and s["line"].startswith("INVITE")), None)
    ok = next((s["t"] for s in ladder if s["dir"] == "in" and s["line"].startswith("SIP/2.0 200")), None)
    if invite is None or ok is None:
        return None, None
    return ok - invite, float(report["started_at"]) + ok


def failover_dispatch(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """(a) node death -> Kamailio routes around it."""
    if find_kamailio() is None:
        say("(a) dispatcher: skipped, kamailio is not installed")
        return {"skipped": "kamailio not installed"}
    tmp.mkdir(parents=True, exist_ok=True)
    net = TestNetwork(["kam", "node1", "node2", "node3"], allow_netns=netns_allowed() and args.netns)
    out: dict[str, Any] = {"network": net.mode, "network_reason": net.reason}
    nodes: dict[str, ServeProcess] = {}
    others: list[Any] = []
    ds: DispatcherServer | None = None
    try:
        kam = net["kam"]
        kam_port = kam.port(5060)
        pbx_port = free_port(socket.SOCK_DGRAM, net.gateway)
        pbx = Receiver(net.gateway, tmp, name="pbx", port=pbx_port)
        others.append(pbx)
        targets = {}
        for name in ("node1", "node2", "node3"):
            host = net[name]
            sip, api = host.port(5060), host.port(8025)
            config = write_config(
                tmp / name, api=f"{host.address}:{api}", token=TOKEN, log_level="warning",
                device={"listen": f"{host.address}:{sip}", "transports": ["udp"], "channels": 4, "t38": "off",
                        "server": f"{kam.address}:{kam_port}", "allow_invite_from": [kam.address]},
            )  # fmt: skip
            nodes[name] = ServeProcess(name, config, f"{host.address}:{api}", TOKEN, wrap=host.wrap)
            targets[name] = f"{host.address}:{sip}"
        for node in nodes.values():
            node.start(wait=False)
        for node in nodes.values():
            node.wait_healthy()
        ds = DispatcherServer(tmp / "dispatcher", host=kam.address, udp_port=kam_port, prefix=kam.wrap([]),
                              nodes=list(targets.values()), pbxs=[f"{net.gateway}:{pbx_port}"],
                              probe_from=net.gateway).start()  # fmt: skip
        uri = {name: f"sip:{t}" for name, t in targets.items()}
        wait_for(lambda: all(ds.destinations().get(u, "").startswith("A") for u in uri.values()), 30,
                 "not every node active in the dispatcher")  # fmt: skip
        say(f"(a) dispatcher: lab/cluster/kamailio.cfg, 3 nodes, network {net.mode}"
            + (f" ({net.reason})" if net.reason else ""))  # fmt: skip

        # 1. an idle node dies: probing alone takes it out
        killed = time.time()
        nodes["node3"].kill9()
        wait_for(lambda: ds.destinations().get(uri["node3"], "").startswith("I"), 60, "node3 not marked down")
        down = [e.at for e in ds.events() if e.uri == uri["node3"] and e.state == "DOWN" and e.at >= killed]
        out["idle_down_s"] = round(down[0] - killed, 2) if down else None
        say(f"    idle node killed: marked DOWN by OPTIONS probing after {out['idle_down_s']} s")

        # 2. a node dies under traffic: calls placed at once, one of them to the dead node
        doc = docfactory.fax_tiff(tmp / "page.tif", y_dpi=98)
        fax_to = f"sip:fax@{kam.address}:{kam_port}"
        killed = time.time()
        nodes["node1"].kill9()
        sends = []
        for i in range(args.failover_calls):
            sends.append(_send(doc, fax_to, net.gateway, tmp / f"call-{i}.json"))
            others.append(sends[-1][0])
            time.sleep(0.1)
        calls = []
        for proc, json_out, report_path in sends:
            try:
                proc.wait(180)
            except Exception:
                proc.kill()
            text = json_out.read_text().strip() if json_out.exists() else ""
            result = json.loads(text.splitlines()[-1]) if text else {"ok": False}
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            setup, answered = _answered(report)
            hops = ds.routed_to(str(result.get("call_id"))) if result.get("call_id") else []
            name_of = {u: n for n, u in uri.items()}
            calls.append({
                "ok": bool(result.get("ok")), "hops": [name_of.get(h, h) for h in hops],
                "invite_to_200_s": None if setup is None else round(setup, 2),
                "kill_to_answer_s": None if answered is None else round(answered - killed, 2),
            })  # fmt: skip
        down = [e.at for e in ds.events() if e.uri == uri["node1"] and e.state == "DOWN" and e.at >= killed]
        out["busy_down_s"] = round(down[0] - killed, 2) if down else None
        out["calls"] = calls
        hit = [c for c in calls if c["hops"][:1] == ["node1"]]
        out["failover_answer_s"] = hit[0]["kill_to_answer_s"] if hit else None
        for c in calls:
            say(f"    call {'ok' if c['ok'] else 'FAILED'} via {' -> '.join(c['hops']) or '?'}: INVITE to 200"
                f" {c['invite_to_200_s']} s, {c['kill_to_answer_s']} s after the kill")  # fmt: skip
        say(f"    node killed under traffic: marked DOWN after {out['busy_down_s']} s;"
            + (f" the call routed to it answered by {hit[0]['hops'][-1]} {hit[0]['kill_to_answer_s']} s after"
               " the kill" if hit else " no call was routed to it (round robin)"))  # fmt: skip
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        say(f"(a) dispatcher: error: {out['error']}")
    finally:
        for proc in others:
            if isinstance(proc, Receiver):
                proc.close()
            else:
                stop_process(proc, 5)
        for node in nodes.values():
            node.stop(20)
        if ds is not None:
            with contextlib.suppress(Exception):
                ds.stop()
        net.close()
    return out


def failover_jobs(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """(b) node death -> its in-flight job retried by another node."""
    if find_bindir() is None:
        say("(b) job retry: skipped, PostgreSQL is not installed")
        return {"skipped": "postgresql not installed"}
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"lease_s": args.lease, "heartbeat_s": args.heartbeat, "give_up_s": args.give_up}
    pg = PostgresServer()
    nodes: dict[str, ServeProcess] = {}
    far = None
    try:
        pg.start()
        database = pg.create_database("failover")
        far = Receiver("127.0.0.1", tmp, name="far", options=["--t38", "off"])
        for name in ("node1", "node2"):
            api = f"127.0.0.1:{free_port()}"
            config = write_config(
                tmp / name, api=api, token=TOKEN, database=database, log_level="info",
                retry={"max_attempts": 3, "backoff": [1], "jitter": 0},
                service={"node_id": name, "lease_seconds": args.lease, "heartbeat_seconds": args.heartbeat,
                         "give_up_seconds": args.give_up},
                device={"listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "transports": ["udp"],
                        "channels": 1, "t38": "off", "media_timeout": 10},
            )  # fmt: skip
            nodes[name] = ServeProcess(name, config, api, TOKEN, args=["--workers", "1"])
        for node in nodes.values():
            node.start(wait=False)
        for node in nodes.values():
            node.wait_healthy()
        doc = docfactory.fax_tiff(tmp / "pages.tif", y_dpi=98, pages=args.failover_pages)
        with doc.open("rb") as f:
            form = {"to": far.uri, "resolution": "standard", "t38": "off"}
            files = {"document": ("pages.tif", f, "image/tiff")}
            r = nodes["node1"].client.post("/v1/jobs", data=form, files=files)
        r.raise_for_status()
        job_id = r.json()["id"]

        def claimer() -> ServeProcess | None:
            needle = f"job {job_id} claimed by node"
            return next((n for n in nodes.values() if f"{needle} {n.name}" in n.output()), None)

        x = wait_for(claimer, 60, "nobody claimed the job")
        y = next(n for n in nodes.values() if n is not x)
        wait_for(lambda: any(e["status"] == args.kill_at for e in y.get(f"/v1/jobs/{job_id}")["events"]), 90,
                 f"the call of {x.name} did not reach {args.kill_at}")  # fmt: skip
        killed = time.time()
        x.kill9()
        job = y.final(job_id, 240)
        requeued = y.log_time("expired leases of other nodes")
        dialing: dict[str, float] = {}
        for e in job["events"]:
            cid = (e.get("payload") or {}).get("call_id")
            if e["type"] == "status" and e["status"] == "dialing" and cid:
                dialing.setdefault(cid, datetime.fromisoformat(e["at"]).timestamp())
        retry_dialed = sorted(dialing.values())[-1] if len(dialing) >= 2 else None
        done = datetime.fromisoformat(job["finished_at"]).timestamp() if job.get("finished_at") else None
        terminal = [e["status"] for e in job["events"] if e["type"] == "terminal"]
        out |= {
            "killed_node": x.name, "retried_by": y.name, "killed_at_status": args.kill_at,
            "kill_to_requeue_s": None if requeued is None else round(requeued - killed, 2),
            "kill_to_retry_dial_s": None if retry_dialed is None else round(retry_dialed - killed, 2),
            "kill_to_completed_s": None if done is None else round(done - killed, 2),
            "state": job["state"], "attempts": job["attempts"], "terminal_events": terminal,
            "far_complete": len(far.complete()), "far_partial": len(far.partial()),
        }  # fmt: skip
        say(f"(b) job retry: PostgreSQL, 2 nodes, lease {args.lease:g} s, heartbeat {args.heartbeat:g} s,"
            f" give-up {args.give_up:g} s; {x.name} killed at '{args.kill_at}' of a"
            f" {args.failover_pages}-page job: requeued by {y.name} after {out['kill_to_requeue_s']} s,"
            f" retry dialled after {out['kill_to_retry_dial_s']} s,"
            f" {job['state']} after {out['kill_to_completed_s']} s"
            f" (attempts {job['attempts']}, terminal events {terminal})")  # fmt: skip
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        say(f"(b) job retry: error: {out['error']}")
        for node in nodes.values():
            say(f"--- {node.name} log ---\n{node.output()[-1500:]}")
    finally:
        for node in nodes.values():
            node.stop(20)
        if far is not None:
            far.close()
        pg.close()
    return out


def failover(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    say("== failover")
    out = {}
    if "a" in args.failover:
        out["dispatcher"] = failover_dispatch(args, tmp / "dispatch")
    if "b" in args.failover:
        out["jobs"] = failover_jobs(args, tmp / "jobs")
    return out


# ======================================================================================================


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--part", default="capacity,claim,failover", help="comma-separated parts to run")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (text on stderr)")
    p.add_argument("--smoke", action="store_true", help="the smallest run of each part (for the test)")
    g = p.add_argument_group("capacity")
    g.add_argument("--workers", type=_ints, default=[1, 2], help="worker counts (default 1,2)")
    g.add_argument("--calls", type=_ints, default=[1, 200, 400, 600, 800, 1000, 1200],
                   help="simultaneous calls per step, ramped; start with 1 for the unloaded call time")
    g.add_argument("--far-ends", type=int, default=2, help="loopback vfax receive processes (default 2)")
    g.add_argument("--max-late", type=float, default=0.001, help="late+lost RTP share a step may have")
    g.add_argument("--max-stretch", type=float, default=1.10, help="mean call time over the unloaded one")
    g.add_argument("--step-timeout", type=float, default=300, help="seconds a step may take")
    g.add_argument("--uncapped", choices=("yes", "no"), default="yes", help="run the ramps without a cap")
    g.add_argument("--worker-cpu", type=float, default=0.25,
                   help="also ramp with each worker capped at this share of a core (0: no capped ramps)")
    g.add_argument("--cap-calls", type=_ints, default=[1, 100, 200, 300, 400, 500],
                   help="steps of the capped ramps (default 1,100,...,500)")
    g = p.add_argument_group("claim")
    g.add_argument("--claim-jobs", type=int, default=1000)
    g.add_argument("--claimers", type=_ints, default=[1, 2])
    g = p.add_argument_group("failover")
    g.add_argument("--lease", type=float, default=8.0, help="lease_seconds of the nodes (b)")
    g.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat_seconds (b)")
    g.add_argument("--give-up", type=float, default=4.0, help="give_up_seconds (b)")
    g.add_argument("--failover-pages", type=int, default=2, help="pages of the job killed mid-call (b)")
    g.add_argument("--kill-at", default="transmitting", choices=("dialing", "answered", "transmitting"),
                   help="job status at which its node is killed (b)")
    g.add_argument("--failover-calls", type=int, default=3, help="calls placed right after the kill (a)")
    g.add_argument("--failover", default="a,b", help="a: dispatcher, b: job retry (default both)")
    g.add_argument("--no-netns", dest="netns", action="store_false", help="127.0.0.x hosts even as root (a)")
    args = p.parse_args(argv)
    args.uncapped = args.uncapped == "yes"
    if args.smoke:
        args.workers, args.calls, args.worker_cpu, args.far_ends = [1, 2], [1], 0.0, 1
        args.claim_jobs, args.claimers = 20, [1]
        args.lease, args.heartbeat, args.give_up = 3.0, 1.0, 2.0
        args.failover_pages, args.kill_at, args.failover_calls = 1, "dialing", 2
    return args


def main(argv: list[str] | None = None) -> None:
    global _say
    args = parse_args(argv)
    if args.json:
        _say = lambda text="": print(text, file=sys.stderr, flush=True)  # noqa: E731
    else:
        _say = lambda text="": print(text, flush=True)  # noqa: E731
    parts = [x.strip() for x in args.part.split(",") if x.strip()]
    unknown = set(parts) - {"capacity", "claim", "failover"}
    if unknown:
        raise SystemExit(f"--part: unknown {sorted(unknown)} (capacity, claim, failover)")
    result: dict[str, Any] = {"code": code_version(), "cores": os.cpu_count(), "argv": sys.argv[1:]}
    say(f"vfax {result['code']}, {result['cores']} cores; bench/cluster.py {' '.join(sys.argv[1:])}")
    tmp = Path(tempfile.mkdtemp(prefix="vfax-bench-cluster-"))
    try:
        for part, run in (("capacity", capacity), ("claim", claim), ("failover", failover)):
            if part in parts:
                began = time.monotonic()
                result[part] = run(args, tmp / part)
                result[part]["elapsed_s"] = round(time.monotonic() - began, 1)
                say(f"({part}: {result[part]['elapsed_s']} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
