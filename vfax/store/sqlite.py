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

import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfax.status import FaxStatus
from vfax.store.base import (
    StoreBase,
    T,
    check_file_kind,
    check_lease_seconds,
    job_from_row,
)
from vfax.store.events import EventType
from vfax.store.model import (
    JobStoreError,
    OutboundJob,
    SchemaError,
    TerminalEventExistsError,
    make_owner,
)
from vfax.store.retry import RetryPolicy

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
    Migration(
        5,
        "nodes can be drained; roles (one node at a time holds each, such as delivering an event sink)",
        (
            "ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0",
            """CREATE TABLE roles (
                name TEXT PRIMARY KEY,
                node_id TEXT NOT NULL,
                expires_at REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        6,
        "received faxes can be marked read and deleted (the row stays, marked, for its events)",
        (
            "ALTER TABLE inbound_faxes ADD COLUMN read_at REAL",
            "ALTER TABLE inbound_faxes ADD COLUMN deleted_at REAL",
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

class SqliteJobStore(StoreBase):
    """:class:`JobStore` on one SQLite file (WAL, ``synchronous=FULL``). See the module docstring. The
    logic shared with PostgreSQL is in :class:`~vfax.store.base.StoreBase`; here: transactions, the
    claim, events' sequence numbers, node registration and heartbeats, lease expiry and local files."""

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

    def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._write() as conn:
            return work(conn)

    def _query(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._conn)

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

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

    # -- events -----------------------------------------------------------------------------------

    def _insert_event(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        body: str,
        now: float,
        terminal: bool,
    ) -> int:
        """``seq`` is the job's next one (``BEGIN IMMEDIATE`` serialises writers); the unique partial index
        ``events_one_terminal`` backs the check for an earlier terminal event against another process."""
        seq = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
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
        return int(seq)

    # -- outbound ---------------------------------------------------------------------------------

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

    # -- nodes and leases ---------------------------------------------------------------------------

    def _register_node(
        self, conn: sqlite3.Connection, node_id: str, api: str | None, info: str, lease: float, now: float
    ) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
        self._check_node_free(node_id, row, now)
        conn.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at, lease_seconds, state, api, info)"
            " VALUES (?, ?, ?, ?, 'up', ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
            " lease_seconds = excluded.lease_seconds, state = 'up', api = excluded.api,"
            " info = excluded.info",
            (node_id, now, now, lease, api, info),
        )
        self._settle_leftovers(conn, node_id, now)
        return conn.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()

    def _extend_leases(self, node_id: str, info: str | None, lease: float, now: float) -> int | None:
        with self._write() as conn:
            alive = conn.execute(
                "UPDATE nodes SET heartbeat_at = ?, lease_seconds = ?, info = COALESCE(?, info)"
                " WHERE id = ? AND state = 'up'",
                (now, lease, info, node_id),
            ).rowcount
            if alive != 1:
                return None
            jobs = conn.execute(
                "UPDATE outbound_jobs SET lease_expires_at = ? WHERE state = 'in_flight' AND lease_owner = ?",
                (now + lease, node_id),
            ).rowcount
            faxes = conn.execute(
                "UPDATE inbound_faxes SET lease_expires_at = ? WHERE state = 'receiving' AND owner = ?",
                (now + lease, node_id),
            ).rowcount
            return jobs + faxes

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
