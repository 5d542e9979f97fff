"""The durable job store: outbound queue, inbound inbox, the event outbox and its delivery records.

A fax job is money and a received fax is somebody's contract, so the store is built for durability first:
SQLite in WAL mode with ``synchronous=FULL`` (a committed transaction survives a power cut), foreign keys
on, schema migrations applied in order inside one transaction at open. :class:`~vfax.store.model.JobStore`
(in :mod:`vfax.store.model`, with the records and errors) is the interface the controller uses;
:class:`SqliteJobStore` implements it, and a PostgreSQL backend (several vfax nodes sharing one queue)
implements the same protocol (``claim_next`` maps to ``SELECT ... FOR UPDATE SKIP LOCKED``).

Outbound jobs (``queued -> in_flight -> completed | failed | cancelled``, or back to ``queued`` to retry)
------------------------------------------------------------------------------------------------------
- :meth:`~SqliteJobStore.submit` queues a document for a destination with a priority (higher first), a
  schedule time ``not_before``, ``max_attempts`` and options (``ecm``, ``max_bit_rate``, ``header``,
  ``tsid``...: the names are in :mod:`vfax.store.options`).
- :meth:`~SqliteJobStore.claim_next` atomically takes the best due job (highest priority, then oldest)
  and marks it ``in_flight`` under this process's lease owner; it counts the attempt at once, so a job
  that crashes the process every time still runs out of attempts.
- :meth:`~SqliteJobStore.record_attempt_result` applies the :class:`~vfax.store.retry.RetryPolicy`: back to
  ``queued`` with a back-off (maybe with a 9600 bit/s, no-ECM fall-back), or finished with its terminal
  event, in the same transaction.
- :meth:`~SqliteJobStore.cancel`: a queued job is cancelled at once; an in-flight one gets
  ``cancel_requested`` for the device to abort (its result then finishes the job as cancelled).

Inbound faxes (``receiving -> completed | partial | failed``)
-------------------------------------------------------------
The row is written *before* the call is answered (:meth:`~SqliteJobStore.record_inbound`), so a crash in
the middle of a reception leaves a trace; pages are counted as they arrive, the files are noted once placed.

Events
------
:meth:`~SqliteJobStore.append_event` is the only way to write an event. A unique partial index
(``events(job_id) WHERE terminal``) makes a second terminal event for a job impossible:
it raises :class:`TerminalEventExistsError` and changes nothing. The
:class:`vfax.service.events.EventDispatcher` reads the outbox through :meth:`~SqliteJobStore.pending_events`
and records each sink's outcome in the ``deliveries`` table (attempts, next try, delivered, dead letter,
last error).

Crash recovery
--------------
:meth:`~SqliteJobStore.recover_after_crash` (call it at start-up) finds work left by dead processes:
``in_flight`` jobs are treated as an attempt that ended ``FS_DISCONNECTED`` (attempt counted, then retried
or failed per policy; cancelled if a cancel was pending), and ``receiving`` faxes become ``partial`` when
their TIFF holds data (the pages are kept) or ``failed`` otherwise. A process is dead when its lease owner
(``host:pid:token``) names this host and a pid that no longer exists; owners on other hosts are left alone.

Concurrency
-----------
One connection per store object, guarded by a lock, so a store can be shared by threads. Every call is one
short transaction (a few milliseconds, most of it the fsync of ``synchronous=FULL``); from asyncio use
:class:`~vfax.store.async_store.AsyncJobStore`, which runs each call in a worker thread
(``asyncio.to_thread``). Several processes may open the same file: WAL lets readers run beside the
writer, ``busy_timeout`` makes writers wait for one another, and every write transaction starts with
``BEGIN IMMEDIATE`` so two claimers never take one job.
"""

from __future__ import annotations

import builtins  # the stores have a method named `list`: annotations say builtins.list
import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfax.service.events import EVENT_TYPES, EventType, FaxEvent, OutboxBatch, OutboxItem
from vfax.status import FaxStatus
from vfax.store.base import (
    CRASH_ERROR,
    LEASE_ERROR,
    check_file_kind,
    check_lease_seconds,
    event_from_row,
    inbound_from_row,
    job_from_row,
    node_from_row,
    path_or_none,
)
from vfax.store.model import (
    NODE_UP,
    DeadLetter,
    DuplicateNodeError,
    InboundFax,
    InboundState,
    InvalidTransitionError,
    JobFilter,
    JobNotFoundError,
    JobState,
    JobStoreError,
    LeaseLostError,
    NodeInfo,
    OutboundJob,
    RecoveryReport,
    SchemaError,
    TerminalEventExistsError,
    default_owner_alive,
    make_owner,
    new_id,
)
from vfax.store.retry import AttemptResult, RetryPolicy

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    """Schema version ``version`` is reached by running ``statements`` in order (one transaction)."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "outbound queue, inbound inbox, events with one terminal event per job",
        (
            """CREATE TABLE outbound_jobs (
                id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                document TEXT NOT NULL,
                original TEXT,
                destination TEXT NOT NULL,
                device TEXT,
                priority INTEGER NOT NULL DEFAULT 0,
                not_before REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
                state TEXT NOT NULL
                    CHECK (state IN ('queued', 'in_flight', 'completed', 'failed', 'cancelled')),
                last_status INTEGER,
                last_error TEXT NOT NULL DEFAULT '',
                pages_sent INTEGER NOT NULL DEFAULT 0,
                options TEXT NOT NULL DEFAULT '{}',
                lease_owner TEXT,
                lease_at REAL,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                terminal_event_emitted INTEGER NOT NULL DEFAULT 0,
                finished_at REAL
            )""",
            "CREATE INDEX outbound_due ON outbound_jobs (state, priority DESC, not_before, created_at)",
            "CREATE INDEX outbound_created ON outbound_jobs (created_at, id)",
            """CREATE TABLE inbound_faxes (
                id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                call_id TEXT NOT NULL,
                caller TEXT NOT NULL DEFAULT '',
                callee TEXT NOT NULL DEFAULT '',
                device TEXT NOT NULL DEFAULT '',
                started_at REAL NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('receiving', 'completed', 'partial', 'failed')),
                pages INTEGER NOT NULL DEFAULT 0,
                remote_csi TEXT NOT NULL DEFAULT '',
                tiff_path TEXT,
                pdf_path TEXT,
                report_path TEXT,
                last_status INTEGER,
                error TEXT NOT NULL DEFAULT '',
                owner TEXT,
                terminal_event_emitted INTEGER NOT NULL DEFAULT 0,
                finished_at REAL
            )""",
            "CREATE INDEX inbound_state ON inbound_faxes (state, created_at)",
            "CREATE INDEX inbound_call ON inbound_faxes (call_id)",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id TEXT NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 1),
                type TEXT NOT NULL CHECK (type IN ('status', 'page', 'terminal')),
                status INTEGER NOT NULL,
                payload TEXT NOT NULL DEFAULT '{}',
                created_at REAL NOT NULL,
                terminal INTEGER NOT NULL DEFAULT 0 CHECK (terminal = (type = 'terminal')),
                UNIQUE (job_id, seq)
            )""",
            "CREATE UNIQUE INDEX events_one_terminal ON events (job_id) WHERE terminal = 1",
        ),
    ),
    Migration(
        2,
        "per-sink delivery records (outbox); fax-phase failure count for the 9600 bit/s fall-back",
        (
            "ALTER TABLE outbound_jobs ADD COLUMN fax_failures INTEGER NOT NULL DEFAULT 0",
            """CREATE TABLE deliveries (
                sink TEXT NOT NULL,
                event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_try REAL,
                delivered_at REAL,
                dead_letter_at REAL,
                last_error TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (sink, event_id)
            )""",
            "CREATE INDEX deliveries_dead ON deliveries (sink, dead_letter_at)"
            " WHERE dead_letter_at IS NOT NULL",
        ),
    ),
    Migration(
        3,
        "job option max_bitrate renamed max_bit_rate (the name the controller reads, see vfax.store.options)",
        (
            # The retry fall-back wrote 'max_bitrate', which no sender ever read. Where a job has both
            # names the lower rate wins: the fall-back only ever lowers.
            """UPDATE outbound_jobs SET options = json_set(
                   json_remove(options, '$.max_bitrate'),
                   '$.max_bit_rate',
                   CASE WHEN json_type(options, '$.max_bit_rate') = 'integer'
                        THEN min(json_extract(options, '$.max_bit_rate'),
                                 json_extract(options, '$.max_bitrate'))
                        ELSE json_extract(options, '$.max_bitrate') END)
               WHERE json_type(options, '$.max_bitrate') IS NOT NULL""",
        ),
    ),
    Migration(
        4,
        "leases with an expiry (jobs and receptions) and a row per node with its heartbeat",
        (
            "ALTER TABLE outbound_jobs ADD COLUMN lease_expires_at REAL",
            "ALTER TABLE inbound_faxes ADD COLUMN lease_expires_at REAL",
            "CREATE INDEX outbound_lease ON outbound_jobs (lease_expires_at) WHERE state = 'in_flight'",
            "CREATE INDEX inbound_lease ON inbound_faxes (lease_expires_at) WHERE state = 'receiving'",
            """CREATE TABLE nodes (
                id TEXT PRIMARY KEY,
                started_at REAL NOT NULL,
                heartbeat_at REAL NOT NULL,
                lease_seconds REAL NOT NULL CHECK (lease_seconds > 0),
                state TEXT NOT NULL CHECK (state IN ('up', 'stopped', 'lost')),
                api TEXT,
                info TEXT NOT NULL DEFAULT '{}'
            )""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in ``schema_version`` (0 for an empty database)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the last of ``migrations`` in one ``BEGIN IMMEDIATE`` transaction.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database newer than ``migrations``
    raises :class:`SchemaError` (old code must not write a schema it does not know). Returns the version.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migrations must be numbered 1..n in order, got {versions}")
    target = versions[-1] if versions else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = schema_version(conn)
        if current > target:
            raise SchemaError(f"database schema version {current} is newer than this vfax knows ({target})")
        for migration in migrations[current:]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, time.time()),
            )
            log.info("job store schema migrated to version %d: %s", migration.version, migration.description)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return target


# --------------------------------------------------------------------------------------------------
# SQLite implementation
# --------------------------------------------------------------------------------------------------

class SqliteJobStore:
    """:class:`JobStore` on one SQLite file (WAL, ``synchronous=FULL``). See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        owner: str | None = None,
        lease_seconds: float = 60.0,
        busy_timeout_ms: int = 10_000,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or RetryPolicy()
        self.owner = owner or make_owner()
        self.lease_seconds = check_lease_seconds(lease_seconds)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SchemaError(f"cannot switch {self.path} to WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self.schema_version = apply_migrations(self._conn, migrations)
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (disk full, I/O error) leaves the transaction open: never reuse it
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def pragma(self, name: str) -> Any:
        """Read a PRAGMA (``journal_mode``, ``synchronous``, ``foreign_keys``...) for checks and tests."""
        if not name.replace("_", "").isalpha():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def integrity_check(self) -> str:
        """``"ok"`` when SQLite's ``PRAGMA integrity_check`` finds nothing wrong."""
        with self._lock:
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    def _job_row(self, conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM outbound_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return row

    def _inbound_row(self, conn: sqlite3.Connection, inbound_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM inbound_faxes WHERE id = ?", (inbound_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(inbound_id)
        return row

    # -- events -----------------------------------------------------------------------------------

    @staticmethod
    def _has_terminal(conn: sqlite3.Connection, job_id: str) -> bool:
        return (
            conn.execute("SELECT 1 FROM events WHERE job_id = ? AND terminal = 1", (job_id,)).fetchone()
            is not None
        )

    def _append_event(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None,
        now: float,
    ) -> FaxEvent:
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        status = FaxStatus(status)
        terminal = type == "terminal"
        if terminal and not status.is_terminal:
            raise ValueError(f"a terminal event needs a terminal status, not {status.name}")
        if self._has_terminal(conn, job_id):
            raise TerminalEventExistsError(job_id)
        seq = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
        body = json.dumps(dict(payload or {}), sort_keys=True, default=str)
        try:
            conn.execute(
                "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, type, int(status), body, now, int(terminal)),
            )
        except sqlite3.IntegrityError as exc:  # another process won the race for the terminal event
            if terminal and "events.job_id" in str(exc):
                raise TerminalEventExistsError(job_id) from exc
            raise
        if terminal:
            conn.execute("UPDATE outbound_jobs SET terminal_event_emitted = 1 WHERE id = ?", (job_id,))
            conn.execute("UPDATE inbound_faxes SET terminal_event_emitted = 1 WHERE id = ?", (job_id,))
        return FaxEvent(job_id, seq, type, status, now, json.loads(body))

    def append_event(
        self,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> FaxEvent:
        """Append an event for ``job_id`` (the next ``seq``). ``type == "terminal"`` needs a terminal status
        and may happen once per job: a second one, or any event after it, raises
        :class:`TerminalEventExistsError` and writes nothing.

        ``job_id`` is an outbound job or an inbound fax id (or any id the controller chooses: events are not
        tied to a table). The terminal events of outbound jobs and inbound faxes are written by the store
        itself when they finish (:meth:`record_attempt_result`, :meth:`cancel`, :meth:`finish_inbound`,
        :meth:`recover_after_crash`); the controller appends ``status`` and ``page`` events."""
        with self._write() as conn:
            return self._append_event(conn, job_id, type, status, payload, self._now(now))

    def events_for(self, job_id: str) -> builtins.list[FaxEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
        return [event_from_row(r) for r in rows]

    # -- outbound ---------------------------------------------------------------------------------

    def submit(
        self,
        document: str | os.PathLike[str],
        destination: str,
        *,
        original: str | os.PathLike[str] | None = None,
        device: str | None = None,
        priority: int = 0,
        not_before: float | None = None,
        max_attempts: int | None = None,
        options: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> OutboundJob:
        """Queue a fax. ``document`` is the prepared TIFF-F, ``original`` what the user gave us."""
        now = self._now(now)
        if not destination:
            raise ValueError("destination must not be empty")
        limit = self.policy.max_attempts if max_attempts is None else max_attempts
        if limit < 1:
            raise ValueError(f"max_attempts must be >= 1, got {limit}")
        job_id = new_id(now)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO outbound_jobs (id, created_at, updated_at, document, original, destination,"
                " device, priority, not_before, max_attempts, state, options)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    now,
                    now,
                    os.fspath(document),
                    path_or_none(original),
                    destination,
                    device,
                    priority,
                    now if not_before is None else not_before,
                    limit,
                    JobState.QUEUED.value,
                    json.dumps(dict(options or {}), sort_keys=True),
                ),
            )
            return job_from_row(self._job_row(conn, job_id))

    def claim_next(self, now: float | None = None, device: str | None = None) -> OutboundJob | None:
        """Take the best due job: highest priority, then earliest ``not_before``, then oldest.

        With ``device`` only jobs for that device or for any device are considered. The job becomes
        ``in_flight`` owned by this store's ``owner`` and its attempt is counted.
        """
        now = self._now(now)
        query = "SELECT id FROM outbound_jobs WHERE state = 'queued' AND not_before <= ?"
        args: list[Any] = [now]
        if device is not None:
            query += " AND (device IS NULL OR device = ?)"
            args.append(device)
        query += " ORDER BY priority DESC, not_before, created_at, id LIMIT 1"
        with self._write() as conn:
            row = conn.execute(query, args).fetchone()
            if row is None:
                return None
            taken = conn.execute(
                "UPDATE outbound_jobs SET state = 'in_flight', attempts = attempts + 1, lease_owner = ?,"
                " lease_at = ?, lease_expires_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                (self.owner, now, now + self.lease_seconds, now, row["id"]),
            ).rowcount
            if taken != 1:  # cannot happen inside BEGIN IMMEDIATE; a backend without it must not double-claim
                raise JobStoreError(f"job {row['id']} was claimed by someone else")
            return job_from_row(self._job_row(conn, row["id"]))

    def _finish_attempt(
        self, conn: sqlite3.Connection, row: sqlite3.Row, result: AttemptResult, now: float
    ) -> JobState:
        job = job_from_row(row)
        cancelled = result.status is FaxStatus.FS_USER_ABORT or (
            job.cancel_requested and not result.status.is_success
        )
        decision = self.policy.decide(
            result.status,
            max(job.attempts, 1),
            job.options,
            now=now,
            fax_phase=result.failed_in_fax_phase,
            fax_failures=job.fax_failures,
            max_attempts=job.max_attempts,
            rng=self._rng,
        )
        common = {
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            "pages": result.pages,
            "error": result.error,
            "sip_code": result.sip_code,
            "t30_code": result.t30_code,
        }
        # The store writes an outbound job's terminal event. If one exists already (a caller appended it
        # by hand), the job must not come back to life after it: finish without a second event.
        ended = self._has_terminal(conn, job.id)
        if ended:
            log.warning("job %s already has a terminal event; finishing it without another", job.id)
        if decision.retry and not cancelled and not ended:
            conn.execute(
                "UPDATE outbound_jobs SET state = 'queued', not_before = ?, options = ?, fax_failures = ?,"
                " last_status = ?, last_error = ?, pages_sent = ?, lease_owner = NULL, lease_at = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                (
                    decision.not_before,
                    json.dumps(decision.next_options, sort_keys=True),
                    decision.fax_failures,
                    int(result.status),
                    result.error,
                    result.pages,
                    now,
                    job.id,
                ),
            )
            payload = {**common, "retry": True, "not_before": decision.not_before, "reason": decision.reason}
            self._append_event(conn, job.id, "status", result.status, payload, now)
            return JobState.QUEUED
        if result.status.is_success:
            state = JobState.COMPLETED
        elif cancelled:
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED
        conn.execute(
            "UPDATE outbound_jobs SET state = ?, fax_failures = ?, last_status = ?, last_error = ?,"
            " pages_sent = ?, lease_owner = NULL, lease_at = NULL, lease_expires_at = NULL,"
            " finished_at = ?, updated_at = ?"
            " WHERE id = ?",
            (
                state.value,
                decision.fax_failures,
                int(result.status),
                result.error,
                result.pages,
                now,
                now,
                job.id,
            ),
        )
        reason = "cancelled" if state is JobState.CANCELLED else decision.reason
        payload = {**common, "state": state.value, "retry": False, "reason": reason}
        if not ended:
            self._append_event(conn, job.id, "terminal", result.status, payload, now)
        return state

    def record_attempt_result(
        self, job_id: str, result: AttemptResult, *, now: float | None = None
    ) -> OutboundJob:
        """End this owner's in-flight attempt of ``job_id``: retry per policy or finish with the terminal
        event. :class:`LeaseLostError` if someone else holds the job now (this owner's lease expired)."""
        now = self._now(now)
        with self._write() as conn:
            row = self._job_row(conn, job_id)
            if row["state"] != JobState.IN_FLIGHT:
                raise InvalidTransitionError(
                    f"job {job_id} is {row['state']}, not in_flight: no attempt to end"
                )
            if row["lease_owner"] != self.owner:
                raise LeaseLostError(
                    f"job {job_id} is held by {row['lease_owner']}, not {self.owner}: its lease was lost"
                )
            self._finish_attempt(conn, row, result, now)
            return job_from_row(self._job_row(conn, job_id))

    def cancel(self, job_id: str, *, now: float | None = None) -> OutboundJob:
        """Cancel: a queued job ends now (terminal ``FS_USER_ABORT``); an in-flight job is flagged
        ``cancel_requested`` for its device to abort; a finished job is returned unchanged."""
        now = self._now(now)
        with self._write() as conn:
            row = self._job_row(conn, job_id)
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                conn.execute(
                    "UPDATE outbound_jobs SET state = 'cancelled', cancel_requested = 1, last_status = ?,"
                    " finished_at = ?, updated_at = ? WHERE id = ?",
                    (int(FaxStatus.FS_USER_ABORT), now, now, job_id),
                )
                payload = {
                    "state": "cancelled",
                    "attempt": row["attempts"],
                    "pages": 0,
                    "reason": "cancelled",
                }
                self._append_event(conn, job_id, "terminal", FaxStatus.FS_USER_ABORT, payload, now)
            elif state is JobState.IN_FLIGHT:
                conn.execute(
                    "UPDATE outbound_jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            return job_from_row(self._job_row(conn, job_id))

    def get(self, job_id: str) -> OutboundJob:
        with self._lock:
            return job_from_row(self._job_row(self._conn, job_id))

    def list(
        self, filter: JobFilter | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[OutboundJob]:
        """Outbound jobs, oldest first."""
        query = "SELECT * FROM outbound_jobs WHERE 1"
        args: list[Any] = []
        if filter is not None:
            if filter.states is not None:
                states = sorted(s.value for s in filter.states)
                query += f" AND state IN ({','.join('?' * len(states))})"
                args += states
            if filter.device is not None:
                query += " AND device = ?"
                args.append(filter.device)
            if filter.destination is not None:
                query += " AND destination = ?"
                args.append(filter.destination)
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        return [job_from_row(r) for r in rows]

    def count(self) -> dict[str, int]:
        """Jobs per state, outbound as ``"queued"``... and inbound as ``"inbound:receiving"``..."""
        with self._read() as conn:
            out = {
                r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM outbound_jobs GROUP BY state")
            }
            for r in conn.execute("SELECT state, COUNT(*) FROM inbound_faxes GROUP BY state"):
                out[f"inbound:{r[0]}"] = r[1]
        return out

    # -- inbound ----------------------------------------------------------------------------------

    def record_inbound(
        self,
        *,
        call_id: str,
        caller: str,
        callee: str,
        device: str,
        tiff_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax:
        """Record an incoming fax call *before* answering it. ``tiff_path`` is where pages will be spooled."""
        now = self._now(now)
        inbound_id = new_id(now)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO inbound_faxes (id, created_at, updated_at, call_id, caller, callee, device,"
                " started_at, state, tiff_path, owner, lease_expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'receiving', ?, ?, ?)",
                (
                    inbound_id,
                    now,
                    now,
                    call_id,
                    caller,
                    callee,
                    device,
                    now,
                    path_or_none(tiff_path),
                    self.owner,
                    now + self.lease_seconds,
                ),
            )
            return inbound_from_row(self._inbound_row(conn, inbound_id))

    def update_inbound(
        self,
        inbound_id: str,
        *,
        pages: int | None = None,
        remote_csi: str | None = None,
        tiff_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax:
        """Progress of a reception: pages so far, the caller's TSI (our "remote CSI"), the spool file."""
        now = self._now(now)
        with self._write() as conn:
            row = self._inbound_row(conn, inbound_id)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            conn.execute(
                "UPDATE inbound_faxes SET pages = COALESCE(?, pages), remote_csi = COALESCE(?, remote_csi),"
                " tiff_path = COALESCE(?, tiff_path), updated_at = ? WHERE id = ?",
                (pages, remote_csi, path_or_none(tiff_path), now, inbound_id),
            )
            return inbound_from_row(self._inbound_row(conn, inbound_id))

    def _end_inbound(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        state: InboundState,
        status: FaxStatus,
        pages: int,
        error: str,
        remote_csi: str | None,
        now: float,
    ) -> None:
        conn.execute(
            "UPDATE inbound_faxes SET state = ?, last_status = ?, pages = ?, error = ?,"
            " remote_csi = COALESCE(?, remote_csi), lease_expires_at = NULL, finished_at = ?, updated_at = ?"
            " WHERE id = ?",
            (state.value, int(status), pages, error, remote_csi, now, now, row["id"]),
        )
        payload = {"state": state.value, "pages": pages, "error": error, "call_id": row["call_id"]}
        if self._has_terminal(conn, row["id"]):
            log.warning(
                "inbound fax %s already has a terminal event; finishing it without another", row["id"]
            )
        else:
            self._append_event(conn, row["id"], "terminal", status, payload, now)

    def finish_inbound(
        self,
        inbound_id: str,
        status: FaxStatus,
        *,
        pages: int,
        error: str = "",
        remote_csi: str | None = None,
        now: float | None = None,
    ) -> InboundFax:
        """End a reception with its terminal event: ``completed`` only for ``FS_COMPLETED`` with pages,
        ``partial`` when some pages arrived, ``failed`` otherwise."""
        now = self._now(now)
        if not status.is_terminal:
            raise ValueError(f"a reception ends with a terminal status, not {status.name}")
        if pages < 0:
            raise ValueError(f"pages must be >= 0, got {pages}")
        if status.is_success and pages > 0:
            state = InboundState.COMPLETED
        elif pages > 0:
            state = InboundState.PARTIAL
        else:
            state = InboundState.FAILED
        with self._write() as conn:
            row = self._inbound_row(conn, inbound_id)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            self._end_inbound(conn, row, state, status, pages, error, remote_csi, now)
            return inbound_from_row(self._inbound_row(conn, inbound_id))

    def place_inbound_files(
        self,
        inbound_id: str,
        *,
        tiff_path: str | os.PathLike[str] | None = None,
        pdf_path: str | os.PathLike[str] | None = None,
        report_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax:
        """Note where the received fax's files were placed (any state: conversion may come later)."""
        now = self._now(now)
        with self._write() as conn:
            self._inbound_row(conn, inbound_id)
            conn.execute(
                "UPDATE inbound_faxes SET tiff_path = COALESCE(?, tiff_path),"
                " pdf_path = COALESCE(?, pdf_path), report_path = COALESCE(?, report_path),"
                " updated_at = ? WHERE id = ?",
                (
                    path_or_none(tiff_path),
                    path_or_none(pdf_path),
                    path_or_none(report_path),
                    now,
                    inbound_id,
                ),
            )
            return inbound_from_row(self._inbound_row(conn, inbound_id))

    def get_inbound(self, inbound_id: str) -> InboundFax:
        with self._lock:
            return inbound_from_row(self._inbound_row(self._conn, inbound_id))

    def list_inbound(
        self, states: frozenset[InboundState] | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[InboundFax]:
        query = "SELECT * FROM inbound_faxes"
        args: list[Any] = []
        if states is not None:
            values = sorted(s.value for s in states)
            query += f" WHERE state IN ({','.join('?' * len(values))})"
            args += values
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        return [inbound_from_row(r) for r in rows]

    # -- crash recovery ---------------------------------------------------------------------------

    def recover_after_crash(
        self, now: float | None = None, *, owner_alive: Callable[[str], bool] | None = None
    ) -> RecoveryReport:
        """Settle the work of dead processes (see the module docstring). Safe to call at every start."""
        now = self._now(now)
        alive = owner_alive or default_owner_alive
        report = RecoveryReport()

        def dead(owner: str | None) -> bool:
            return owner != self.owner and (owner is None or not alive(owner))

        with self._write() as conn:
            for row in conn.execute(
                "SELECT * FROM outbound_jobs WHERE state = 'in_flight' ORDER BY id"
            ).fetchall():
                if not dead(row["lease_owner"]):
                    continue
                state = self._settle_job(conn, row, CRASH_ERROR, now, report)
                log.warning(
                    "recovered in-flight job %s from dead owner %s: %s", row["id"], row["lease_owner"], state
                )
            for row in conn.execute(
                "SELECT * FROM inbound_faxes WHERE state = 'receiving' ORDER BY id"
            ).fetchall():
                if not dead(row["owner"]):
                    continue
                tiff = row["tiff_path"]
                has_pages = bool(tiff) and os.path.isfile(tiff) and os.path.getsize(tiff) > 0
                state = InboundState.PARTIAL if has_pages else InboundState.FAILED
                pages = row["pages"] if has_pages else 0
                self._end_inbound(conn, row, state, FaxStatus.FS_DISCONNECTED, pages, CRASH_ERROR, None, now)
                (report.inbound_partial if has_pages else report.inbound_failed).append(row["id"])
                log.warning("recovered inbound fax %s from dead owner %s: %s", row["id"], row["owner"], state)
        return report

    # -- nodes and leases ---------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        *,
        api: str | None,
        info: Mapping[str, Any],
        lease_seconds: float,
        now: float | None = None,
    ) -> NodeInfo:
        """Join the store as ``node_id``; refused while a live node holds that id."""
        now = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        if not node_id:
            raise ValueError("node id must not be empty")
        body = json.dumps(dict(info), sort_keys=True, default=str)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if row is not None and node_from_row(row, now).state == NODE_UP:
                raise DuplicateNodeError(
                    f"node id {node_id!r} is held by a live node (heartbeat {now - row['heartbeat_at']:.1f} s"
                    f" ago, lease {row['lease_seconds']:g} s); nothing was changed"
                )
            conn.execute(
                "INSERT INTO nodes (id, started_at, heartbeat_at, lease_seconds, state, api, info)"
                " VALUES (?, ?, ?, ?, 'up', ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
                " lease_seconds = excluded.lease_seconds, state = 'up', api = excluded.api,"
                " info = excluded.info",
                (node_id, now, now, lease, api, body),
            )
            # work left by an earlier life of this node id: nobody runs it any more
            left = RecoveryReport()
            self._settle_leases(conn, "owner = ?", (node_id,), now, left)
            if left.changed:
                log.warning("node %s rejoined: settled %d leftovers of its last run", node_id, left.changed)
            return node_from_row(conn.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone(), now)

    def heartbeat(
        self,
        node_id: str,
        *,
        info: Mapping[str, Any] | None = None,
        lease_seconds: float,
        now: float | None = None,
    ) -> int:
        """Extend this node's leases; :class:`LeaseLostError` when it was presumed dead meanwhile."""
        now = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        body = None if info is None else json.dumps(dict(info), sort_keys=True, default=str)
        with self._write() as conn:
            alive = conn.execute(
                "UPDATE nodes SET heartbeat_at = ?, lease_seconds = ?, info = COALESCE(?, info)"
                " WHERE id = ? AND state = 'up'",
                (now, lease, body, node_id),
            ).rowcount
            if alive != 1:
                raise LeaseLostError(
                    f"node {node_id!r} is not up in the store any more (presumed dead, its work retried"
                    " elsewhere): stop its calls"
                )
            jobs = conn.execute(
                "UPDATE outbound_jobs SET lease_expires_at = ? WHERE state = 'in_flight' AND lease_owner = ?",
                (now + lease, node_id),
            ).rowcount
            faxes = conn.execute(
                "UPDATE inbound_faxes SET lease_expires_at = ? WHERE state = 'receiving' AND owner = ?",
                (now + lease, node_id),
            ).rowcount
            return jobs + faxes

    def leave_node(self, node_id: str, *, now: float | None = None) -> None:
        now = self._now(now)
        with self._write() as conn:
            conn.execute(
                "UPDATE nodes SET state = 'stopped', heartbeat_at = ? WHERE id = ? AND state = 'up'",
                (now, node_id),
            )

    def list_nodes(self, *, now: float | None = None) -> builtins.list[NodeInfo]:
        now = self._now(now)
        with self._lock:
            rows = self._conn.execute("SELECT * FROM nodes ORDER BY id").fetchall()
        return [node_from_row(r, now) for r in rows]

    def _settle_job(
        self, conn: sqlite3.Connection, row: sqlite3.Row, error: str, now: float, report: RecoveryReport
    ) -> JobState:
        """End an attempt nobody will finish as ``FS_DISCONNECTED`` (attempt counted, policy applies)."""
        result = AttemptResult(FaxStatus.FS_DISCONNECTED, pages=0, error=error, fax_phase=False)
        state = self._finish_attempt(conn, row, result, now)
        {
            JobState.QUEUED: report.requeued,
            JobState.FAILED: report.failed,
            JobState.CANCELLED: report.cancelled,
        }[state].append(row["id"])
        return state

    def _settle_leases(
        self,
        conn: sqlite3.Connection,
        where: str,
        args: Sequence[Any],
        now: float,
        report: RecoveryReport,
    ) -> set[str]:
        """Settle the in-flight jobs and receptions matching ``where`` (on ``lease_expires_at`` and the
        owner column, named ``owner`` in both): jobs end their attempt as ``FS_DISCONNECTED``, receptions
        become partial (pages recorded) or failed. Returns their owners."""
        owners: set[str] = set()
        for row in conn.execute(
            "SELECT * FROM (SELECT *, lease_owner AS owner FROM outbound_jobs WHERE state = 'in_flight')"
            f" WHERE {where} ORDER BY id",
            args,
        ).fetchall():
            owner = row["lease_owner"]
            state = self._settle_job(conn, row, LEASE_ERROR.format(owner=owner), now, report)
            owners.add(owner)
            log.warning("job %s: lease of %s expired: %s", row["id"], owner, state)
        for row in conn.execute(
            f"SELECT * FROM inbound_faxes WHERE state = 'receiving' AND {where} ORDER BY id", args
        ).fetchall():
            has_pages = row["pages"] > 0
            state = InboundState.PARTIAL if has_pages else InboundState.FAILED
            error = LEASE_ERROR.format(owner=row["owner"])
            self._end_inbound(conn, row, state, FaxStatus.FS_DISCONNECTED, row["pages"], error, None, now)
            (report.inbound_partial if has_pages else report.inbound_failed).append(row["id"])
            owners.add(row["owner"])
            log.warning("inbound fax %s: lease of %s expired: %s", row["id"], row["owner"], state)
        return owners

    def expire_leases(self, *, now: float | None = None) -> RecoveryReport:
        """Retry (per policy) the jobs and settle the receptions whose lease ran out; their owners and the
        nodes without a heartbeat for longer than their lease become ``lost``."""
        now = self._now(now)
        report = RecoveryReport()
        with self._write() as conn:
            owners = self._settle_leases(conn, "lease_expires_at < ?", (now,), now, report)
            # a node whose work was taken must learn it at its next heartbeat, whatever its clock says
            for owner in owners:
                conn.execute("UPDATE nodes SET state = 'lost' WHERE id = ? AND state = 'up'", (owner,))
            conn.execute(
                "UPDATE nodes SET state = 'lost' WHERE state = 'up' AND heartbeat_at + lease_seconds < ?",
                (now,),
            )
        return report

    # -- files ----------------------------------------------------------------------------------------

    @property
    def holds_files(self) -> bool:
        """False: with SQLite (one host) files stay on the local disk where the rows point."""
        return False

    def store_file(self, owner_id: str, kind: str, path: Path) -> None:
        """Nothing to do: the rows already record the local path."""
        check_file_kind(kind)

    def fetch_file(self, owner_id: str, kind: str, dest: Path) -> Path | None:
        """The locally recorded file of that kind (not copied to ``dest``), or None."""
        check_file_kind(kind)
        with self._lock:
            if kind == "document":
                row = self._conn.execute("SELECT document FROM outbound_jobs WHERE id = ?", (owner_id,))
            else:
                column = {"tiff": "tiff_path", "partial": "tiff_path", "pdf": "pdf_path"}.get(
                    kind, "report_path"
                )
                row = self._conn.execute(f"SELECT {column} FROM inbound_faxes WHERE id = ?", (owner_id,))
            found = row.fetchone()
        if found is None or not found[0] or not os.path.isfile(found[0]):
            return None
        return Path(found[0])

    # -- the outbox (vfax.service.events.EventOutbox) -----------------------------------------------------

    def pending_events(self, sink: str, *, now: float, after_id: int = 0, limit: int = 200) -> OutboxBatch:
        """See :meth:`vfax.service.events.EventOutbox.pending_events`. Reads one snapshot; pages on past
        events that wait behind a retry, so one stuck job cannot hide the due events of others."""
        items: list[OutboxItem] = []
        blocked: set[str] = set()
        next_due: float | None = None
        settled_through: int | None = None
        cursor = after_id
        with self._read() as conn:
            while True:
                rows = conn.execute(
                    "SELECT e.*, COALESCE(d.attempts, 0) AS d_attempts, d.next_try AS d_next_try"
                    " FROM events e LEFT JOIN deliveries d ON d.event_id = e.id AND d.sink = ?"
                    " WHERE e.id > ? AND d.delivered_at IS NULL AND d.dead_letter_at IS NULL"
                    " ORDER BY e.id LIMIT ?",
                    (sink, cursor, limit),
                ).fetchall()
                if settled_through is None:
                    if rows:
                        settled_through = rows[0]["id"] - 1
                    else:
                        settled_through = conn.execute(
                            "SELECT COALESCE(MAX(id), ?) FROM events", (after_id,)
                        ).fetchone()[0]
                for row in rows:
                    job_id = row["job_id"]
                    if job_id in blocked:
                        continue
                    next_try = row["d_next_try"]
                    if next_try is not None and next_try > now:
                        blocked.add(job_id)
                        next_due = next_try if next_due is None else min(next_due, next_try)
                        continue
                    if len(items) < limit:
                        items.append(OutboxItem(row["id"], event_from_row(row), row["d_attempts"]))
                    else:
                        blocked.add(job_id)  # keep its later events out of this batch
                if items or len(rows) < limit:
                    break
                cursor = rows[-1]["id"]
        return OutboxBatch(items=items, settled_through=max(settled_through, after_id), next_due=next_due)

    def _delivery(self, sink: str, rowid: int, sets: str, args: Sequence[Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO deliveries (sink, event_id) VALUES (?, ?)"
                " ON CONFLICT (sink, event_id) DO NOTHING",
                (sink, rowid),
            )
            conn.execute(
                f"UPDATE deliveries SET attempts = attempts + 1, {sets} WHERE sink = ? AND event_id = ?",
                (*args, sink, rowid),
            )

    def mark_delivered(self, sink: str, rowid: int, *, now: float) -> None:
        self._delivery(sink, rowid, "delivered_at = ?, next_try = NULL", (now,))

    def mark_retry(self, sink: str, rowid: int, *, error: str, next_try: float, now: float) -> None:
        self._delivery(sink, rowid, "next_try = ?, last_error = ?", (next_try, error))

    def mark_dead_letter(self, sink: str, rowid: int, *, error: str, now: float) -> None:
        self._delivery(sink, rowid, "dead_letter_at = ?, next_try = NULL, last_error = ?", (now, error))

    def dead_letters(self, sink: str | None = None) -> builtins.list[DeadLetter]:
        query = (
            "SELECT e.*, d.sink AS d_sink, d.attempts AS d_attempts, d.dead_letter_at AS d_dead,"
            " d.last_error AS d_error FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.dead_letter_at IS NOT NULL"
        )
        args: list[Any] = []
        if sink is not None:
            query += " AND d.sink = ?"
            args.append(sink)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY d.dead_letter_at, e.id", args).fetchall()
        return [
            DeadLetter(r["d_sink"], r["id"], event_from_row(r), r["d_attempts"], r["d_dead"], r["d_error"])
            for r in rows
        ]

    def retry_dead_letters(self, sink: str) -> int:
        """Give ``sink``'s dead letters a fresh set of attempts (after the receiver is fixed); a running
        :class:`~vfax.service.events.EventDispatcher` picks them up after its ``rescan()``."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET dead_letter_at = NULL, attempts = 0, next_try = NULL"
                " WHERE sink = ? AND dead_letter_at IS NOT NULL",
                (sink,),
            )
            return cursor.rowcount

    def delivery(self, sink: str, rowid: int) -> dict[str, Any] | None:
        """The delivery record of one event for one sink (for inspection and tests)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM deliveries WHERE sink = ? AND event_id = ?", (sink, rowid)
            ).fetchone()
        return None if row is None else dict(row)


