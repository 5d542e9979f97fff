"""Fax events and where they go: a Python callback, a JSON-lines file (or stdout), HTTP webhooks.

The job store is the outbox. A state change and its event are written in one transaction
(:meth:`vfax.store.base.StoreBase.append_event` is the only way to write an event; the records are in
:mod:`vfax.store.events`); the
:class:`EventDispatcher` then reads undelivered events from the store and hands them to every sink,
recording per sink what was delivered, what is to be retried and when, and what was given up on (dead
letter). A crash between the state change and the delivery therefore loses nothing.

Delivery guarantees
-------------------
- **At least once.** An event is marked delivered only after the sink accepted it; after a crash or a
  failed acknowledgement it is sent again. Receivers dedupe on the stable event id
  (``"<job_id>.<seq>"``, also in the ``X-Vfax-Event-Id`` header of webhooks).
- **In order per job, per sink.** Event ``seq`` n+1 of a job is not handed to a sink before ``seq`` n was
  delivered or dead-lettered there. Different jobs and different sinks do not wait for one another.
- **Exactly one terminal event per job**, enforced by the database (a unique partial index), so a
  receiver sees ``type == "terminal"`` once per job id (modulo at-least-once re-sends of that same id).
- A sink that keeps failing gets ``max_attempts`` tries with its back-off between them, then a dead-letter
  row in the store (:meth:`~vfax.store.base.StoreBase.dead_letters`), and the job's later events go on.

JSON shape of an event (``FaxEvent.to_dict()``, version 1; keys are only ever added)::

    {"v": 1, "id": "01JDX....3", "job_id": "01JDX...", "seq": 3,
     "type": "status" | "page" | "terminal", "terminal": false,
     "status": "transmitting", "status_code": 536870914, "status_name": "FS_TRANSMITTING",
     "at": "2026-11-27T01:02:03.456Z", "payload": {...}}

``status`` is :attr:`vfax.status.FaxStatus.string_id`, ``status_code`` the Windows ``FS_*`` number,
``at`` the UTC time the event was recorded (ISO 8601, milliseconds). ``payload`` depends on the type:
``page``: ``{"pages": n}`` (as the controller reports them); ``terminal``: ``{"state": "completed" |
"failed" | "cancelled" | "partial", "pages", "error", "reason", ...}``; an outbound attempt that will be
retried gives a ``status`` event carrying the attempt's outcome (e.g. ``"busy"``) with ``{"retry": true,
"not_before": <Unix time>, "attempt", "reason", ...}``, so "busy" there is not the end of the job.

Run one dispatcher per sink and database: two would both deliver (still at-least-once, but twice as
many duplicates). In a cluster, the controller of each node runs a sink only while it holds the sink's
role in the store (:meth:`~vfax.store.base.StoreBase.hold_role`, renewed with each heartbeat), so each
sink is delivered by one node at a time, and by another once that node dies (after its lease).

Webhooks: ``POST`` of the JSON body (UTF-8, compact, keys sorted) with ``Content-Type:
application/json``, ``X-Vfax-Event-Id``, ``X-Vfax-Timestamp`` (Unix seconds of the attempt) and
``X-Vfax-Signature: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>``; check it with
:func:`verify_signature`. Any 2xx is delivered; any other status, a time-out or a connection error is a
failed attempt. Redirects are not followed. The signature covers the body only: trust the body's ``at``
and ``id`` (signed) rather than the timestamp header when rejecting replays.

Public API
----------
:class:`FaxEvent`; sinks :class:`CallbackSink`, :class:`JsonLinesSink`, :class:`WebhookSink` (protocol
:class:`Sink`: ``name``, ``max_attempts``, ``retry_delay(attempts)``, ``async deliver(event)``);
:class:`EventDispatcher` (``start``/``wake``/``stop``/``run_once``/``rescan``) over an
:class:`EventOutbox` (the store); :func:`sign` and :func:`verify_signature` for receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import inspect
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vfax.store.events import (
    EventOutbox,
    FaxEvent,
    OutboxItem,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vfax-Signature"
EVENT_ID_HEADER = "X-Vfax-Event-Id"
TIMESTAMP_HEADER = "X-Vfax-Timestamp"


# --------------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A sink could not deliver an event (the dispatcher retries it with back-off)."""


class Sink(Protocol):
    """Where events go. ``name`` keys the delivery records in the store: keep it stable across restarts."""

    name: str
    max_attempts: int

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed tries (1-based)."""
        ...

    async def deliver(self, event: FaxEvent) -> None:
        """Deliver or raise (any exception is a failed attempt)."""
        ...

    async def aclose(self) -> None: ...


class _BaseSink:
    def __init__(self, name: str, backoff: Sequence[float], max_attempts: int | None) -> None:
        if not backoff or any(b < 0 for b in backoff):
            raise ValueError(f"backoff must be a non-empty sequence of delays >= 0, got {backoff!r}")
        self.name = name
        self.backoff = tuple(float(b) for b in backoff)
        self.max_attempts = len(self.backoff) + 1 if max_attempts is None else max_attempts
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def retry_delay(self, attempts: int) -> float:
        return self.backoff[min(max(attempts, 1), len(self.backoff)) - 1]

    async def aclose(self) -> None:
        return None


class CallbackSink(_BaseSink):
    """Calls ``fn(event)`` (a function or a coroutine function); an exception is a failed attempt."""

    def __init__(
        self,
        fn: Callable[[FaxEvent], object] | Callable[[FaxEvent], Awaitable[object]],
        *,
        name: str = "callback",
        backoff: Sequence[float] = (1.0, 5.0, 30.0),
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(name, backoff, max_attempts)
        self._fn = fn

    async def deliver(self, event: FaxEvent) -> None:
        result = self._fn(event)
        if inspect.isawaitable(result):
            await result


class JsonLinesSink(_BaseSink):
    """One JSON object per line: appended, flushed and fsynced per event to a file, or written to stdout
    for ``"-"``. After a crash the last events may appear twice (at-least-once): dedupe on ``id``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        backoff: Sequence[float] = (1.0, 5.0, 30.0),
        max_attempts: int | None = None,
    ) -> None:
        self.path = "-" if str(path) == "-" else Path(path)
        super().__init__(name or f"jsonl:{self.path}", backoff, max_attempts)

    def _write(self, line: bytes) -> None:
        if self.path == "-":
            sys.stdout.write(line.decode() + "\n")
            sys.stdout.flush()
            return
        assert isinstance(self.path, Path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line + b"\n"
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    async def deliver(self, event: FaxEvent) -> None:
        await asyncio.to_thread(self._write, event.to_json())


def sign(secret: bytes | str, body: bytes) -> str:
    """The ``X-Vfax-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes | str, body: bytes, header: str) -> bool:
    """Constant-time check of an ``X-Vfax-Signature`` header against the raw request body."""
    return hmac.compare_digest(sign(secret, body), header.strip())


class WebhookSink(_BaseSink):
    """POSTs each event as JSON to ``url`` (http or https), signed with HMAC-SHA256 of the raw body.

    Uses ``http.client`` in a worker thread (no extra dependency); one connection per attempt.
    """

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        timeout: float = 10.0,
        backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0),
        max_attempts: int | None = None,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")
        super().__init__(name or f"webhook:{url}", backoff, max_attempts)
        self.url = url
        self._parts = parts
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.timeout = timeout
        self._clock = clock

    def request_for(self, event: FaxEvent) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST for ``event`` (exposed so tests and docs can show them)."""
        body = event.to_json()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "vfax",
            EVENT_ID_HEADER: event.event_id,
            TIMESTAMP_HEADER: str(int(self._clock())),
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        return body, headers

    def _post(self, body: bytes, headers: dict[str, str]) -> int:
        parts = self._parts
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            return response.status
        finally:
            conn.close()

    async def deliver(self, event: FaxEvent) -> None:
        body, headers = self.request_for(event)
        try:
            status = await asyncio.to_thread(self._post, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryError(f"POST {self.url}: {type(exc).__name__}: {exc}") from exc
        if not 200 <= status <= 299:
            raise DeliveryError(f"POST {self.url}: HTTP {status}")


# --------------------------------------------------------------------------------------------------
# The dispatcher
# --------------------------------------------------------------------------------------------------


@dataclass
class _SinkState:
    sink: Sink
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    after_id: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class EventDispatcher:
    """Delivers the store's undelivered events to every sink: one asyncio task per sink.

    ``await dispatcher.start()`` runs it in the background, ``wake()`` (cheap, call it after appending
    events) makes it look now instead of at the next poll, ``await dispatcher.stop()`` ends it.
    ``await dispatcher.run_once()`` makes one pass over every sink (what tests use); it returns the number
    of events handed to sinks. A sink's failure never stops the others; after a restart the scan starts
    from the first unsettled event, so nothing is skipped.
    """

    def __init__(
        self,
        store: EventOutbox,
        sinks: Sequence[Sink],
        *,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        batch: int = 200,
    ) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique (they key the delivery records): {names}")
        self._store = store
        self._states = [_SinkState(s) for s in sinks]
        self._poll = poll_interval
        self._clock = clock
        self._batch = batch
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def names(self) -> list[str]:
        return [s.sink.name for s in self._states]

    @property
    def running(self) -> set[str]:
        """The sinks being delivered now."""
        return set(self._tasks)

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {
            s.sink.name: {"delivered": s.delivered, "failed": s.failed, "dead": s.dead} for s in self._states
        }

    def rescan(self) -> None:
        """Scan every sink's outbox from the start again (after ``retry_dead_letters``)."""
        for state in self._states:
            state.after_id = 0
        self.wake()

    def wake(self) -> None:
        for state in self._states:
            state.wake.set()

    async def run_once(self) -> int:
        counts = await asyncio.gather(*(self._pass(state) for state in self._states))
        return sum(c for c, _ in counts)

    async def _pass(self, state: _SinkState) -> tuple[int, float | None]:
        """Deliver every due event for one sink; returns (events tried, next retry time or None)."""
        tried = 0
        while True:
            batch = await asyncio.to_thread(
                self._store.pending_events,
                state.sink.name,
                now=self._clock(),
                after_id=state.after_id,
                limit=self._batch,
            )
            state.after_id = max(state.after_id, batch.settled_through)
            if not batch.items:
                return tried, batch.next_due
            progressed = False
            stalled: set[str] = set()
            for item in batch.items:
                if item.event.job_id in stalled:
                    continue
                tried += 1
                if await self._deliver(state, item):
                    progressed = True
                else:
                    stalled.add(item.event.job_id)
            if not progressed:
                # every due event failed this round: their retries are scheduled; a new scan tells when
                again = await asyncio.to_thread(
                    self._store.pending_events,
                    state.sink.name,
                    now=self._clock(),
                    after_id=state.after_id,
                    limit=self._batch,
                )
                if again.items:
                    continue
                return tried, again.next_due

    async def _deliver(self, state: _SinkState, item: OutboxItem) -> bool:
        sink = state.sink
        try:
            await sink.deliver(item.event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempts = item.attempts + 1
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DeliveryError) else str(exc)
            now = self._clock()
            if attempts >= sink.max_attempts:
                state.dead += 1
                log.error(
                    "sink %s: event %s dead-lettered after %d attempts: %s",
                    sink.name,
                    item.event.event_id,
                    attempts,
                    error,
                )
                await asyncio.to_thread(
                    self._store.mark_dead_letter, sink.name, item.rowid, error=error, now=now
                )
                return True
            state.failed += 1
            delay = sink.retry_delay(attempts)
            log.warning(
                "sink %s: event %s attempt %d failed (%s); retry in %.1f s",
                sink.name,
                item.event.event_id,
                attempts,
                error,
                delay,
            )
            await asyncio.to_thread(
                self._store.mark_retry, sink.name, item.rowid, error=error, next_try=now + delay, now=now
            )
            return False
        state.delivered += 1
        await asyncio.to_thread(self._store.mark_delivered, sink.name, item.rowid, now=self._clock())
        return True

    async def _run_sink(self, state: _SinkState) -> None:
        while True:
            try:
                _, next_due = await self._pass(state)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sink %s: dispatcher pass failed; trying again", state.sink.name)
                next_due = None
            wait = self._poll
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout=wait)
            state.wake.clear()

    async def start(self) -> None:
        await self.run_only(self.names)

    async def run_only(self, names: Collection[str]) -> None:
        """Deliver the sinks named and pause the others (a cluster delivers each sink from one node: the
        one that holds its role). A resumed sink scans its outbox from the start: another node may have
        delivered meanwhile, and the store knows what is settled."""
        for state in self._states:
            name = state.sink.name
            if name in names and name not in self._tasks:
                state.wake = asyncio.Event()  # an asyncio.Event belongs to one loop: make it in this one
                state.after_id = 0  # another node may have delivered meanwhile: the store knows
                self._tasks[name] = asyncio.create_task(self._run_sink(state), name=f"vfax-events:{name}")
            elif name not in names and name in self._tasks:
                task = self._tasks.pop(name)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def stop(self) -> None:
        await self.run_only(())
        for state in self._states:
            await state.sink.aclose()
