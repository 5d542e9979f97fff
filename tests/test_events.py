"""Events and sinks: JSON shape, callback, JSON lines, signed webhooks with retries and dead letters,
ordered at-least-once delivery from the store's outbox, one terminal event per job."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vfax.service.events import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackSink,
    EventDispatcher,
    FaxEvent,
    JsonLinesSink,
    WebhookSink,
    sign,
    verify_signature,
)
from vfax.status import FaxStatus
from vfax.store.model import TerminalEventExistsError
from vfax.store.sqlite import SqliteJobStore

SECRET = "s3cret"
T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteJobStore]:
    """The outbox of either store (the dispatcher reads both through the same protocol)."""
    if request.param == "sqlite":
        s = SqliteJobStore(tmp_path / "jobs.db", clock=FakeClock())
    else:
        from vfax.store.postgres import PostgresJobStore

        s = PostgresJobStore(request.getfixturevalue("postgres").url, clock=FakeClock())  # type: ignore[assignment]
    yield s
    s.close()


def _job_events(store: SqliteJobStore, job_id: str) -> list[FaxEvent]:
    return [
        store.append_event(job_id, "status", FaxStatus.FS_DIALING),
        store.append_event(job_id, "page", FaxStatus.FS_TRANSMITTING, {"pages": 1}),
        store.append_event(job_id, "terminal", FaxStatus.FS_COMPLETED, {"state": "completed", "pages": 1}),
    ]


# -- a webhook receiver on 127.0.0.1 ------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    attempts: int = 0
    accepted: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_events(self) -> list[dict[str, object]]:
        return [json.loads(body) for _, body in self.accepted]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.attempts += 1
                failing = state.attempts <= state.fail_first
                if not failing:
                    state.accepted.append((dict(self.headers.items()), body))
            self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fax?tenant=1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the event model ----------------------------------------------------------------------------


def test_event_json_shape_is_stable_and_round_trips() -> None:
    event = FaxEvent("01JOB", 3, "terminal", FaxStatus.FS_BUSY, T0 + 0.25, {"pages": 0})
    data = json.loads(event.to_json())
    assert data == {
        "v": 1,
        "id": "01JOB.3",
        "job_id": "01JOB",
        "seq": 3,
        "type": "terminal",
        "terminal": True,
        "status": "busy",
        "status_code": 0x20000040,
        "status_name": "FS_BUSY",
        "at": "2027-01-15T08:00:00.250Z",
        "payload": {"pages": 0},
    }
    assert FaxEvent.from_dict(data) == event
    assert event.to_json() == event.to_json()  # canonical bytes: what the signature covers


def test_event_refuses_unknown_type_and_seq_zero() -> None:
    with pytest.raises(ValueError, match="type"):
        FaxEvent("j", 1, "done", FaxStatus.FS_COMPLETED, T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seq"):
        FaxEvent("j", 0, "status", FaxStatus.FS_DIALING, T0)


def test_signature_verifies_and_tampering_is_detected() -> None:
    body = b'{"id":"x.1"}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("other", body, header)


# -- callback and JSON lines --------------------------------------------------------------------


def test_callback_sink_gets_every_event_once_in_order(store: SqliteJobStore) -> None:
    events = _job_events(store, "job-a")
    seen: list[FaxEvent] = []
    seen_async: list[str] = []

    async def async_fn(event: FaxEvent) -> None:
        seen_async.append(event.event_id)

    dispatcher = EventDispatcher(
        store, [CallbackSink(seen.append), CallbackSink(async_fn, name="async")], clock=FakeClock()
    )
    assert asyncio.run(dispatcher.run_once()) == 6
    assert seen == events
    assert seen_async == ["job-a.1", "job-a.2", "job-a.3"]
    assert asyncio.run(dispatcher.run_once()) == 0


def test_json_lines_file_holds_one_event_per_line(store: SqliteJobStore, tmp_path: Path) -> None:
    events = _job_events(store, "job-a") + _job_events(store, "job-b")
    out = tmp_path / "log" / "events.jsonl"
    asyncio.run(EventDispatcher(store, [JsonLinesSink(out)], clock=FakeClock()).run_once())
    lines = out.read_text().splitlines()
    parsed = [FaxEvent.from_dict(json.loads(line)) for line in lines]
    assert sorted(parsed, key=lambda e: (e.job_id, e.seq)) == events
    assert [e.seq for e in parsed if e.job_id == "job-b"] == [1, 2, 3]


def test_json_lines_to_stdout(store: SqliteJobStore, capsys: pytest.CaptureFixture[str]) -> None:
    _job_events(store, "job-a")
    asyncio.run(EventDispatcher(store, [JsonLinesSink("-")], clock=FakeClock()).run_once())
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["job-a.1", "job-a.2", "job-a.3"]


# -- webhooks -----------------------------------------------------------------------------------


def test_webhook_recovers_after_failures_and_delivers_in_order_with_valid_signatures(
    store: SqliteJobStore, receiver: Receiver
) -> None:
    receiver.fail_first = 3
    a = _job_events(store, "job-a")
    b = _job_events(store, "job-b")
    clock = FakeClock()
    sink = WebhookSink(receiver.url, SECRET, timeout=5, backoff=(10.0, 20.0), max_attempts=5, clock=clock)
    dispatcher = EventDispatcher(store, [sink], clock=clock)

    asyncio.run(dispatcher.run_once())  # job-a.1 and job-b.1 fail; both jobs wait for their retry
    assert receiver.attempts == 2 and receiver.accepted == []
    clock.now += 10
    asyncio.run(dispatcher.run_once())  # one more failure, then the receiver is back
    clock.now += 20
    asyncio.run(dispatcher.run_once())

    got = receiver.accepted_events()
    assert [e["id"] for e in got if e["job_id"] == "job-a"] == [e.event_id for e in a]
    assert [e["id"] for e in got if e["job_id"] == "job-b"] == [e.event_id for e in b]
    assert len(got) == 6
    for headers, body in receiver.accepted:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
        assert headers[EVENT_ID_HEADER] == json.loads(body)["id"]
        assert int(headers[TIMESTAMP_HEADER]) >= int(T0)
        assert headers["Content-Type"] == "application/json"
    assert store.dead_letters() == []
    assert dispatcher.stats[sink.name] == {"delivered": 6, "failed": 3, "dead": 0}


def test_webhook_that_stays_down_ends_in_dead_letters_in_job_order(store: SqliteJobStore) -> None:
    events = _job_events(store, "job-a")
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    sink = WebhookSink(url, SECRET, timeout=2, backoff=(0.0,), max_attempts=3)
    asyncio.run(EventDispatcher(store, [sink], clock=FakeClock()).run_once())
    dead = store.dead_letters(sink.name)
    assert [d.event for d in dead] == events
    assert all(d.attempts == 3 and "Connection" in d.last_error for d in dead)
    assert store.delivery(sink.name, dead[0].rowid)["delivered_at"] is None  # type: ignore[index]


def test_dead_letters_can_be_given_another_chance(store: SqliteJobStore) -> None:
    _job_events(store, "job-a")
    up = False
    got: list[str] = []

    def receiver(event: FaxEvent) -> None:
        if not up:
            raise ConnectionError("down")
        got.append(event.event_id)

    dispatcher = EventDispatcher(
        store, [CallbackSink(receiver, backoff=(0.0,), max_attempts=2)], clock=FakeClock()
    )
    asyncio.run(dispatcher.run_once())
    assert len(store.dead_letters("callback")) == 3 and got == []
    up = True
    assert store.retry_dead_letters("callback") == 3
    dispatcher.rescan()
    asyncio.run(dispatcher.run_once())
    assert got == ["job-a.1", "job-a.2", "job-a.3"] and store.dead_letters() == []


def test_webhook_refuses_a_non_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://127.0.0.1/x", SECRET)


# -- the outbox and the dispatcher --------------------------------------------------------------


def test_later_events_of_a_job_wait_for_an_earlier_one_that_is_being_retried(store: SqliteJobStore) -> None:
    _job_events(store, "job-a")
    other = store.append_event("job-b", "status", FaxStatus.FS_DIALING)
    delivered: list[str] = []
    failures = {"job-a.1": 1}

    def flaky(event: FaxEvent) -> None:
        if failures.get(event.event_id, 0) > 0:
            failures[event.event_id] -= 1
            raise RuntimeError("receiver hiccup")
        delivered.append(event.event_id)

    clock = FakeClock()
    dispatcher = EventDispatcher(store, [CallbackSink(flaky, backoff=(30.0,))], clock=clock)
    asyncio.run(dispatcher.run_once())
    assert delivered == [other.event_id]  # job-b is not held up by job-a
    clock.now += 30
    asyncio.run(dispatcher.run_once())
    assert delivered == [other.event_id, "job-a.1", "job-a.2", "job-a.3"]


def test_a_failing_sink_does_not_hold_up_the_others(store: SqliteJobStore, tmp_path: Path) -> None:
    _job_events(store, "job-a")

    def broken(event: FaxEvent) -> None:
        raise OSError("disk on fire")

    out = tmp_path / "events.jsonl"
    dispatcher = EventDispatcher(
        store, [CallbackSink(broken, backoff=(60.0,)), JsonLinesSink(out)], clock=FakeClock()
    )
    asyncio.run(dispatcher.run_once())
    assert len(out.read_text().splitlines()) == 3
    assert dispatcher.stats["callback"]["failed"] == 1


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, nothing is recorded."""


def test_undelivered_events_are_resent_after_a_restart_with_the_same_id(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteJobStore(path)
    _job_events(first, "job-a")
    received: list[str] = []

    def dies_after_receiving_the_second(event: FaxEvent) -> None:
        received.append(event.event_id)
        if event.seq == 2:
            raise Crash  # the receiver got it, but we die before storing the acknowledgement

    with pytest.raises(Crash):
        asyncio.run(
            EventDispatcher(first, [CallbackSink(dies_after_receiving_the_second, name="cb")]).run_once()
        )
    first.close()

    second = SqliteJobStore(path)
    second.append_event("job-b", "status", FaxStatus.FS_DIALING)
    asyncio.run(
        EventDispatcher(second, [CallbackSink(lambda e: received.append(e.event_id), name="cb")]).run_once()
    )
    second.close()
    # at least once: job-a.2 came twice (same id, receivers dedupe), nothing was skipped or reordered
    assert received == ["job-a.1", "job-a.2", "job-a.2", "job-a.3", "job-b.1"]


def test_sinks_see_exactly_one_terminal_event_per_job(store: SqliteJobStore) -> None:
    _job_events(store, "job-a")
    with pytest.raises(TerminalEventExistsError):
        store.append_event("job-a", "terminal", FaxStatus.FS_FATAL_ERROR)
    seen: list[FaxEvent] = []
    asyncio.run(EventDispatcher(store, [CallbackSink(seen.append)], clock=FakeClock()).run_once())
    assert [e.status for e in seen if e.terminal] == [FaxStatus.FS_COMPLETED]
    assert [e.seq for e in seen] == [1, 2, 3]


def test_background_dispatcher_delivers_when_woken_and_stops_cleanly(store: SqliteJobStore) -> None:
    async def scenario() -> list[str]:
        got: asyncio.Queue[str] = asyncio.Queue()
        dispatcher = EventDispatcher(
            store, [CallbackSink(lambda e: got.put_nowait(e.event_id))], poll_interval=60
        )
        await dispatcher.start()
        store.append_event("job-a", "status", FaxStatus.FS_DIALING)
        dispatcher.wake()
        first = await asyncio.wait_for(got.get(), timeout=10)
        store.append_event("job-a", "terminal", FaxStatus.FS_NO_ANSWER)
        dispatcher.wake()
        second = await asyncio.wait_for(got.get(), timeout=10)
        await dispatcher.stop()
        return [first, second]

    assert asyncio.run(scenario()) == ["job-a.1", "job-a.2"]


def test_duplicate_sink_names_are_refused(store: SqliteJobStore) -> None:
    with pytest.raises(ValueError, match="unique"):
        EventDispatcher(store, [CallbackSink(print), CallbackSink(print)])


def test_a_job_stuck_behind_a_retry_does_not_hide_other_jobs_events(store: SqliteJobStore) -> None:
    stuck = [store.append_event("job-a", "status", FaxStatus.FS_TRANSMITTING, {"n": n}) for n in range(12)]
    other = store.append_event("job-b", "status", FaxStatus.FS_DIALING)
    got: list[str] = []

    def refuses_job_a(event: FaxEvent) -> None:
        if event.job_id == "job-a":
            raise RuntimeError("not now")
        got.append(event.event_id)

    clock = FakeClock()
    dispatcher = EventDispatcher(store, [CallbackSink(refuses_job_a, backoff=(60.0,))], clock=clock, batch=5)
    asyncio.run(dispatcher.run_once())
    assert got == [other.event_id]
    assert store.delivery("callback", 1) is not None and store.delivery("callback", 2) is None
    assert len(stuck) == 12
