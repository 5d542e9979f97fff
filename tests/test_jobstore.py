"""The durable job store: queue order, retries, cancel, inbox, events, migrations, crash recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vfax.status import T30_ERR_CANNOT_TRAIN, FaxStatus
from vfax.store import open_store
from vfax.store.async_store import AsyncJobStore
from vfax.store.model import (
    DuplicateNodeError,
    InboundState,
    InvalidTransitionError,
    JobFilter,
    JobNotFoundError,
    JobState,
    JobStore,
    LeaseLostError,
    NodeNotFoundError,
    SchemaError,
    TerminalEventExistsError,
    new_id,
    this_process,
)
from vfax.store.options import OPT_ECM, OPT_MAX_BIT_RATE
from vfax.store.retry import AttemptResult, RetryPolicy
from vfax.store.sqlite import MIGRATIONS, SCHEMA_VERSION, Migration, SqliteJobStore, apply_migrations

T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[1]


# The contract tests run against both stores: SQLite (a file of the test's own) and PostgreSQL (a fresh
# database of the shared test server, tests/conftest.py). Tests of what only one backend has (SQLite's
# pragmas and file, pid-based crash recovery) use ``sqlite_store`` or SqliteJobStore directly; PostgreSQL's
# own (several nodes, LISTEN, restart) are in tests/test_store_postgres.py.
BACKENDS = ["sqlite", "postgres"]
_SPOOL: list[Path] = []


@pytest.fixture(autouse=True)
def _spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    _SPOOL[:] = [spool]


def doc(name: str) -> str:
    """A document file of this test (the PostgreSQL store keeps its bytes, so it must exist)."""
    path = _SPOOL[0] / name
    if not path.exists():
        path.write_bytes(b"II*\x00" + name.encode())
    return str(path)


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_store(**kw)``: a store on this test's database (several calls: several nodes sharing it)."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"

        def factory(**kw: Any) -> Any:
            return SqliteJobStore(path, **kw)

    else:
        url = request.getfixturevalue("postgres").url
        from vfax.store.postgres import PostgresJobStore

        def factory(**kw: Any) -> Any:
            return PostgresJobStore(url, **kw)

    opened: list[Any] = []

    def make(**kw: Any) -> Any:
        opened.append(factory(**kw))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: Callable[..., Any]) -> JobStore:
    return make_store(policy=RetryPolicy(jitter=0.0), clock=lambda: T0)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.db", policy=RetryPolicy(jitter=0.0), clock=lambda: T0)
    yield s
    s.close()


def _terminal_events(store: JobStore, job_id: str) -> list[FaxStatus]:
    return [e.status for e in store.events_for(job_id) if e.terminal]


# -- opening ------------------------------------------------------------------------------------


def test_store_opens_in_wal_with_full_sync_and_foreign_keys(sqlite_store: SqliteJobStore) -> None:
    store = sqlite_store
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert store.integrity_check() == "ok"


def test_version_1_database_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(conn, MIGRATIONS[:1]) == 1
    conn.execute(
        "INSERT INTO outbound_jobs (id, created_at, updated_at, document, destination, not_before,"
        " max_attempts, state, options) VALUES ('job-v1', 1, 1, '/spool/a.tif', 'sip:2000@127.0.0.1', 1, 3,"
        " 'queued', '{\"ecm\": true}')"
    )
    conn.execute(
        "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal)"
        " VALUES ('job-v1', 1, 'status', ?, '{}', 1, 0)",
        (int(FaxStatus.FS_DIALING),),
    )
    conn.close()

    with SqliteJobStore(path) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION
        job = upgraded.get("job-v1")
        assert job.destination == "sip:2000@127.0.0.1" and job.options == {"ecm": True}
        assert job.fax_failures == 0
        assert [e.status for e in upgraded.events_for("job-v1")] == [FaxStatus.FS_DIALING]
        claimed = upgraded.claim_next(now=2.0)
        assert claimed is not None and claimed.id == "job-v1"
        upgraded.record_attempt_result("job-v1", AttemptResult(FaxStatus.FS_COMPLETED, pages=1), now=3.0)
        assert upgraded.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    conn.close()


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SqliteJobStore(path) as store:
        job = store.submit("/spool/a.tif", "sip:2000@127.0.0.1")
    broken = Migration(
        SCHEMA_VERSION + 1,
        "half-done upgrade",
        ("ALTER TABLE outbound_jobs ADD COLUMN note TEXT", "CREATE TABLE oops (x INTEGER"),
    )
    with pytest.raises(sqlite3.OperationalError):
        SqliteJobStore(path, migrations=(*MIGRATIONS, broken))
    with SqliteJobStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get(job.id).state is JobState.QUEUED
        columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(outbound_jobs)")]
        assert "note" not in columns


def test_newer_schema_is_refused_by_older_code(tmp_path: Path) -> None:
    SqliteJobStore(tmp_path / "new.db").close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteJobStore(tmp_path / "new.db", migrations=MIGRATIONS[:1])


def test_ids_sort_by_creation_time() -> None:
    ids = [new_id(T0 + i * 0.002) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(len(i) == 26 for i in ids)


# -- the queue ----------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest_and_skips_scheduled_jobs(store: JobStore) -> None:
    low = store.submit(doc("low.tif"), "sip:1@127.0.0.1", priority=0, now=T0)
    high_later = store.submit(doc("h2.tif"), "sip:2@127.0.0.1", priority=5, now=T0 + 2)
    high_first = store.submit(doc("h1.tif"), "sip:3@127.0.0.1", priority=5, now=T0 + 1)
    scheduled = store.submit(doc("s.tif"), "sip:4@127.0.0.1", priority=9, not_before=T0 + 3600, now=T0)

    order = [store.claim_next(now=T0 + 10) for _ in range(4)]
    assert [j.id if j else None for j in order] == [high_first.id, high_later.id, low.id, None]
    assert all(
        j.state is JobState.IN_FLIGHT and j.attempts == 1 and j.lease_owner == store.owner for j in order if j
    )
    later = store.claim_next(now=T0 + 3600)
    assert later is not None and later.id == scheduled.id


def test_claim_for_a_device_takes_its_own_jobs_and_unassigned_ones(store: JobStore) -> None:
    other = store.submit(doc("a.tif"), "sip:1@127.0.0.1", device="line2", priority=9)
    mine = store.submit(doc("b.tif"), "sip:2@127.0.0.1", device="line1")
    anyone = store.submit(doc("c.tif"), "sip:3@127.0.0.1")
    taken = [store.claim_next(device="line1") for _ in range(3)]
    assert {j.id for j in taken if j} == {mine.id, anyone.id} and taken[2] is None
    assert store.get(other.id).state is JobState.QUEUED


def test_busy_is_rescheduled_with_backoff_then_completes_with_one_terminal_event(
    store: JobStore,
) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1", options={OPT_ECM: True, "tsid": "vfax"})
    assert store.claim_next(now=T0) is not None
    after_busy = store.record_attempt_result(
        job.id, AttemptResult(FaxStatus.FS_BUSY, sip_code=486), now=T0 + 5
    )
    assert after_busy.state is JobState.QUEUED and after_busy.not_before == T0 + 65
    assert after_busy.last_status is FaxStatus.FS_BUSY and after_busy.lease_owner is None
    assert store.claim_next(now=T0 + 64) is None
    again = store.claim_next(now=T0 + 65)
    assert again is not None and again.attempts == 2
    done = store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=3), now=T0 + 100)
    assert done.state is JobState.COMPLETED and done.pages_sent == 3 and done.finished_at == T0 + 100
    assert done.terminal_event_emitted
    events = store.events_for(job.id)
    assert [(e.seq, e.type, e.status) for e in events] == [
        (1, "status", FaxStatus.FS_BUSY),
        (2, "terminal", FaxStatus.FS_COMPLETED),
    ]
    assert events[0].payload["retry"] is True and events[1].payload["state"] == "completed"


def test_exhausted_retries_fail_the_job_once(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1", max_attempts=2)
    now = T0
    for _ in range(2):
        claimed = store.claim_next(now=now)
        assert claimed is not None
        store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_NO_ANSWER, sip_code=408), now=now)
        now += 1000
    final = store.get(job.id)
    assert final.state is JobState.FAILED and final.attempts == 2
    assert _terminal_events(store, job.id) == [FaxStatus.FS_NO_ANSWER]
    assert store.claim_next(now=now) is None


def test_fax_phase_failure_stores_the_9600_no_ecm_fallback_for_the_next_attempt(
    store: JobStore,
) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1", options={OPT_ECM: True, OPT_MAX_BIT_RATE: 14400})
    store.claim_next(now=T0)
    failed = AttemptResult(FaxStatus.FS_FATAL_ERROR, pages=0, t30_code=T30_ERR_CANNOT_TRAIN, error="no train")
    requeued = store.record_attempt_result(job.id, failed, now=T0)
    assert requeued.state is JobState.QUEUED
    assert requeued.options == {OPT_ECM: False, OPT_MAX_BIT_RATE: 9600}
    assert requeued.fax_failures == 1 and requeued.last_error == "no train"


def test_bad_address_fails_at_once(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:nobody@127.0.0.1")
    store.claim_next(now=T0)
    final = store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_BAD_ADDRESS, sip_code=404), now=T0)
    assert final.state is JobState.FAILED and final.attempts == 1


def test_cancel_queued_job_ends_it_with_user_abort(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    cancelled = store.cancel(job.id)
    assert cancelled.state is JobState.CANCELLED
    assert _terminal_events(store, job.id) == [FaxStatus.FS_USER_ABORT]
    assert store.claim_next(now=T0 + 1) is None
    assert store.cancel(job.id) == cancelled  # idempotent, no second event
    assert len(store.events_for(job.id)) == 1


def test_cancel_in_flight_job_flags_it_and_its_failure_is_not_retried(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    store.claim_next(now=T0)
    flagged = store.cancel(job.id)
    assert flagged.state is JobState.IN_FLIGHT and flagged.cancel_requested
    final = store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_BUSY), now=T0 + 1)
    assert final.state is JobState.CANCELLED
    assert _terminal_events(store, job.id) == [FaxStatus.FS_BUSY]


def test_cancel_too_late_keeps_a_completed_fax_completed(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    store.claim_next(now=T0)
    store.cancel(job.id)
    final = store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1), now=T0 + 1)
    assert final.state is JobState.COMPLETED


def test_result_for_a_job_that_is_not_in_flight_is_refused(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    with pytest.raises(InvalidTransitionError, match="queued"):
        store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1))
    with pytest.raises(JobNotFoundError):
        store.get("no-such-job")
    with pytest.raises(JobNotFoundError):
        store.cancel("no-such-job")


def test_list_filters_and_pages(store: JobStore) -> None:
    jobs = [store.submit(doc(f"{i}.tif"), f"sip:{i}@127.0.0.1", device="d1", now=T0 + i) for i in range(5)]
    store.submit(doc("x.tif"), "sip:9@127.0.0.1", device="d2", now=T0 + 10)
    store.cancel(jobs[0].id)
    assert [j.id for j in store.list(JobFilter(device="d1"), limit=2, offset=1)] == [jobs[1].id, jobs[2].id]
    queued = store.list(JobFilter(states=frozenset({JobState.QUEUED}), device="d1"))
    assert [j.id for j in queued] == [j.id for j in jobs[1:]]
    assert [j.destination for j in store.list(JobFilter(destination="sip:9@127.0.0.1"))] == [
        "sip:9@127.0.0.1"
    ]


def test_list_jobs_by_creation_time(store: JobStore) -> None:
    jobs = [store.submit(doc(f"{i}.tif"), f"sip:{i}@127.0.0.1", now=T0 + 60 * i) for i in range(4)]
    window = store.list(JobFilter(since=T0 + 60, until=T0 + 180))  # [since, until)
    assert [j.id for j in window] == [jobs[1].id, jobs[2].id]
    assert [j.id for j in store.list(JobFilter(since=T0 + 61))] == [jobs[2].id, jobs[3].id]
    assert [j.id for j in store.list(JobFilter(until=T0 + 1))] == [jobs[0].id]


# -- inbound ------------------------------------------------------------------------------------


def test_inbound_is_recorded_before_answer_and_finishes_once(store: JobStore, tmp_path: Path) -> None:
    fax = store.record_inbound(call_id="abc@127.0.0.1", caller="1001", callee="2000", device="line1")
    assert fax.state is InboundState.RECEIVING and store.get_inbound(fax.id).call_id == "abc@127.0.0.1"
    store.update_inbound(fax.id, pages=1, remote_csi="+1 555 0100")
    done = store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=2)
    assert done.state is InboundState.COMPLETED and done.pages == 2 and done.remote_csi == "+1 555 0100"
    placed = store.place_inbound_files(fax.id, tiff_path=tmp_path / "a.tif", pdf_path=tmp_path / "a.pdf")
    assert placed.pdf_path == str(tmp_path / "a.pdf")
    assert _terminal_events(store, fax.id) == [FaxStatus.FS_COMPLETED]
    with pytest.raises(InvalidTransitionError):
        store.finish_inbound(fax.id, FaxStatus.FS_DISCONNECTED, pages=2)
    with pytest.raises(InvalidTransitionError):
        store.update_inbound(fax.id, pages=3)


@pytest.mark.parametrize(
    ("status", "pages", "state"),
    [
        (FaxStatus.FS_DISCONNECTED, 2, InboundState.PARTIAL),
        (FaxStatus.FS_DISCONNECTED, 0, InboundState.FAILED),
        (FaxStatus.FS_COMPLETED, 0, InboundState.FAILED),
        (FaxStatus.FS_NOT_FAX_CALL, 0, InboundState.FAILED),
    ],
)
def test_inbound_end_state_follows_status_and_pages(
    store: JobStore, status: FaxStatus, pages: int, state: InboundState
) -> None:
    fax = store.record_inbound(call_id="c", caller="1", callee="2", device="d")
    assert store.finish_inbound(fax.id, status, pages=pages).state is state


def test_a_received_fax_is_marked_read_and_unread_and_listed_by_that(store: JobStore) -> None:
    faxes = [store.record_inbound(call_id=f"c{n}", caller="1", callee="2", device="d") for n in range(3)]
    for fax in faxes:
        store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1)
    assert store.mark_inbound_read(faxes[1].id, now=T0 + 5).read_at == T0 + 5
    assert store.mark_inbound_read(faxes[1].id, now=T0 + 9).read_at == T0 + 5  # first reading kept
    assert [f.id for f in store.list_inbound(read=True)] == [faxes[1].id]
    assert {f.id for f in store.list_inbound(read=False)} == {faxes[0].id, faxes[2].id}
    assert store.mark_inbound_read(faxes[1].id, False).read_at is None
    assert len(store.list_inbound(read=False)) == 3
    with pytest.raises(JobNotFoundError):
        store.mark_inbound_read("01NOSUCHFAX")


def test_received_faxes_are_searched_by_caller_csi_and_time(store: JobStore) -> None:
    callers = ["sip:+4930123@pbx", "sip:Alice@example.org", "sip:100%_x@pbx"]
    faxes = [store.record_inbound(call_id=f"c{n}", caller=c, callee="2", device="d", now=T0 + 60 * n)
             for n, c in enumerate(callers)]  # fmt: skip
    store.update_inbound(faxes[0].id, remote_csi="+49 30 123")
    store.update_inbound(faxes[1].id, remote_csi="ACME <b>Fax</b>")
    ids = lambda found: [f.id for f in found]  # noqa: E731
    assert ids(store.list_inbound(caller="alice")) == [faxes[1].id]  # case-insensitive, a part of it
    assert ids(store.list_inbound(caller="@PBX")) == [faxes[0].id, faxes[2].id]
    assert ids(store.list_inbound(caller="100%_")) == [faxes[2].id]  # wildcards are literal
    assert ids(store.list_inbound(caller="%")) == [faxes[2].id]
    assert ids(store.list_inbound(caller="_")) == [faxes[2].id]
    assert ids(store.list_inbound(csi="<b>fax")) == [faxes[1].id]
    assert ids(store.list_inbound(csi="30 1")) == [faxes[0].id]
    assert ids(store.list_inbound(since=T0 + 60)) == [faxes[1].id, faxes[2].id]
    assert ids(store.list_inbound(since=T0 + 1, until=T0 + 120)) == [faxes[1].id]
    assert ids(store.list_inbound(caller="pbx", until=T0 + 60)) == [faxes[0].id]


def test_a_deleted_fax_is_no_longer_listed_and_its_stored_copies_are_gone(
    store: JobStore, tmp_path: Path
) -> None:
    fax = store.record_inbound(call_id="c", caller="1", callee="2", device="d")
    with pytest.raises(InvalidTransitionError):  # not while it is being received
        store.delete_inbound(fax.id)
    store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1)
    tiff = tmp_path / "in.tif"
    tiff.write_bytes(b"II*\x00received")
    store.place_inbound_files(fax.id, tiff_path=tiff)
    store.store_file(fax.id, "tiff", tiff)
    kept = store.list_inbound()
    before = store.delete_inbound(fax.id, now=T0 + 60)
    assert [f.id for f in kept] == [fax.id] and before.tiff_path == str(tiff)  # the caller removes it
    assert store.list_inbound() == [] and store.list_inbound(read=False) == []
    gone = store.get_inbound(fax.id)
    assert gone.deleted_at == T0 + 60 and (gone.tiff_path, gone.pdf_path, gone.report_path) == (None,) * 3
    assert store.fetch_file(fax.id, "tiff", tmp_path / "copy.tif") is None
    assert _terminal_events(store, fax.id) == [FaxStatus.FS_COMPLETED]  # its history stays
    with pytest.raises(JobNotFoundError):
        store.delete_inbound(fax.id)
    with pytest.raises(JobNotFoundError):
        store.mark_inbound_read(fax.id)


# -- events -------------------------------------------------------------------------------------


def test_second_terminal_event_is_refused_and_changes_nothing(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    store.append_event(job.id, "status", FaxStatus.FS_DIALING)
    first = store.append_event(job.id, "terminal", FaxStatus.FS_BUSY, {"why": "486"})
    assert first.seq == 2 and store.get(job.id).terminal_event_emitted
    before = store.events_for(job.id)
    with pytest.raises(TerminalEventExistsError, match=job.id):
        store.append_event(job.id, "terminal", FaxStatus.FS_COMPLETED)
    with pytest.raises(TerminalEventExistsError):
        store.append_event(job.id, "page", FaxStatus.FS_TRANSMITTING, {"pages": 1})
    assert store.events_for(job.id) == before


def test_job_with_a_hand_written_terminal_event_is_finished_not_retried(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
    store.claim_next(now=T0)
    store.append_event(job.id, "terminal", FaxStatus.FS_BUSY)
    final = store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_BUSY), now=T0 + 1)
    assert final.state is JobState.FAILED  # not back in the queue after its end was announced
    assert _terminal_events(store, job.id) == [FaxStatus.FS_BUSY]


def test_database_itself_rejects_a_second_terminal_row(sqlite_store: SqliteJobStore) -> None:
    store = sqlite_store
    store.append_event("job-x", "terminal", FaxStatus.FS_COMPLETED)
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match=r"events\.job_id"):
        conn.execute(
            "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal)"
            " VALUES ('job-x', 99, 'terminal', 1, '{}', 0, 1)"
        )
    conn.close()


def test_terminal_event_needs_a_terminal_status(store: JobStore) -> None:
    with pytest.raises(ValueError, match="FS_TRANSMITTING"):
        store.append_event("job-y", "terminal", FaxStatus.FS_TRANSMITTING)
    with pytest.raises(ValueError, match="type"):
        store.append_event("job-y", "finished", FaxStatus.FS_COMPLETED)  # type: ignore[arg-type]
    assert store.events_for("job-y") == []


# -- recovery -----------------------------------------------------------------------------------


def test_recovery_requeues_or_fails_in_flight_work_and_keeps_partial_pages(tmp_path: Path) -> None:
    dead = SqliteJobStore(tmp_path / "jobs.db", owner="ghost:1:dead", policy=RetryPolicy(jitter=0.0))
    retry = dead.submit("/spool/a.tif", "sip:1@127.0.0.1", max_attempts=3)
    last = dead.submit("/spool/b.tif", "sip:2@127.0.0.1", max_attempts=1)
    asked = dead.submit("/spool/c.tif", "sip:3@127.0.0.1", max_attempts=3)
    for _ in range(3):
        dead.claim_next(now=T0)
    dead.cancel(asked.id)
    spool = tmp_path / "in1.tif"
    spool.write_bytes(b"II*\x00" + bytes(64))
    partial = dead.record_inbound(call_id="c1", caller="1", callee="2", device="d", tiff_path=spool)
    dead.update_inbound(partial.id, pages=2)
    empty = dead.record_inbound(
        call_id="c2", caller="1", callee="2", device="d", tiff_path=tmp_path / "in2.tif"
    )
    dead.close()

    store = SqliteJobStore(tmp_path / "jobs.db", policy=RetryPolicy(jitter=0.0))
    report = store.recover_after_crash(T0 + 10, owner_alive=lambda owner: owner != "ghost:1:dead")
    assert (report.requeued, report.failed, report.cancelled) == ([retry.id], [last.id], [asked.id])
    assert (report.inbound_partial, report.inbound_failed) == ([partial.id], [empty.id])
    requeued = store.get(retry.id)
    assert requeued.state is JobState.QUEUED and requeued.attempts == 1 and requeued.not_before == T0 + 70
    assert store.get(last.id).last_status is FaxStatus.FS_DISCONNECTED
    assert store.get_inbound(partial.id).pages == 2 and spool.exists()
    assert store.get_inbound(empty.id).state is InboundState.FAILED
    for job_id in (last.id, asked.id, partial.id, empty.id):
        assert len(_terminal_events(store, job_id)) == 1
    assert store.recover_after_crash(T0 + 20, owner_alive=lambda owner: False).changed == 0
    store.close()


def test_recovery_leaves_live_owners_alone(store: JobStore) -> None:
    job = store.submit(doc("a.tif"), "sip:1@127.0.0.1")
    store.claim_next(now=T0)
    fax = store.record_inbound(call_id="c", caller="1", callee="2", device="d")
    assert store.recover_after_crash(T0).changed == 0  # our own owner, and default liveness says alive
    assert store.get(job.id).state is JobState.IN_FLIGHT
    assert store.get_inbound(fax.id).state is InboundState.RECEIVING


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vfax.store.sqlite import SqliteJobStore

    db, spool = sys.argv[1], Path(sys.argv[2])
    store = SqliteJobStore(db)

    def submit(i):
        job = store.submit(f"/spool/{i}.tif", f"sip:{1000 + i}@127.0.0.1", priority=i % 3,
                           max_attempts=1 if i % 2 else 3)
        print("submitted", job.id, flush=True)

    for i in range(20):
        submit(i)
    for _ in range(6):
        job = store.claim_next()
        print("claimed", job.id, job.max_attempts, flush=True)
    partial = store.record_inbound(call_id="c1", caller="1001", callee="2000", device="line1",
                                   tiff_path=spool / "in1.tif")
    (spool / "in1.tif").write_bytes(b"II*\\x00" + bytes(200))
    store.update_inbound(partial.id, pages=2)
    print("partial", partial.id, flush=True)
    empty = store.record_inbound(call_id="c2", caller="1002", callee="2000", device="line1",
                                 tiff_path=spool / "in2.tif")
    print("empty", empty.id, flush=True)
    print("ready", flush=True)
    i = 20
    while True:
        submit(i)
        i += 1
    """
)


def test_kill_9_mid_loop_loses_no_job_and_recovery_settles_in_flight_work(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    lines: list[list[str]] = []
    try:
        for line in child.stdout:
            lines.append(line.split())
            if lines[-1] == ["ready"]:
                break
        for _ in range(15):  # let it get well into the submit loop
            lines.append(child.stdout.readline().split())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        lines += [ln.split() for ln in child.stdout.read().splitlines()]
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    submitted = [ln[1] for ln in lines if ln and ln[0] == "submitted"]
    claimed = {ln[1]: int(ln[2]) for ln in lines if ln and ln[0] == "claimed"}
    partial = next(ln[1] for ln in lines if ln and ln[0] == "partial")
    empty = next(ln[1] for ln in lines if ln and ln[0] == "empty")
    assert len(submitted) >= 35 and len(claimed) == 6

    with SqliteJobStore(db, policy=RetryPolicy(jitter=0.0)) as store:
        assert store.integrity_check() == "ok"
        report = store.recover_after_crash()
        assert sorted(report.requeued) == sorted(j for j, m in claimed.items() if m == 3)
        assert sorted(report.failed) == sorted(j for j, m in claimed.items() if m == 1)
        assert (report.inbound_partial, report.inbound_failed) == ([partial], [empty])

        all_jobs = {j.id: j for j in store.list(limit=10_000)}
        assert set(submitted) <= set(all_jobs)  # every acknowledged submit survived
        counts = store.count()
        assert counts.get("in_flight", 0) == 0
        assert counts["failed"] == len(report.failed)
        assert counts["queued"] == len(all_jobs) - len(report.failed)
        for job_id in report.requeued:
            assert (
                all_jobs[job_id].attempts == 1 and all_jobs[job_id].last_status is FaxStatus.FS_DISCONNECTED
            )
        assert store.get_inbound(partial).state is InboundState.PARTIAL
        assert store.get_inbound(partial).pages == 2 and (tmp_path / "in1.tif").stat().st_size > 0
        assert store.get_inbound(empty).state is InboundState.FAILED
        for job_id in [*report.failed, partial, empty]:
            assert len(_terminal_events(store, job_id)) == 1
        assert store.integrity_check() == "ok"


# -- concurrency --------------------------------------------------------------------------------


def test_two_connections_claiming_at_once_never_take_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SqliteJobStore(path) as seed:
        expected = {seed.submit(f"/spool/{i}.tif", f"sip:{i}@127.0.0.1").id for i in range(40)}
    stores = [SqliteJobStore(path) for _ in range(2)]
    taken: list[list[str]] = [[], []]

    def worker(n: int) -> None:
        while (job := stores[n].claim_next()) is not None:
            taken[n].append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    everything = taken[0] + taken[1]
    assert len(everything) == len(set(everything)) == 40 and set(everything) == expected


CLAIMER = textwrap.dedent(
    """
    import sys
    from vfax.store.sqlite import SqliteJobStore

    store = SqliteJobStore(sys.argv[1])
    print("started", flush=True)
    sys.stdin.readline()  # start together
    while (job := store.claim_next()) is not None:
        print(job.id, flush=True)
    """
)


def test_two_processes_claiming_from_one_file_never_take_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SqliteJobStore(path) as seed:
        expected = {seed.submit(f"/spool/{i}.tif", f"sip:{i}@127.0.0.1").id for i in range(60)}
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "started"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    everything = outputs[0] + outputs[1]
    assert len(everything) == len(set(everything)) == 60 and set(everything) == expected


def test_async_wrapper_runs_the_same_operations(make_store: Callable[..., Any]) -> None:
    async def scenario() -> JobState:
        store = AsyncJobStore(make_store())
        job = await store.submit(doc("a.tif"), "sip:2000@127.0.0.1")
        claimed = await store.claim_next()
        assert claimed is not None and claimed.id == job.id
        await store.append_event(job.id, "page", FaxStatus.FS_TRANSMITTING, {"pages": 1})
        await store.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1))
        events = await store.events_for(job.id)
        assert [e.type for e in events] == ["page", "terminal"]
        final = await store.get(job.id)
        await store.close()
        return final.state

    assert asyncio.run(scenario()) is JobState.COMPLETED


# -- leases and nodes (both stores) -----------------------------------------------------------------

LEASE = 60.0


def _node_store(make_store: Callable[..., Any], owner: str) -> Any:
    return make_store(owner=owner, lease_seconds=LEASE, policy=RetryPolicy(jitter=0.0), clock=lambda: T0)


def test_claim_and_reception_take_a_lease_of_the_stores_owner(make_store: Callable[..., Any]) -> None:
    s = make_store(owner="node-a", lease_seconds=30, clock=lambda: T0)
    job = s.submit(doc("a.tif"), "sip:1@127.0.0.1", now=T0)
    claimed = s.claim_next(now=T0)
    assert claimed.lease_owner == "node-a" and claimed.lease_expires_at == T0 + 30
    fax = s.record_inbound(call_id="c", caller="1", callee="2", device="d", now=T0)
    assert fax.owner == "node-a" and fax.lease_expires_at == T0 + 30
    done = s.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1), now=T0 + 1)
    assert done.lease_owner is None and done.lease_expires_at is None
    assert s.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1, now=T0 + 1).lease_expires_at is None


def test_heartbeat_extends_its_own_leases_and_expiry_takes_only_stale_ones(
    make_store: Callable[..., Any],
) -> None:
    a, b = _node_store(make_store, "node-a"), _node_store(make_store, "node-b")
    api = "http://127.0.0.1:8025"
    a.register_node("node-a", api=api, info={"devices": ["line1"]}, lease_seconds=LEASE, now=T0)
    b.register_node("node-b", api=None, info={}, lease_seconds=LEASE, now=T0)
    for i in range(3):
        a.submit(doc(f"{i}.tif"), f"sip:{i}@127.0.0.1", now=T0)
    mine = [a.claim_next(now=T0), a.claim_next(now=T0)]
    theirs = b.claim_next(now=T0)
    fax = a.record_inbound(call_id="c", caller="1", callee="2", device="d", now=T0)

    assert a.heartbeat("node-a", info={"calls": 3}, lease_seconds=LEASE, now=T0 + 40) == 3
    assert [a.get(j.id).lease_expires_at for j in mine] == [T0 + 100, T0 + 100]
    assert a.get_inbound(fax.id).lease_expires_at == T0 + 100
    assert a.get(theirs.id).lease_expires_at == T0 + LEASE  # another node's lease is not ours to extend

    report = a.expire_leases(now=T0 + 70)  # node-b did not heartbeat: its job goes back to the queue
    assert report.requeued == [theirs.id] and report.changed == 1
    assert all(a.get(j.id).state is JobState.IN_FLIGHT for j in mine)
    assert a.get_inbound(fax.id).state is InboundState.RECEIVING
    nodes = {n.id: n for n in b.list_nodes(now=T0 + 70)}
    assert (nodes["node-a"].state, nodes["node-a"].info, nodes["node-a"].api) == (
        "up",
        {"calls": 3},
        "http://127.0.0.1:8025",
    )
    assert nodes["node-a"].heartbeat_at == T0 + 40 and nodes["node-b"].state == "lost"
    with pytest.raises(LeaseLostError, match="node-b"):
        b.heartbeat("node-b", lease_seconds=LEASE, now=T0 + 71)


def test_an_expired_lease_is_retried_by_another_node_never_held_by_two(
    make_store: Callable[..., Any],
) -> None:
    a, b = _node_store(make_store, "node-a"), _node_store(make_store, "node-b")
    a.register_node("node-a", api=None, info={}, lease_seconds=LEASE, now=T0)
    b.register_node("node-b", api=None, info={}, lease_seconds=LEASE, now=T0)
    job = a.submit(doc("a.tif"), "sip:1@127.0.0.1", max_attempts=3, now=T0)
    assert a.claim_next(now=T0).id == job.id
    # node-a stops heartbeating (cut off); node-b goes on
    b.heartbeat("node-b", lease_seconds=LEASE, now=T0 + 30)
    assert b.expire_leases(now=T0 + 59).changed == 0  # not expired yet: still node-a's
    assert b.claim_next(now=T0 + 59) is None
    b.heartbeat("node-b", lease_seconds=LEASE, now=T0 + 59)

    report = b.expire_leases(now=T0 + 61)
    assert report.requeued == [job.id]
    requeued = b.get(job.id)
    assert (requeued.state, requeued.attempts, requeued.lease_owner) == (JobState.QUEUED, 1, None)
    assert requeued.last_status is FaxStatus.FS_DISCONNECTED and requeued.not_before == T0 + 121
    assert "node-a" in requeued.last_error
    with pytest.raises(LeaseLostError, match="node-a"):
        a.heartbeat("node-a", lease_seconds=LEASE, now=T0 + 62)
    assert b.expire_leases(now=T0 + 63).changed == 0  # settled once

    again = b.claim_next(now=T0 + 121)
    assert again.id == job.id and again.lease_owner == "node-b" and again.attempts == 2
    with pytest.raises(LeaseLostError, match="node-b"):  # node-a's late result must not end node-b's attempt
        a.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1), now=T0 + 122)
    assert b.get(job.id).lease_owner == "node-b" and b.get(job.id).state is JobState.IN_FLIGHT
    b.record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1), now=T0 + 130)
    assert _terminal_events(b, job.id) == [FaxStatus.FS_COMPLETED]
    assert {n.id: n.state for n in b.list_nodes(now=T0 + 130)} == {"node-a": "lost", "node-b": "lost"}
    # each attempt's outcome names the node that ran it: the retry event node-a's, the terminal node-b's
    ends = [(e.payload["attempt"], e.payload["node"], e.type) for e in b.events_for(job.id)]
    assert ends == [(1, "node-a", "status"), (2, "node-b", "terminal")]


def test_lease_expiry_fails_or_cancels_per_policy_and_settles_receptions(
    make_store: Callable[..., Any],
) -> None:
    a, b = _node_store(make_store, "node-a"), _node_store(make_store, "node-b")
    last = a.submit(doc("a.tif"), "sip:1@127.0.0.1", max_attempts=1, now=T0)
    asked = a.submit(doc("b.tif"), "sip:2@127.0.0.1", max_attempts=3, now=T0 + 1)
    a.claim_next(now=T0 + 2)
    a.claim_next(now=T0 + 2)
    a.cancel(asked.id, now=T0 + 3)
    partial = a.record_inbound(call_id="c1", caller="1", callee="2", device="d", now=T0)
    a.update_inbound(partial.id, pages=2, now=T0 + 1)
    empty = a.record_inbound(call_id="c2", caller="1", callee="2", device="d", now=T0)

    report = b.expire_leases(now=T0 + 100)
    assert (report.requeued, report.failed, report.cancelled) == ([], [last.id], [asked.id])
    assert (report.inbound_partial, report.inbound_failed) == ([partial.id], [empty.id])
    assert b.get_inbound(partial.id).pages == 2 and b.get_inbound(partial.id).state is InboundState.PARTIAL
    for job_id in (last.id, asked.id, partial.id, empty.id):
        assert len(_terminal_events(b, job_id)) == 1
        assert [e.payload["node"] for e in b.events_for(job_id) if e.terminal] == ["node-a"]  # not node-b
    assert b.expire_leases(now=T0 + 200).changed == 0


def test_a_node_id_is_refused_while_live_and_free_again_once_lost_or_left(
    make_store: Callable[..., Any],
) -> None:
    s = _node_store(make_store, "n1")
    first = s.register_node("n1", api="http://a", info={"x": 1}, lease_seconds=30, now=T0)
    assert (first.id, first.state, first.started_at, first.info) == ("n1", "up", T0, {"x": 1})
    with pytest.raises(DuplicateNodeError, match="n1"):
        s.register_node("n1", api="http://b", info={}, lease_seconds=30, now=T0 + 29)
    assert [(n.api, n.started_at) for n in s.list_nodes(now=T0 + 29)] == [("http://a", T0)]  # unchanged
    assert s.list_nodes(now=T0 + 31)[0].state == "lost"
    again = s.register_node("n1", api="http://b", info={}, lease_seconds=30, now=T0 + 31)
    assert (again.state, again.started_at, again.api) == ("up", T0 + 31, "http://b")
    s.leave_node("n1", now=T0 + 40)
    assert s.list_nodes(now=T0 + 40)[0].state == "stopped"
    with pytest.raises(LeaseLostError):
        s.heartbeat("n1", lease_seconds=30, now=T0 + 41)
    assert s.register_node("n1", api=None, info={}, lease_seconds=30, now=T0 + 41).state == "up"
    with pytest.raises(LeaseLostError):
        s.heartbeat("never-registered", lease_seconds=30, now=T0 + 41)


def test_a_node_rejoining_settles_the_work_of_its_last_run(make_store: Callable[..., Any]) -> None:
    old = _node_store(make_store, "n1")
    old.register_node("n1", api=None, info={}, lease_seconds=LEASE, now=T0)
    job = old.submit(doc("a.tif"), "sip:1@127.0.0.1", now=T0)
    old.claim_next(now=T0)
    fax = old.record_inbound(call_id="c", caller="1", callee="2", device="d", now=T0)
    old.close()  # killed: no leave, no heartbeat

    new = _node_store(make_store, "n1")
    with pytest.raises(DuplicateNodeError):
        new.register_node("n1", api=None, info={}, lease_seconds=LEASE, now=T0 + 10)
    new.register_node("n1", api=None, info={}, lease_seconds=LEASE, now=T0 + LEASE + 1)
    assert new.get(job.id).state is JobState.QUEUED and new.get(job.id).attempts == 1
    assert new.get_inbound(fax.id).state is InboundState.FAILED
    assert new.heartbeat("n1", lease_seconds=LEASE, now=T0 + LEASE + 2) == 0  # nothing stale is kept alive


def _dead_process() -> str:
    """``host:pid:token`` of a process of this host that has exited (a crashed node's last run)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    return f"{socket.gethostname()}:{child.stdout.strip()}:0badc0de"


def test_a_node_restarted_after_a_crash_on_this_host_takes_its_id_at_once(
    make_store: Callable[..., Any],
) -> None:
    """The id's last run reported its process and that process is gone: no wait for its old lease."""
    old = _node_store(make_store, "n1")
    old.register_node("n1", api=None, info={"process": _dead_process()}, lease_seconds=LEASE, now=T0)
    job = old.submit(doc("a.tif"), "sip:1@127.0.0.1", now=T0)
    old.claim_next(now=T0)
    old.close()  # kill -9: no leave; its heartbeat is still fresh at T0 + 1

    new = _node_store(make_store, "n1")
    me = {"process": this_process()}
    back = new.register_node("n1", api=None, info=me, lease_seconds=LEASE, now=T0 + 1)
    assert back.state == "up" and back.started_at == T0 + 1
    assert new.get(job.id).state is JobState.QUEUED and new.get(job.id).attempts == 1  # settled, retried
    # this very process joining again is not a duplicate of itself
    assert new.register_node("n1", api=None, info=me, lease_seconds=LEASE, now=T0 + 2).state == "up"


@pytest.mark.parametrize(
    "process",
    [
        "our pid, another token",  # a restart that got the crashed run's pid (a container's first process)
        "a pid that exited",
    ],
)
def test_a_dead_process_frees_its_node_id_before_the_lease(
    make_store: Callable[..., Any], process: str
) -> None:
    reported = {
        "our pid, another token": f"{socket.gethostname()}:{os.getpid()}:0badc0de",
        "a pid that exited": _dead_process(),
    }[process]
    s = _node_store(make_store, "n1")
    s.register_node("n1", api=None, info={"process": reported}, lease_seconds=LEASE, now=T0)
    other = _node_store(make_store, "n1")
    assert other.register_node("n1", api=None, info={}, lease_seconds=LEASE, now=T0 + 1).state == "up"


@pytest.mark.parametrize("process", ["alive on this host", "on another host", "not reported"])
def test_a_live_or_unknown_process_still_holds_its_node_id(
    make_store: Callable[..., Any], process: str
) -> None:
    """Alive here, or on another host (it cannot be checked from here: presumed alive), or a node that
    does not say: the id stays taken until its lease runs out."""
    info = {
        "alive on this host": {"process": f"{socket.gethostname()}:{os.getppid()}:feedf00d"},
        "on another host": {"process": "some-other-host:1:feedf00d"},
        "not reported": {},
    }[process]
    s = _node_store(make_store, "n1")
    s.register_node("n1", api=None, info=info, lease_seconds=LEASE, now=T0)
    other = _node_store(make_store, "n1")
    with pytest.raises(DuplicateNodeError, match="n1"):
        other.register_node("n1", api=None, info={}, lease_seconds=LEASE, now=T0 + 1)


def test_a_drained_node_is_listed_as_draining_until_undrained_or_restarted(
    make_store: Callable[..., Any],
) -> None:
    a, b = _node_store(make_store, "a"), _node_store(make_store, "b")
    a.register_node("a", api=None, info={}, lease_seconds=LEASE, now=T0)
    b.register_node("b", api=None, info={}, lease_seconds=LEASE, now=T0)
    assert b.set_node_draining("a", True, now=T0 + 1).draining is True  # any node may drain any node
    assert [(n.id, n.draining) for n in a.list_nodes(now=T0 + 1)] == [("a", True), ("b", False)]
    a.heartbeat("a", info={"calls": 1}, lease_seconds=LEASE, now=T0 + 2)  # its heartbeat keeps the mark
    assert a.list_nodes(now=T0 + 2)[0].draining is True
    assert a.set_node_draining("a", False, now=T0 + 3).draining is False
    a.set_node_draining("a", True, now=T0 + 4)
    a.leave_node("a", now=T0 + 5)  # drained for an upgrade, stopped, started again: it works
    assert a.register_node("a", api=None, info={}, lease_seconds=LEASE, now=T0 + 6).draining is False
    with pytest.raises(NodeNotFoundError, match="nope"):
        a.set_node_draining("nope", True, now=T0 + 7)
    assert [n.id for n in a.list_nodes(now=T0 + 7)] == ["a", "b"]  # nothing else changed


def test_a_role_is_held_by_one_node_until_its_lease_runs_out_or_it_lets_go(
    make_store: Callable[..., Any],
) -> None:
    a, b = _node_store(make_store, "a"), _node_store(make_store, "b")
    assert a.hold_role("sink:hook", "a", lease_seconds=10, now=T0) is True
    assert b.hold_role("sink:hook", "b", lease_seconds=10, now=T0 + 5) is False
    assert b.hold_role("sink:other", "b", lease_seconds=10, now=T0 + 5) is True  # roles are independent
    assert a.hold_role("sink:hook", "a", lease_seconds=10, now=T0 + 9) is True  # kept: until T0 + 19
    assert b.hold_role("sink:hook", "b", lease_seconds=10, now=T0 + 18) is False
    assert b.hold_role("sink:hook", "b", lease_seconds=10, now=T0 + 20) is True  # a's lease ran out
    assert a.hold_role("sink:hook", "a", lease_seconds=10, now=T0 + 21) is False  # and a learns it
    b.release_role("sink:hook", "a")  # only the holder lets go
    assert a.hold_role("sink:hook", "a", lease_seconds=10, now=T0 + 22) is False
    b.release_role("sink:hook", "b")
    assert a.hold_role("sink:hook", "a", lease_seconds=10, now=T0 + 23) is True
    with pytest.raises(ValueError, match="lease_seconds"):
        a.hold_role("sink:hook", "a", lease_seconds=0)


def test_nodes_stopped_or_lost_long_ago_are_forgotten_live_ones_never(
    make_store: Callable[..., Any],
) -> None:
    s = _node_store(make_store, "a")
    for node in ("a", "b", "c"):
        s.register_node(node, api=None, info={}, lease_seconds=LEASE, now=T0)
    s.leave_node("a", now=T0 + 1)  # stopped
    s.heartbeat("c", lease_seconds=LEASE, now=T0 + 1000)  # c lives on; b went silent at T0 (lost)
    report = s.expire_leases(now=T0 + 1000, forget_nodes_after=3600)
    assert report.nodes_forgotten == [] and [n.id for n in s.list_nodes(now=T0 + 1000)] == ["a", "b", "c"]
    s.heartbeat("c", lease_seconds=LEASE, now=T0 + 3700)
    assert s.expire_leases(now=T0 + 3700).nodes_forgotten == []  # not asked to forget
    report = s.expire_leases(now=T0 + 3700, forget_nodes_after=3600)
    assert report.nodes_forgotten == ["a", "b"]
    assert [(n.id, n.state) for n in s.list_nodes(now=T0 + 3700)] == [("c", "up")]
    with pytest.raises(ValueError, match="forget_nodes_after"):
        s.expire_leases(now=T0 + 3700, forget_nodes_after=0)


def test_bad_node_and_file_arguments_are_refused(store: JobStore) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        store.register_node("n", api=None, info={}, lease_seconds=0)
    with pytest.raises(ValueError, match="node id"):
        store.register_node("", api=None, info={}, lease_seconds=10)
    with pytest.raises(ValueError, match="kind"):
        store.fetch_file("x", "secret", Path("/tmp/never"))
    assert store.list_nodes() == []


# -- files and selection (SQLite; PostgreSQL's in tests/test_store_postgres.py) ---------------------


def test_sqlite_keeps_files_where_the_rows_point(sqlite_store: SqliteJobStore, tmp_path: Path) -> None:
    store = sqlite_store
    assert store.holds_files is False
    job = store.submit(doc("a.tif"), "sip:1@127.0.0.1")
    store.store_file(job.id, "document", Path(doc("a.tif")))  # nothing to do
    assert store.fetch_file(job.id, "document", tmp_path / "copy.tif") == Path(doc("a.tif"))
    assert not (tmp_path / "copy.tif").exists()
    fax = store.record_inbound(call_id="c", caller="1", callee="2", device="d", tiff_path=tmp_path / "in.tif")
    assert store.fetch_file(fax.id, "tiff", tmp_path / "x.tif") is None  # recorded but not written yet
    (tmp_path / "in.tif").write_bytes(b"II*\x00")
    assert store.fetch_file(fax.id, "tiff", tmp_path / "x.tif") == tmp_path / "in.tif"
    assert store.fetch_file(fax.id, "pdf", tmp_path / "x.pdf") is None
    assert store.fetch_file("no-such-id", "report", tmp_path / "x.json") is None


def test_open_store_opens_sqlite_with_owner_and_lease(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "vfax.db"), owner="node-7", lease_seconds=12.5)
    try:
        assert isinstance(store, SqliteJobStore) and (store.owner, store.lease_seconds) == ("node-7", 12.5)
    finally:
        store.close()
    with open_store(tmp_path / "vfax.db") as again:  # a Path works too; the default owner is host:pid:token
        assert again.owner.count(":") == 2 and again.lease_seconds == 60.0


def test_open_store_refuses_values_that_are_no_usable_database(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, " * 100)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        "": "empty",
        "   ": "empty",
        "mysql://vfax@127.0.0.1/vfax": "mysql",
        "sqlite:///var/lib/vfax.db": "sqlite",
        str(tmp_path): "directory",
        str(tmp_path / "missing" / "vfax.db"): "does not exist",
        str(afile / "vfax.db"): "does not exist",
        str(garbage): "not a usable SQLite database",
        "/proc/vfax-test.db": "not a usable SQLite database",  # unwritable even for root
    }
    for value, why in cases.items():
        with pytest.raises(ValueError, match="database") as err:
            open_store(value)
        assert why in str(err.value), (value, str(err.value))
    assert garbage.read_bytes().startswith(b"this is not a database")  # left as it was
    assert not (tmp_path / "missing").exists()
