"""`vfax serve --workers N`: one machine, N worker processes (each a node with its own SIP ports), one API.

Real processes on 127.0.0.1 with the embedded SQLite store: the supervisor under test runs as
`python -m vfax.cli serve --workers 2`, the far end is a loopback `vfax receive`. Which worker placed a
call is read from the service log (every line of a worker names it: ``w0``, ``w1``). Waits are bounded;
durations are never asserted.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import docfactory
from tests.serve_process import free_port
from vfax.store.sqlite import SqliteJobStore

TOKEN = "workers-test-token"
ROOT = Path(__file__).resolve().parent.parent
STRIDE = 10


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VFAX_")}
    return dict(clean, PYTHONPATH=str(ROOT))


def port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def sip_base_port(workers: int = 2) -> int:
    """A port P such that P, P + STRIDE, ... are free (UDP and TCP) for every worker."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        if port + STRIDE * workers < 65536 and all(port_free(port + k * STRIDE) for k in range(workers)):
            return port
    raise AssertionError("no free SIP port range")


def write_config(tmp: Path, api_port: int, sip_port: int, extra_device: str = "") -> Path:
    data = tmp / "data"
    path = tmp / "vfax.toml"
    path.write_text(f"""
data_dir = "{data}"
log_level = "info"

[api]
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"

[service]
worker_port_stride = {STRIDE}

[retry]
max_attempts = 3
backoff = [1, 1]
jitter = 0

[[devices]]
name = "line1"
listen = "127.0.0.1:{sip_port}"
transports = ["udp", "tcp"]
channels = 2
media_timeout = 10
{extra_device}
""")
    return path


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(what)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Serve:
    """`vfax serve --workers N` as a subprocess, its log in a file."""

    def __init__(self, tmp: Path, workers: int = 2) -> None:
        self.tmp = tmp
        self.workers = workers
        self.api_port = free_port()
        self.sip_port = sip_base_port(workers)
        self.config = write_config(tmp, self.api_port, self.sip_port)
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}",
                                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip

    def start(self) -> None:
        argv = [sys.executable, "-m", "vfax.cli", "serve", "--config", str(self.config),
                "--workers", str(self.workers)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(lambda: self.ready_count() >= self.workers or self.proc.poll() is not None, 90,
                 "the workers did not come up")  # fmt: skip
        assert self.proc.poll() is None, self.text()
        wait_for(self._healthy, 30, "the API did not answer")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready_count(self) -> int:
        return len(re.findall(r"worker \d+ ready", self.text()))

    def worker_pids(self) -> dict[int, int]:
        """The last pid started for each worker index (from the supervisor's log)."""
        pids: dict[int, int] = {}
        for k, pid in re.findall(r"worker (\d+) started \(pid (\d+)", self.text()):
            pids[int(k)] = int(pid)
        return pids

    def _healthy(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        r = self.client.get(path)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.worker_pids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.client.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path)
    yield s
    s.stop()


def options(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfax.cli", "options", f"sip:x@127.0.0.1:{port}",
                           "--timeout", "10"], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def start_receiver(tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port(socket.SOCK_DGRAM)
    inbox = tmp / "far-inbox"
    argv = [sys.executable, "-m", "vfax.cli", "receive", "--listen", f"127.0.0.1:{port}",
            "--inbox", str(inbox), "--channels", "8"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=(tmp / "far.log").open("ab"),
                            stderr=subprocess.STDOUT)  # fmt: skip

    def listening() -> bool:
        assert proc.poll() is None, (tmp / "far.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, 30, "the receiver never listened")
    return proc, port, inbox


def submit(serve: Serve, doc: Path, to: str) -> str:
    with doc.open("rb") as f:
        r = serve.client.post("/v1/jobs", data={"to": to, "resolution": "standard"},
                              files={"document": ("doc.pdf", f, "application/pdf")})  # fmt: skip
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["id"])


def test_two_workers_share_one_api_and_the_queue_then_survive_a_kill_and_stop_cleanly(
    tmp_path: Path, serve: Serve
) -> None:
    far, far_port, far_inbox = start_receiver(tmp_path)
    try:
        serve.start()
        pids = serve.worker_pids()
        assert sorted(pids) == [0, 1], serve.text()
        # every worker is a node with its own SIP port: both answer OPTIONS
        for k in range(2):
            ping = options(serve.sip_port + k * STRIDE)
            assert ping.returncode == 0, f"worker {k}: {ping.stdout}{ping.stderr}"

        doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=1)
        jobs = [submit(serve, doc, f"sip:fax@127.0.0.1:{far_port}") for _ in range(4)]

        def all_final() -> list[dict[str, Any]] | None:
            got = [serve.get(f"/v1/jobs/{j}") for j in jobs]
            return got if all(g["state"] in ("completed", "failed", "cancelled") for g in got) else None

        done = wait_for(all_final, 240, "the 4 jobs did not all finish")
        for job in done:
            assert job["state"] == "completed", (job, serve.text())
            assert job["attempts"] == 1, job
            assert job["pages_sent"] == 1, job
            assert [e["type"] for e in job["events"]].count("terminal") == 1, job
        # the far end places each fax once its call ended: wait for the 4 files, then none more
        wait_for(lambda: len(list(far_inbox.glob("*.tif"))) >= 4, 60, (tmp_path / "far.log").read_text())
        time.sleep(2)
        tiffs = sorted(far_inbox.glob("*.tif"))
        assert len(tiffs) == 4, (tiffs, (tmp_path / "far.log").read_text())

        # which worker placed each call: the worker's log line recording the attempt names it
        placed: dict[str, str] = {}
        recorded = r" (w\d) vfax\.controller: job (\S+): completed after attempt"
        for worker, job_id in re.findall(recorded, serve.text()):
            assert job_id not in placed, f"job {job_id} recorded twice"
            placed[job_id] = worker
        assert sorted(placed) == sorted(jobs), serve.text()
        assert set(placed.values()) == {"w0", "w1"}, placed

        # kill -9 of worker 1: the supervisor restarts it; the API answers all along
        victim = serve.worker_pids()[1]
        os.kill(victim, signal.SIGKILL)
        # a kept-alive connection that the dead worker held is gone with it: new connections are served
        serve.client.close()
        for _ in range(20):
            r = httpx.get(f"http://127.0.0.1:{serve.api_port}/v1/jobs", params={"limit": 5},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
            assert r.status_code == 200, r.text
            time.sleep(0.1)
        serve.client = httpx.Client(base_url=f"http://127.0.0.1:{serve.api_port}",
                                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
        wait_for(lambda: serve.worker_pids()[1] != victim, 60, "worker 1 was not restarted")
        wait_for(lambda: serve.ready_count() >= 3, 60, "the restarted worker 1 did not get ready")
        assert "worker 1" in serve.text() and "killed by SIGKILL" in serve.text(), serve.text()
        ping = options(serve.sip_port + STRIDE)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert serve.get("/v1/jobs")["jobs"], "the API lost the jobs"

        # SIGTERM: every worker stops and leaves its node; the supervisor exits 0
        assert serve.proc is not None
        pids = serve.worker_pids()
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(60) == 0, serve.text()
        wait_for(lambda: not any(alive(p) for p in pids.values()), 10, "a worker outlived the supervisor")
        with SqliteJobStore(tmp_path / "data" / "vfax.db") as store:
            nodes = {n.id: n.state for n in store.list_nodes()}
        assert len(nodes) == 2 and set(nodes.values()) == {"stopped"}, nodes
        assert sorted(n.rsplit("-", 1)[1] for n in nodes) == ["w0", "w1"], nodes
    finally:
        far.send_signal(signal.SIGTERM)
        far.wait(30)


def test_a_bad_config_is_refused_once_before_any_worker_starts(tmp_path: Path) -> None:
    api_port, sip = free_port(), sip_base_port()
    # a second device STRIDE ports above the first: worker 1's line1 would take line2's port of worker 0
    line2 = f'[[devices]]\nname = "line2"\nlisten = "127.0.0.1:{sip + STRIDE}"\n'
    config = write_config(tmp_path, api_port, sip, extra_device=line2)
    argv = [sys.executable, "-m", "vfax.cli", "serve", "--config", str(config), "--workers", "2"]
    run = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "worker_port_stride" in run.stderr, run.stderr
    assert run.stderr.count("error:") == 1, run.stderr
    assert "started (pid" not in run.stderr, run.stderr
    assert not (tmp_path / "data" / "vfax.db").exists()  # nothing was opened, nothing changed

    config.write_text(config.read_text().replace("channels = 2", "channels = 2\nchanels = 3"))
    run = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("error:") == 1 and "chanels" in run.stderr, run.stderr
    assert "started (pid" not in run.stderr, run.stderr


def test_a_worker_that_keeps_crashing_at_start_stops_the_supervisor_non_zero(tmp_path: Path) -> None:
    api_port, sip = free_port(), sip_base_port()
    config = write_config(tmp_path, api_port, sip)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", sip + STRIDE))  # worker 1's SIP port is taken
    try:
        argv = [sys.executable, "-m", "vfax.cli", "serve", "--config", str(config), "--workers", "2"]
        run = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    finally:
        blocker.close()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "worker 1 keeps failing at start" in run.stderr, run.stderr
    assert run.stderr.count("worker 1 started (pid") >= 2, run.stderr  # it was restarted before giving up


def test_two_workers_placing_faxes_in_one_inbox_at_once_never_overwrite_one_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers share the inbox: a name chosen by one must not be taken by another before it is used."""
    from vfax import inbox as inbox_module
    from vfax import storage
    from vfax.inbox import Inbox

    monkeypatch.setattr(inbox_module.time, "strftime", lambda fmt, *a: "20261204-120000")  # one second
    box = Inbox(tmp_path / "inbox")
    box.directory.mkdir(parents=True, exist_ok=True)
    part1, part2 = box.directory / ".rx-1.tif.part", box.directory / ".rx-2.tif.part"
    part1.write_bytes(b"fax one " * 100)
    part2.write_bytes(b"fax two " * 100)
    real_commit = storage.commit_file
    other: list[Any] = []
    raced: list[bool] = []

    def racing_commit(tmp: Path, dst: Path) -> Path:
        if not raced:  # another worker places its fax between our choice of a name and our rename
            raced.append(True)
            other.append(box.place(part2, {}, 1, True))
        return real_commit(tmp, dst)

    monkeypatch.setattr(storage, "commit_file", racing_commit)
    mine = box.place(part1, {}, 1, True)
    assert mine.tiff is not None and other[0].tiff is not None
    assert mine.tiff != other[0].tiff
    assert mine.tiff.read_bytes() == b"fax one " * 100
    assert other[0].tiff.read_bytes() == b"fax two " * 100
    assert sorted(p.name for p in box.directory.glob("*.tif")) == [
        "fax-20261204-120000-2.tif", "fax-20261204-120000.tif",
    ]  # fmt: skip
    assert not list(box.directory.glob(".*.lock"))


def test_an_advertised_port_moves_with_the_worker_listen_port() -> None:
    from vfax.service.workers import worker_advertise

    assert worker_advertise("192.0.2.7:5060", 0, 10) == "192.0.2.7:5060"
    assert worker_advertise("192.0.2.7:5060", 2, 10) == "192.0.2.7:5080"
    assert worker_advertise("192.0.2.7", 3, 10) == "192.0.2.7"  # no port: each worker's own
    assert worker_advertise(None, 1, 10) is None
