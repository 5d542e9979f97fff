"""Controller for ``pjsua_peer.py``: start the process, send commands, wait for events.

The process is a plain ``subprocess.Popen`` read by a thread, so one peer can be created in a sync
fixture and then be driven from sync code (``command_sync``/``wait_event_sync``) or from any asyncio
loop (``await command(...)``/``await wait_event(...)``) without blocking the loop that runs vfax.

Events are kept in ``events`` (everything, in order). ``wait_event`` returns the oldest event that
matches and has not been returned by an earlier ``wait_event``, so an event that arrived before the
wait is not lost and is not returned twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PEER_SCRIPT = Path(__file__).with_name("pjsua_peer.py")
Predicate = Callable[[dict[str, Any]], bool]


class PeerError(RuntimeError):
    """The peer refused a command, died, or did not answer in time."""


class PeerTimeout(PeerError, TimeoutError):
    """No matching event or response within the timeout."""


def _matcher(event: str | Predicate | None, fields: dict[str, Any], since: int = 0) -> Predicate:
    def match(item: dict[str, Any]) -> bool:
        if item["_seq"] < since:
            return False
        if isinstance(event, str) and item.get("event") != event:
            return False
        if callable(event) and not event(item):
            return False
        return all(item.get(key) == value for key, value in fields.items())

    return match


class PjsuaPeer:
    """One pjsua2 user agent in its own process."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, name: str):
        self.process = process
        self.workdir = workdir
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._unclaimed: list[dict[str, Any]] = []
        self._responses: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._eof = False
        self._write_lock = threading.Lock()
        self.ports: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, name=f"pjsua-{name}", daemon=True)
        self._reader.start()

    @property
    def log_path(self) -> Path:
        """pjsua2's own log (SIP messages included) once ``init`` was sent with the default log file."""
        return self.workdir / "pjsua.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    @classmethod
    def start(
        cls,
        workdir: Path,
        name: str = "peer",
        *,
        python: str = sys.executable,
        timeout: float = 10.0,
    ) -> PjsuaPeer:
        """Spawn the peer process and wait for its ``started`` event."""
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [python, "-u", str(PEER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=workdir,
                start_new_session=True,
            )
        peer = cls(process, workdir, name)
        try:
            peer.wait_event_sync("started", timeout=timeout)
        except PeerError:
            peer.close()
            raise
        return peer

    def init(self, **args: Any) -> dict[str, Any]:
        """Send ``init`` (log file in the workdir by default) and remember the SIP ports."""
        args.setdefault("log_file", str(self.log_path))
        result = self.command_sync("init", timeout=10.0, **args)
        self.ports = {"udp": result["udp_port"], "tcp": result.get("tcp_port")}
        return result

    @property
    def contact(self) -> str:
        """A URI that reaches this peer directly over UDP (no proxy)."""
        return f"sip:peer@127.0.0.1:{self.ports['udp']}"

    # -- reading --

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                logger.warning("pjsua peer %s: non-JSON output %r", self.name, raw[:200])
                continue
            with self._cond:
                if item.get("type") == "response":
                    self._responses[item.get("id")] = item
                else:
                    item["_seq"] = len(self.events)
                    self.events.append(item)
                    self._unclaimed.append(item)
                    logger.debug("pjsua peer %s event %s", self.name, item.get("event"))
                self._cond.notify_all()
                self._wake_async()
        with self._cond:
            self._eof = True
            self._cond.notify_all()
            self._wake_async()

    def _wake_async(self) -> None:
        for loop, flag in list(self._async_waiters):
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(flag.set)

    def _dead_error(self, what: str) -> PeerError:
        code = self.process.poll()
        return PeerError(f"pjsua peer {self.name} exited (code {code}) while {what}\n{self.stderr_tail()}")

    def _take_event(self, match: Predicate) -> dict[str, Any] | None:
        for index, item in enumerate(self._unclaimed):
            if match(item):
                return self._unclaimed.pop(index)
        return None

    # -- sync API --

    def _send(self, cmd: str, args: dict[str, Any]) -> int:
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        assert self.process.stdin is not None
        with self._write_lock:
            try:
                self.process.stdin.write(line.encode())
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise self._dead_error(f"sending {cmd}") from exc
        return request_id

    def _result(self, cmd: str, response: dict[str, Any]) -> dict[str, Any]:
        if not response.get("ok"):
            raise PeerError(f"pjsua peer {self.name}: {cmd} failed: {response.get('error')}")
        return response.get("result", {})

    def command_sync(self, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        """Run one command and return its result; :class:`PeerError` if refused."""
        request_id = self._send(cmd, args)
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._responses:
                if self._eof:
                    raise self._dead_error(f"waiting for {cmd}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerTimeout(f"pjsua peer {self.name}: no response to {cmd} in {timeout} s")
                self._cond.wait(remaining)
            response = self._responses.pop(request_id)
        return self._result(cmd, response)

    def mark(self) -> int:
        """A position in the event stream; pass it as ``since`` to ignore everything before it."""
        with self._cond:
            return len(self.events)

    def wait_event_sync(
        self, event: str | Predicate | None = None, timeout: float = 5.0, *, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The oldest unclaimed event named ``event`` (or satisfying it) whose ``fields`` match.

        Only events at or after ``since`` (see :meth:`mark`) are considered.
        """
        match = _matcher(event, fields, since)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._take_event(match)
                if found is not None:
                    return found
                if self._eof:
                    raise self._dead_error(f"waiting for event {event!r} {fields}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(event, fields, timeout)
                self._cond.wait(remaining)

    def _timeout(self, event: object, fields: dict[str, Any], timeout: float) -> PeerTimeout:
        recent = "\n".join(self._brief(item) for item in self.events[-15:])
        return PeerTimeout(
            f"pjsua peer {self.name}: no event {event!r} {fields} within {timeout} s; recent:\n{recent}"
        )

    @staticmethod
    def _brief(item: dict[str, Any]) -> str:
        hidden = ("rx", "invite", "sdp", "remote_sdp", "time", "_seq")
        shown = {k: v for k, v in item.items() if k not in hidden}
        return json.dumps(shown)[:300]

    # -- async API --

    async def command(self, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        request_id = self._send(cmd, args)
        response = await self._wait_async(lambda: self._responses.pop(request_id, None), timeout, cmd)
        return self._result(cmd, response)

    async def wait_event(
        self, event: str | Predicate | None = None, timeout: float = 5.0, *, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """Async twin of :meth:`wait_event_sync`; does not block the running loop."""
        match = _matcher(event, fields, since)
        try:
            return await self._wait_async(lambda: self._take_event(match), timeout, f"event {event!r}")
        except PeerTimeout:
            with self._cond:
                raise self._timeout(event, fields, timeout) from None

    async def _wait_async(self, take: Callable[[], Any], timeout: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        waiter = (loop, flag)
        deadline = loop.time() + timeout
        with self._cond:
            self._async_waiters.add(waiter)
        try:
            while True:
                with self._cond:
                    found = take()
                    eof = self._eof
                if found is not None:
                    return found
                if eof:
                    raise self._dead_error(f"waiting for {what}")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PeerTimeout(f"pjsua peer {self.name}: nothing for {what} in {timeout} s")
                flag.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flag.wait(), remaining)
        finally:
            with self._cond:
                self._async_waiters.discard(waiter)

    # -- convenience (sync; each has an obvious async twin through `command`) --

    def register(self, registrar: str, user: str, password: str, timeout: float = 5.0, **args: Any) -> dict:
        """Register and wait for the final answer; returns the ``reg_state`` event (check ``code``)."""
        name = args.get("name", "main")
        since = self.mark()
        self.command_sync("register", registrar=registrar, user=user, password=password, **args)
        return self.wait_event_sync(
            lambda e: e.get("event") == "reg_state" and e.get("account") == name and e.get("code", 0) >= 200,
            timeout=timeout,
            since=since,
        )

    def call(self, uri: str, **args: Any) -> str:
        return self.command_sync("call", uri=uri, **args)["call"]

    def status(self) -> dict[str, Any]:
        return self.command_sync("status")

    def call_status(self, handle: str) -> dict[str, Any]:
        return self.status()["calls"][handle]

    # -- teardown and diagnostics --

    def close(self, timeout: float = 3.0) -> int | None:
        """Ask the peer to quit, kill it if it does not; always leaves no process behind."""
        if self.process.poll() is None:
            with contextlib.suppress(PeerError, OSError):
                self._send("quit", {})
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()
        self._reader.join(2)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def stderr_tail(self, chars: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def failure_report(self) -> list[tuple[str, str]]:
        """Sections pytest shows when a test using this peer fails (see tests/conftest.py)."""
        events = "\n".join(self._brief(item) for item in self.events[-40:])
        return [
            (f"pjsua peer {self.name} events", events),
            (f"pjsua peer {self.name} stderr", self.stderr_tail()),
            (f"pjsua peer {self.name} log ({self.log_path})", self.log_tail()),
        ]

    def __enter__(self) -> PjsuaPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
