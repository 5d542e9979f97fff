"""`vfax serve` and `vfax receive` as child processes of a test: start, health, kill -9, stop, log, API.

Why one module: the crash, node, dispatcher and failover tests all run the service under test as real
processes (``python -m vfax.cli``) with their own addresses, and must handle them the same way: a log
file per process, a bounded wait for ``/healthz`` that fails at once when the process exited, SIGKILL
for a crash, SIGTERM then SIGKILL at teardown, the log in the report of a failing test. The tests differ
only in the configuration they write (:func:`write_config`) and the host a node runs on (``wrap``: the
``ip netns exec`` words of tests.peers.netns.Host, or nothing on 127.0.0.1).

Children start in a session of their own and get SIGTERM when the test process dies
(tests.peers.kamailio._die_with_parent), as the peers do: start them from pytest's main thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.peers.kamailio import _die_with_parent
from tests.peers.netns import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STATES = ("completed", "failed", "cancelled")
_LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")

Wrap = Callable[[Sequence[str]], list[str]]


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A free port on ``host`` (for UDP one free for TCP too, as a SIP listener wants both)."""
    return _free_port(host, kind)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something true (returned); fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} (waited {timeout} s)")


def vfax_argv(*args: str) -> list[str]:
    """The command line of ``vfax ARGS`` from this checkout (not an installed vfax)."""
    return [sys.executable, "-m", "vfax.cli", *args]


def spawn(argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
          out: Path | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``argv`` from the checkout with stderr (and stdout, unless ``out`` takes it) appended to
    ``log``; its own session, and SIGTERM when the test process dies."""
    with log.open("ab") as err, (out.open("wb") if out else contextlib.nullcontext(err)) as stdout:
        return subprocess.Popen(
            list(argv), cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=err if out is not None else subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 40) -> None:
    """SIGTERM (after SIGCONT, in case a test froze it), then SIGKILL if it is not gone in ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a TOML basic string for what tests write (no control characters)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(root: Path, *, api: str, token: str, device: Mapping[str, Any], database: str | None = None,
                 inbox: Path | None = None, retry: Mapping[str, Any] | None = None,
                 service: Mapping[str, Any] | None = None, log_level: str = "info") -> Path:  # fmt: skip
    """<root>/vfax.toml for one node: data in <root>/data, the API on ``api`` (HOST:PORT) with ``token``,
    one device named line1 (``device``: its other keys), optional [retry] and [service] tables."""
    lines = [f"data_dir = {_toml(root / 'data')}", f"log_level = {_toml(log_level)}"]
    if database is not None:
        lines.append(f"database = {_toml(database)}")
    if inbox is not None:
        lines.append(f"inbox = {_toml(inbox)}")
    tables: list[tuple[str, Mapping[str, Any]]] = [("[api]", {"listen": api, "token": token})]
    tables += [(name, keys) for name, keys in (("[retry]", retry), ("[service]", service)) if keys]
    tables.append(("[[devices]]", {"name": "line1", **device}))
    for header, keys in tables:
        lines += ["", header, *(f"{key} = {_toml(value)}" for key, value in keys.items())]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "vfax.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class ServeProcess:
    """One `vfax serve --config <config>` (log in <config's folder>/serve.log) and a client of its API.

    ``api`` is the API's HOST:PORT, ``wrap`` runs the command on the node's host, ``args`` are further
    `serve` options (``--workers 1``), ``env`` further environment variables for every start."""

    def __init__(self, name: str, config: Path, api: str, token: str, *, wrap: Wrap | None = None,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 client_timeout: float = 10) -> None:  # fmt: skip
        self.name = name
        self.config = config
        self.dir = config.parent
        self.log = self.dir / "serve.log"
        self.wrap: Wrap = wrap or list
        self.args = list(args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://{api}", headers={"Authorization": f"Bearer {token}"},
                                   timeout=client_timeout)  # fmt: skip

    def start(self, env: Mapping[str, str] | None = None, *, wait: bool = True, timeout: float = 60) -> None:
        argv = self.wrap(vfax_argv("serve", *self.args, "--config", str(self.config)))
        self.proc = spawn(argv, self.log, env={**self.env, **(env or {})})
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(self._healthy, timeout, f"{self.name}: vfax serve did not come up:\n{self.output()[-3000:]}")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name}: vfax serve exited {self.proc.returncode}:\n{self.output()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_time(self, needle: str) -> float | None:
        """Wall-clock time of the first log line containing ``needle`` (the log's asctime, ms)."""
        for line in self.output().splitlines():
            match = _LOG_TIME_RE.match(line)
            if match and needle in line:
                return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def get(self, path: str) -> Any:
        r = self.client.get(path)
        r.raise_for_status()
        return r.json()

    def submit(self, doc: Path, to: str, **fields: str) -> str:
        """Queue ``doc`` (a PDF) for ``to`` through the API, standard resolution unless ``fields`` say
        otherwise; the job id."""
        with doc.open("rb") as f:
            r = self.client.post("/v1/jobs", data={"to": to, "resolution": "standard", **fields},
                                 files={"document": (doc.name, f, "application/pdf")})  # fmt: skip
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def final(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it reached a terminal state (bounded wait)."""
        return dict(wait_for(
            lambda: (j := self.get(f"/v1/jobs/{job_id}"))["state"] in TERMINAL_STATES and j,
            timeout, f"job {job_id} did not finish",
        ))  # fmt: skip

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 40) -> None:
        stop_process(self.proc, timeout)
        self.client.close()

    def failure_report(self) -> list[tuple[str, str]]:
        return [(f"{self.name} serve log", self.output()[-8000:])]


class Receiver:
    """`vfax receive --json` on ``address`` (a free port unless given): one JSON line per call that
    ended in <root>/<name>.json, faxes in <root>/<name>-inbox, its log in <root>/<name>.log."""

    def __init__(self, address: str, root: Path, *, name: str = "far", port: int | None = None,
                 options: Sequence[str] = (), wrap: Wrap | None = None) -> None:  # fmt: skip
        self.name = name
        self.port = port or free_port(socket.SOCK_DGRAM, address)
        self.uri = f"sip:fax@{address}:{self.port}"
        self.inbox = root / f"{name}-inbox"
        self.out = root / f"{name}.json"
        self.log = root / f"{name}.log"
        argv = vfax_argv("receive", "--listen", f"{address}:{self.port}", "--inbox", str(self.inbox),
                         "--json", *options)  # fmt: skip
        self.proc = spawn((wrap or list)(argv), self.log, out=self.out)

    def calls(self) -> list[dict[str, Any]]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [json.loads(line) for line in lines if line.strip().startswith("{")]

    def complete(self) -> list[Path]:
        """Faxes received whole (T.30 phase E confirmed: the inbox keeps no '-partial' name)."""
        return sorted(p for p in self.inbox.glob("fax-*.tif") if "-partial" not in p.name)

    def partial(self) -> list[Path]:
        return sorted(self.inbox.glob("fax-*-partial*.tif"))

    def close(self) -> None:
        stop_process(self.proc, 15)

    def failure_report(self) -> list[tuple[str, str]]:
        texts = [f.read_text(errors="replace")[-3000:] for f in (self.log, self.out) if f.exists()]
        return [(f"{self.name} receiver", "\n".join(texts))]
