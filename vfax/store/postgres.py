"""The job store on PostgreSQL: one queue, one inbox and one event outbox shared by every vfax node.

Same contract as :mod:`vfax.store.sqlite` (the contract tests run against both); what differs is how the
database enforces it when several nodes write at once:

- Schema: numbered SQL files in ``vfax/store/sql/postgres/`` (``001_initial.sql``...), applied in order in
  one transaction at open under an advisory lock (two nodes starting together do not race); a database
  whose version is newer than these files is refused with :class:`SchemaError` and left untouched.
- Claim: one ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING *``: two nodes never
  take the same job and never wait for each other. The claim is a lease (``lease_owner`` = this node,
  ``lease_expires_at``) that :meth:`PostgresJobStore.heartbeat` extends; :meth:`expire_leases` (any node)
  retries the work of a node that stopped heartbeating, under the retry policy.
- Wake-ups: submit and every requeue ``NOTIFY vfax_jobs``; idle nodes wait on LISTEN
  (:meth:`PostgresJobStore.wait_for_jobs_async`) instead of polling.
- Events: the partial unique index ``events_one_terminal`` makes a second terminal event impossible. Event
  writers take a transaction advisory lock first, so event ids are handed out in commit order and the
  outbox reader (:meth:`pending_events`) never skips an event that commits late.
- Files: in cluster mode the documents and received faxes live in table ``files`` (bytea), so any node can
  send any job and serve any fax; :meth:`submit` stores the document in the same transaction as the job.
- Failures: a database that cannot be reached raises :class:`StoreUnavailableError` naming
  ``host:port/db`` (never the password); the pool checks each connection before use and reconnects by
  itself after a server restart.

The API is synchronous (psycopg 3, :class:`psycopg_pool.ConnectionPool`); the event loop calls it through
:class:`~vfax.store.async_store.AsyncJobStore` in worker threads. Only LISTEN uses an async connection.
"""

from __future__ import annotations

import asyncio
import builtins  # the stores have a method named `list`: annotations say builtins.list
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from vfax.service.events import EVENT_TYPES, EventType, FaxEvent, OutboxBatch, OutboxItem
from vfax.status import FaxStatus
from vfax.storage import atomic_path
from vfax.store.base import (
    CRASH_ERROR,
    LEASE_ERROR,
    check_file_kind,
    check_lease_seconds,
    dump_json,
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
    LeaseLostError,
    NodeInfo,
    OutboundJob,
    RecoveryReport,
    SchemaError,
    StoreUnavailableError,
    TerminalEventExistsError,
    default_owner_alive,
    make_owner,
    new_id,
)
from vfax.store.retry import AttemptResult, RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]
Conn = psycopg.Connection[Row]

SQL_DIR = Path(__file__).with_name("sql") / "postgres"
CHANNEL = "vfax_jobs"
# advisory lock keys (any two constants; only vfax uses them in its database)
_SCHEMA_LOCK = 0x7666_6178_0001
_EVENTS_LOCK = 0x7666_6178_0002


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqlMigration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = SQL_DIR) -> tuple[SqlMigration, ...]:
    """The numbered files ``NNN_name.sql`` of ``directory``, which must be 1..n without gaps."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", path.name)
        if match is None:
            raise SchemaError(f"migration file {path} is not named NNN_name.sql")
        found.append(SqlMigration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations in {directory} must be numbered 1..n, got {versions}")
    return tuple(found)


MIGRATIONS = load_migrations()
SCHEMA_VERSION = MIGRATIONS[-1].version


def address_of(url: str) -> str:
    """``host:port/dbname`` of a connection URL, for messages (never the user's password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL URL>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def check_url(url: str) -> str:
    """``url`` if it parses as a PostgreSQL connection URL with a usable port; else a ValueError naming
    ``database`` (without the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).split(" in URI", 1)[0]
        raise ValueError(f"database is not a valid PostgreSQL URL ({reason})") from None
    port = str(params.get("port") or "5432")
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise ValueError(f"database URL port must be 1..65535, got {port!r} ({address_of(url)})")
    return url


def _reason(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def apply_migrations(
    conn: Conn, migrations: Sequence[SqlMigration] = MIGRATIONS, *, address: str = ""
) -> int:
    """Bring the database to the last of ``migrations`` in one transaction (``conn`` not in autocommit),
    under an advisory lock so nodes starting together apply each file once. A newer database raises
    :class:`SchemaError` and nothing is changed. Returns the version."""
    target = migrations[-1].version if migrations else 0
    where = f" at {address}" if address else ""
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
            " description text NOT NULL, applied_at double precision NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version").fetchone()
        current = int(row["v"]) if row else 0
        if current > target:
            raise SchemaError(
                f"database schema version {current}{where} is newer than this vfax knows ({target});"
                " nothing was changed: upgrade vfax on this node"
            )
        for migration in migrations[current:]:
            conn.execute(migration.sql.encode())  # several statements: simple query protocol, no params
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
            log.info(
                "job store schema%s migrated to version %d: %s", where, migration.version, migration.name
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return target


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


class PostgresJobStore:
    """:class:`~vfax.store.model.JobStore` on a PostgreSQL database shared by several nodes (see the module
    docstring). ``owner`` is this node's id (the lease owner of its claims and receptions)."""

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        lease_seconds: float = 60.0,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        pool_min: int = 1,
        pool_max: int = 8,
        connect_timeout: float = 5.0,
        migrations: Sequence[SqlMigration] = MIGRATIONS,
    ) -> None:
        self.url = check_url(url)
        self.address = address_of(url)
        self.policy = policy or RetryPolicy()
        self.owner = owner or make_owner()
        self.lease_seconds = check_lease_seconds(lease_seconds)
        self._clock = clock
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout
        self._is_down = False
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._listen_loop: asyncio.AbstractEventLoop | None = None
        kwargs = {"connect_timeout": max(1, round(connect_timeout)), "row_factory": dict_row}
        try:
            with psycopg.connect(url, **kwargs) as conn:  # type: ignore[arg-type]
                self.schema_version = apply_migrations(conn, migrations, address=self.address)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=pool_min,
            max_size=max(pool_min, pool_max),
            open=False,
            check=ConnectionPool.check_connection,  # a connection from before a restart is replaced
            timeout=connect_timeout,
            # the pool gives up reconnecting in the background after this long (its back-off grows to
            # minutes); the next request then connects at once, so a restarted server is used right away
            reconnect_timeout=connect_timeout,
            name=f"vfax-store-{self.address}",
        )
        self._pool.open(wait=False)

    # -- plumbing ---------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"PostgreSQL at {self.address} is unavailable: {_reason(exc, self.url)}")

    def close(self) -> None:
        self._pool.close()
        if self._listen is not None and not self._listen.closed:
            # the async LISTEN connection belongs to its event loop (AsyncJobStore.close awaits aclose)
            with contextlib.suppress(Exception):
                self._listen.pgconn.finish()
        self._listen = None

    def __enter__(self) -> PostgresJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _run(self, work: Callable[[Conn], T], *, attempts: int = 5) -> T:
        """``work(conn)`` in one transaction (committed on return, rolled back on error); a deadlock or
        serialization failure is retried, a lost database raises :class:`StoreUnavailableError`."""
        self._check_up()
        for attempt in range(attempts):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    return work(conn)
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1) * self._rng.random())
            except PoolTimeout as exc:
                raise self._down(self._probe() or exc) from None
            except psycopg.OperationalError as exc:
                raise self._down(exc) from None
        raise AssertionError("unreachable")

    def _down(self, exc: BaseException) -> StoreUnavailableError:
        self._is_down = True
        return self._unavailable(exc)

    def _check_up(self) -> None:
        """After an outage, one direct connection attempt first: while the server is away every call fails
        at once with the reason (instead of waiting for the pool's timeout); once it answers, the pool."""
        if self._is_down:
            exc = self._probe()
            if exc is not None:
                raise self._unavailable(exc)
            self._is_down = False

    def _probe(self) -> BaseException | None:
        """Why the pool has no connection: the error of one direct connection attempt (None if it works)."""
        try:
            psycopg.connect(self.url, connect_timeout=max(1, round(self._connect_timeout))).close()
        except psycopg.Error as exc:
            return exc
        return None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Conn]:
        """One snapshot for several SELECTs."""
        self._check_up()
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
        except PoolTimeout as exc:
            raise self._down(self._probe() or exc) from None
        except psycopg.OperationalError as exc:
            raise self._down(exc) from None

    @staticmethod
    def _one(conn: Conn, query: str, args: Sequence[Any] = ()) -> Row | None:
        return conn.execute(query, args).fetchone()  # type: ignore[arg-type]

    def _job_row(self, conn: Conn, job_id: str, *, lock: bool = False) -> Row:
        row = self._one(conn, "SELECT * FROM jobs WHERE id = %s" + (" FOR UPDATE" if lock else ""), (job_id,))
        if row is None:
            raise JobNotFoundError(job_id)
        return row

    def _inbound_row(self, conn: Conn, inbound_id: str, *, lock: bool = False) -> Row:
        query = "SELECT * FROM inbound_faxes WHERE id = %s" + (" FOR UPDATE" if lock else "")
        row = self._one(conn, query, (inbound_id,))
        if row is None:
            raise JobNotFoundError(inbound_id)
        return row

    # -- events -----------------------------------------------------------------------------------

    @staticmethod
    def _has_terminal(conn: Conn, job_id: str) -> bool:
        return (
            conn.execute("SELECT 1 FROM events WHERE job_id = %s AND terminal", (job_id,)).fetchone()
            is not None
        )

    def _append_event(
        self,
        conn: Conn,
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
        # ids in commit order: the outbox reader trusts that nothing commits below what it has seen
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENTS_LOCK,))
        if self._has_terminal(conn, job_id):
            raise TerminalEventExistsError(job_id)
        body = dump_json(payload)
        try:
            with conn.transaction():  # a savepoint: the caller's transaction stays usable on error
                row = self._one(
                    conn,
                    "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal)"
                    " SELECT %s, COALESCE(MAX(seq), 0) + 1, %s, %s, %s::jsonb, %s, %s FROM events"
                    " WHERE job_id = %s RETURNING seq",
                    (job_id, type, int(status), body, now, terminal, job_id),
                )
        except psycopg.errors.UniqueViolation as exc:
            if terminal and exc.diag.constraint_name == "events_one_terminal":
                raise TerminalEventExistsError(job_id) from exc
            raise
        assert row is not None
        if terminal:
            conn.execute("UPDATE jobs SET terminal_event_emitted = true WHERE id = %s", (job_id,))
            conn.execute("UPDATE inbound_faxes SET terminal_event_emitted = true WHERE id = %s", (job_id,))
        return FaxEvent(job_id, row["seq"], type, status, now, json.loads(body))

    def append_event(
        self,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> FaxEvent:
        """See :meth:`vfax.store.sqlite.SqliteJobStore.append_event`."""
        at = self._now(now)
        return self._run(lambda conn: self._append_event(conn, job_id, type, status, payload, at))

    def events_for(self, job_id: str) -> builtins.list[FaxEvent]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT * FROM events WHERE job_id = %s ORDER BY seq", (job_id,)
            ).fetchall()
        )
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
        """Queue a fax; its document's bytes are stored with it (any node may send it) and idle nodes are
        woken (``NOTIFY vfax_jobs``) when the transaction commits."""
        now = self._now(now)
        if not destination:
            raise ValueError("destination must not be empty")
        limit = self.policy.max_attempts if max_attempts is None else max_attempts
        if limit < 1:
            raise ValueError(f"max_attempts must be >= 1, got {limit}")
        path = Path(document)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the document {path}: {exc.strerror or exc}") from None
        job_id = new_id(now)
        due = now if not_before is None else not_before

        def work(conn: Conn) -> Row:
            row = self._one(
                conn,
                "INSERT INTO jobs (id, created_at, updated_at, document, original, destination, device,"
                " priority, not_before, max_attempts, state, options)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s::jsonb) RETURNING *",
                (
                    job_id, now, now, os.fspath(document), path_or_none(original), destination, device,
                    priority, due, limit, json.dumps(dict(options or {}), sort_keys=True),
                ),
            )  # fmt: skip
            self._put_file(conn, job_id, "document", data, now)
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, repr(due)))
            assert row is not None
            return row

        return job_from_row(self._run(work))

    def claim_next(self, now: float | None = None, device: str | None = None) -> OutboundJob | None:
        """Take the best due job (highest priority, then earliest ``not_before``, then oldest) in one
        statement: ``FOR UPDATE SKIP LOCKED`` lets nodes claim side by side without waiting or colliding."""
        now = self._now(now)
        device_filter = "" if device is None else " AND (device IS NULL OR device = %(device)s)"
        query = (
            "UPDATE jobs SET state = 'in_flight', attempts = attempts + 1, lease_owner = %(owner)s,"
            " lease_at = %(now)s, lease_expires_at = %(expires)s, updated_at = %(now)s"
            " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= %(now)s"
            f"{device_filter} ORDER BY priority DESC, not_before, created_at, id"
            " LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *"
        )
        args = {"owner": self.owner, "now": now, "expires": now + self.lease_seconds, "device": device}
        row = self._run(lambda conn: self._one(conn, query, args))  # type: ignore[arg-type]
        return None if row is None else job_from_row(row)

    def _finish_attempt(self, conn: Conn, row: Row, result: AttemptResult, now: float) -> JobState:
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
        ended = self._has_terminal(conn, job.id)
        if ended:
            log.warning("job %s already has a terminal event; finishing it without another", job.id)
        if decision.retry and not cancelled and not ended:
            conn.execute(
                "UPDATE jobs SET state = 'queued', not_before = %s, options = %s::jsonb, fax_failures = %s,"
                " last_status = %s, last_error = %s, pages_sent = %s, lease_owner = NULL, lease_at = NULL,"
                " lease_expires_at = NULL, updated_at = %s WHERE id = %s",
                (
                    decision.not_before, json.dumps(decision.next_options, sort_keys=True),
                    decision.fax_failures, int(result.status), result.error, result.pages, now, job.id,
                ),
            )  # fmt: skip
            payload = {**common, "retry": True, "not_before": decision.not_before, "reason": decision.reason}
            self._append_event(conn, job.id, "status", result.status, payload, now)
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, repr(decision.not_before)))
            return JobState.QUEUED
        if result.status.is_success:
            state = JobState.COMPLETED
        elif cancelled:
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED
        conn.execute(
            "UPDATE jobs SET state = %s, fax_failures = %s, last_status = %s, last_error = %s,"
            " pages_sent = %s, lease_owner = NULL, lease_at = NULL, lease_expires_at = NULL,"
            " finished_at = %s, updated_at = %s WHERE id = %s",
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
        """End this node's in-flight attempt of ``job_id``: retry per policy or finish with the terminal
        event. :class:`LeaseLostError` if another node holds the job now (this node's lease expired)."""
        now = self._now(now)

        def work(conn: Conn) -> Row:
            row = self._job_row(conn, job_id, lock=True)
            if row["state"] != JobState.IN_FLIGHT:
                raise InvalidTransitionError(
                    f"job {job_id} is {row['state']}, not in_flight: no attempt to end"
                )
            if row["lease_owner"] != self.owner:
                raise LeaseLostError(
                    f"job {job_id} is held by {row['lease_owner']}, not {self.owner}: its lease was lost"
                )
            self._finish_attempt(conn, row, result, now)
            return self._job_row(conn, job_id)

        return job_from_row(self._run(work))

    def cancel(self, job_id: str, *, now: float | None = None) -> OutboundJob:
        """See :meth:`vfax.store.sqlite.SqliteJobStore.cancel`."""
        now = self._now(now)

        def work(conn: Conn) -> Row:
            row = self._job_row(conn, job_id, lock=True)
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = true, last_status = %s,"
                    " finished_at = %s, updated_at = %s WHERE id = %s",
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
                    "UPDATE jobs SET cancel_requested = true, updated_at = %s WHERE id = %s", (now, job_id)
                )
            return self._job_row(conn, job_id)

        return job_from_row(self._run(work))

    def get(self, job_id: str) -> OutboundJob:
        return job_from_row(self._run(lambda conn: self._job_row(conn, job_id)))

    def list(
        self, filter: JobFilter | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[OutboundJob]:
        """Outbound jobs, oldest first."""
        query = "SELECT * FROM jobs WHERE true"
        args: list[Any] = []
        if filter is not None:
            if filter.states is not None:
                query += " AND state = ANY(%s)"
                args.append(sorted(s.value for s in filter.states))
            if filter.device is not None:
                query += " AND device = %s"
                args.append(filter.device)
            if filter.destination is not None:
                query += " AND destination = %s"
                args.append(filter.destination)
        query += " ORDER BY created_at, id LIMIT %s OFFSET %s"
        args += [limit, offset]
        rows = self._run(lambda conn: conn.execute(query, args).fetchall())  # type: ignore[arg-type]
        return [job_from_row(r) for r in rows]

    def count(self) -> dict[str, int]:
        """Jobs per state, outbound as ``"queued"``... and inbound as ``"inbound:receiving"``..."""
        with self._read() as conn:
            out = {
                r["state"]: r["n"]
                for r in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            }
            for r in conn.execute("SELECT state, COUNT(*) AS n FROM inbound_faxes GROUP BY state"):
                out[f"inbound:{r['state']}"] = r["n"]
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
        """Record an incoming fax call *before* answering it, under this node's lease."""
        now = self._now(now)
        inbound_id = new_id(now)
        row = self._run(
            lambda conn: self._one(
                conn,
                "INSERT INTO inbound_faxes (id, created_at, updated_at, call_id, caller, callee, device,"
                " started_at, state, tiff_path, owner, lease_expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'receiving', %s, %s, %s) RETURNING *",
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
        )
        assert row is not None
        return inbound_from_row(row)

    def update_inbound(
        self,
        inbound_id: str,
        *,
        pages: int | None = None,
        remote_csi: str | None = None,
        tiff_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax:
        now = self._now(now)

        def work(conn: Conn) -> Row:
            row = self._inbound_row(conn, inbound_id, lock=True)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            updated = self._one(
                conn,
                "UPDATE inbound_faxes SET pages = COALESCE(%s, pages), remote_csi = COALESCE(%s, remote_csi),"
                " tiff_path = COALESCE(%s, tiff_path), updated_at = %s WHERE id = %s RETURNING *",
                (pages, remote_csi, path_or_none(tiff_path), now, inbound_id),
            )
            assert updated is not None
            return updated

        return inbound_from_row(self._run(work))

    def _end_inbound(
        self,
        conn: Conn,
        row: Row,
        state: InboundState,
        status: FaxStatus,
        pages: int,
        error: str,
        remote_csi: str | None,
        now: float,
    ) -> None:
        conn.execute(
            "UPDATE inbound_faxes SET state = %s, last_status = %s, pages = %s, error = %s,"
            " remote_csi = COALESCE(%s, remote_csi), lease_expires_at = NULL, finished_at = %s,"
            " updated_at = %s WHERE id = %s",
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
        """See :meth:`vfax.store.sqlite.SqliteJobStore.finish_inbound`."""
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

        def work(conn: Conn) -> Row:
            row = self._inbound_row(conn, inbound_id, lock=True)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            self._end_inbound(conn, row, state, status, pages, error, remote_csi, now)
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._run(work))

    def place_inbound_files(
        self,
        inbound_id: str,
        *,
        tiff_path: str | os.PathLike[str] | None = None,
        pdf_path: str | os.PathLike[str] | None = None,
        report_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax:
        now = self._now(now)

        def work(conn: Conn) -> Row:
            row = self._one(
                conn,
                "UPDATE inbound_faxes SET tiff_path = COALESCE(%s, tiff_path),"
                " pdf_path = COALESCE(%s, pdf_path), report_path = COALESCE(%s, report_path),"
                " updated_at = %s WHERE id = %s RETURNING *",
                (
                    path_or_none(tiff_path),
                    path_or_none(pdf_path),
                    path_or_none(report_path),
                    now,
                    inbound_id,
                ),
            )
            if row is None:
                raise JobNotFoundError(inbound_id)
            return row

        return inbound_from_row(self._run(work))

    def get_inbound(self, inbound_id: str) -> InboundFax:
        return inbound_from_row(self._run(lambda conn: self._inbound_row(conn, inbound_id)))

    def list_inbound(
        self, states: frozenset[InboundState] | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[InboundFax]:
        query = "SELECT * FROM inbound_faxes"
        args: list[Any] = []
        if states is not None:
            query += " WHERE state = ANY(%s)"
            args.append(sorted(s.value for s in states))
        query += " ORDER BY created_at, id LIMIT %s OFFSET %s"
        args += [limit, offset]
        rows = self._run(lambda conn: conn.execute(query, args).fetchall())  # type: ignore[arg-type]
        return [inbound_from_row(r) for r in rows]

    # -- recovery and leases ----------------------------------------------------------------------

    def _settle_job(self, conn: Conn, row: Row, error: str, now: float, report: RecoveryReport) -> JobState:
        result = AttemptResult(FaxStatus.FS_DISCONNECTED, pages=0, error=error, fax_phase=False)
        state = self._finish_attempt(conn, row, result, now)
        {
            JobState.QUEUED: report.requeued,
            JobState.FAILED: report.failed,
            JobState.CANCELLED: report.cancelled,
        }[state].append(row["id"])
        return state

    def _settle_inbound(
        self, conn: Conn, row: Row, has_pages: bool, error: str, now: float, report: RecoveryReport
    ) -> InboundState:
        state = InboundState.PARTIAL if has_pages else InboundState.FAILED
        pages = row["pages"] if has_pages else 0
        self._end_inbound(conn, row, state, FaxStatus.FS_DISCONNECTED, pages, error, None, now)
        (report.inbound_partial if has_pages else report.inbound_failed).append(row["id"])
        return state

    def recover_after_crash(
        self, now: float | None = None, *, owner_alive: Callable[[str], bool] | None = None
    ) -> RecoveryReport:
        """Settle the work of dead processes of *this host* (pid no longer exists), as the SQLite store
        does; other nodes' work is settled by lease expiry (:meth:`expire_leases`)."""
        at = self._now(now)
        alive = owner_alive or default_owner_alive

        def dead(owner: str | None) -> bool:
            return owner != self.owner and (owner is None or not alive(owner))

        def work(conn: Conn) -> RecoveryReport:
            report = RecoveryReport()
            for row in conn.execute(
                "SELECT * FROM jobs WHERE state = 'in_flight' ORDER BY id FOR UPDATE SKIP LOCKED"
            ).fetchall():
                if dead(row["lease_owner"]):
                    state = self._settle_job(conn, row, CRASH_ERROR, at, report)
                    log.warning("recovered job %s of dead owner %s: %s", row["id"], row["lease_owner"], state)
            for row in conn.execute(
                "SELECT * FROM inbound_faxes WHERE state = 'receiving' ORDER BY id FOR UPDATE SKIP LOCKED"
            ).fetchall():
                if dead(row["owner"]):
                    tiff = row["tiff_path"]
                    has_pages = bool(tiff) and os.path.isfile(tiff) and os.path.getsize(tiff) > 0
                    has_pages = has_pages or self._has_file(conn, row["id"], "partial")
                    state = self._settle_inbound(conn, row, has_pages, CRASH_ERROR, at, report)
                    log.warning(
                        "recovered inbound fax %s of dead owner %s: %s", row["id"], row["owner"], state
                    )
            return report

        return self._run(work)

    def _settle_leases(
        self, conn: Conn, where: str, args: Sequence[Any], now: float, report: RecoveryReport
    ) -> set[str]:
        """Settle in-flight jobs and receptions matching ``where`` (on ``lease_expires_at`` and ``owner``,
        the lease owner in both tables); rows locked by someone else are skipped (being finished now)."""
        owners: set[str] = set()
        for row in conn.execute(
            "SELECT * FROM (SELECT *, lease_owner AS owner FROM jobs WHERE state = 'in_flight') AS j"
            f" WHERE {where} ORDER BY id FOR UPDATE SKIP LOCKED",
            args,
        ).fetchall():
            state = self._settle_job(conn, row, LEASE_ERROR.format(owner=row["owner"]), now, report)
            owners.add(row["owner"])
            log.warning("job %s: lease of %s expired: %s", row["id"], row["owner"], state)
        for row in conn.execute(
            f"SELECT * FROM inbound_faxes WHERE state = 'receiving' AND {where}"
            " ORDER BY id FOR UPDATE SKIP LOCKED",
            args,
        ).fetchall():
            error = LEASE_ERROR.format(owner=row["owner"])
            state = self._settle_inbound(conn, row, row["pages"] > 0, error, now, report)
            owners.add(row["owner"])
            log.warning("inbound fax %s: lease of %s expired: %s", row["id"], row["owner"], state)
        return owners

    def expire_leases(self, *, now: float | None = None) -> RecoveryReport:
        """Retry (per policy) the jobs and settle the receptions whose lease ran out; their owners, and the
        nodes without a heartbeat for longer than their lease, become ``lost`` (their next heartbeat
        raises :class:`LeaseLostError`)."""
        at = self._now(now)

        def work(conn: Conn) -> RecoveryReport:
            report = RecoveryReport()
            # lock the owners' node rows first (a heartbeat locks its node row, then its jobs): the same
            # order on both sides, so no deadlock, and no lease can be extended while we take it
            conn.execute(
                "SELECT id FROM nodes WHERE id IN (SELECT lease_owner FROM jobs WHERE state = 'in_flight'"
                " AND lease_expires_at < %s UNION SELECT owner FROM inbound_faxes WHERE state = 'receiving'"
                " AND lease_expires_at < %s) ORDER BY id FOR UPDATE",
                (at, at),
            )
            owners = self._settle_leases(conn, "lease_expires_at < %s", (at,), at, report)
            conn.execute(
                "UPDATE nodes SET state = 'lost' WHERE state = 'up'"
                " AND (id = ANY(%s) OR heartbeat_at + lease_seconds < %s)",
                (sorted(owners), at),
            )
            return report

        return self._run(work)

    # -- nodes ----------------------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        *,
        api: str | None,
        info: Mapping[str, Any],
        lease_seconds: float,
        now: float | None = None,
    ) -> NodeInfo:
        """Join as ``node_id``: :class:`DuplicateNodeError` while a live node holds that id; work left by
        an earlier run of the same id is settled (nobody runs it any more)."""
        at = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        if not node_id:
            raise ValueError("node id must not be empty")

        def work(conn: Conn) -> Row:
            # the INSERT takes the row lock (or waits for a concurrent registration of the same id)
            conn.execute(
                "INSERT INTO nodes (id, started_at, heartbeat_at, lease_seconds, state)"
                " VALUES (%s, %s, %s, %s, 'stopped') ON CONFLICT (id) DO NOTHING",
                (node_id, at, at, lease),
            )
            row = self._one(conn, "SELECT * FROM nodes WHERE id = %s FOR UPDATE", (node_id,))
            assert row is not None
            if node_from_row(row, at).state == NODE_UP:
                raise DuplicateNodeError(
                    f"node id {node_id!r} is held by a live node (heartbeat {at - row['heartbeat_at']:.1f} s"
                    f" ago, lease {row['lease_seconds']:g} s); nothing was changed"
                )
            left = RecoveryReport()
            self._settle_leases(conn, "owner = %s", (node_id,), at, left)
            if left.changed:
                log.warning("node %s rejoined: settled %d leftovers of its last run", node_id, left.changed)
            new = self._one(
                conn,
                "UPDATE nodes SET started_at = %s, heartbeat_at = %s, lease_seconds = %s, state = 'up',"
                " api = %s, info = %s::jsonb WHERE id = %s RETURNING *",
                (at, at, lease, api, dump_json(info), node_id),
            )
            assert new is not None
            return new

        return node_from_row(self._run(work), at)

    def heartbeat(
        self,
        node_id: str,
        *,
        info: Mapping[str, Any] | None = None,
        lease_seconds: float,
        now: float | None = None,
    ) -> int:
        """One statement: the node's row and every lease it holds move on to ``now + lease_seconds``.
        :class:`LeaseLostError` when the node is not ``up`` any more (its work was taken over)."""
        at = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        body = None if info is None else dump_json(info)
        query = (
            "WITH node AS (UPDATE nodes SET heartbeat_at = %(now)s, lease_seconds = %(lease)s,"
            " info = COALESCE(%(info)s::jsonb, info) WHERE id = %(id)s AND state = 'up' RETURNING id),"
            " j AS (UPDATE jobs SET lease_expires_at = %(expires)s WHERE state = 'in_flight'"
            " AND lease_owner IN (SELECT id FROM node) RETURNING 1),"
            " i AS (UPDATE inbound_faxes SET lease_expires_at = %(expires)s WHERE state = 'receiving'"
            " AND owner IN (SELECT id FROM node) RETURNING 1)"
            " SELECT (SELECT COUNT(*) FROM node) AS up,"
            " (SELECT COUNT(*) FROM j) + (SELECT COUNT(*) FROM i) AS n"
        )
        args = {"now": at, "lease": lease, "info": body, "id": node_id, "expires": at + lease}
        row = self._run(lambda conn: self._one(conn, query, args))  # type: ignore[arg-type]
        assert row is not None
        if row["up"] != 1:
            raise LeaseLostError(
                f"node {node_id!r} is not up in the store any more (presumed dead, its work retried"
                " elsewhere): stop its calls"
            )
        return int(row["n"])

    def leave_node(self, node_id: str, *, now: float | None = None) -> None:
        at = self._now(now)
        self._run(
            lambda conn: conn.execute(
                "UPDATE nodes SET state = 'stopped', heartbeat_at = %s WHERE id = %s AND state = 'up'",
                (at, node_id),
            )
        )

    def list_nodes(self, *, now: float | None = None) -> builtins.list[NodeInfo]:
        at = self._now(now)
        rows = self._run(lambda conn: conn.execute("SELECT * FROM nodes ORDER BY id").fetchall())
        return [node_from_row(r, at) for r in rows]

    # -- files ----------------------------------------------------------------------------------------

    @property
    def holds_files(self) -> bool:
        """True: documents and received faxes are kept in the database, for every node."""
        return True

    @staticmethod
    def _put_file(conn: Conn, owner_id: str, kind: str, data: bytes, now: float) -> None:
        conn.execute(
            "INSERT INTO files (owner_id, kind, data, size, sha256, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (owner_id, kind) DO UPDATE SET data = excluded.data, size = excluded.size,"
            " sha256 = excluded.sha256, created_at = excluded.created_at",
            (owner_id, kind, data, len(data), hashlib.sha256(data).hexdigest(), now),
        )

    @staticmethod
    def _has_file(conn: Conn, owner_id: str, kind: str) -> bool:
        query = "SELECT 1 FROM files WHERE owner_id = %s AND kind = %s AND size > 0"
        return conn.execute(query, (owner_id, kind)).fetchone() is not None

    def store_file(self, owner_id: str, kind: str, path: Path) -> None:
        """Keep the bytes of ``path`` as ``kind`` of ``owner_id`` (replacing earlier ones)."""
        check_file_kind(kind)
        data = Path(path).read_bytes()
        now = self._clock()
        self._run(lambda conn: self._put_file(conn, owner_id, kind, data, now))

    def fetch_file(self, owner_id: str, kind: str, dest: Path) -> Path | None:
        """Write the stored bytes to ``dest`` atomically (temporary file, fsync, rename); None if absent."""
        check_file_kind(kind)
        row = self._run(
            lambda conn: self._one(
                conn, "SELECT data, sha256 FROM files WHERE owner_id = %s AND kind = %s", (owner_id, kind)
            )
        )
        if row is None:
            return None
        data = bytes(row["data"])
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise StoreUnavailableError(f"file {kind} of {owner_id} at {self.address} fails its checksum")
        dest = Path(dest)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        return dest

    # -- the outbox (vfax.service.events.EventOutbox) -------------------------------------------------

    def pending_events(self, sink: str, *, now: float, after_id: int = 0, limit: int = 200) -> OutboxBatch:
        """See :meth:`vfax.service.events.EventOutbox.pending_events` (one snapshot, as in SQLite)."""
        items: list[OutboxItem] = []
        blocked: set[str] = set()
        next_due: float | None = None
        settled_through: int | None = None
        cursor = after_id
        with self._read() as conn:
            while True:
                rows = conn.execute(
                    "SELECT e.*, COALESCE(d.attempts, 0) AS d_attempts, d.next_try AS d_next_try"
                    " FROM events e LEFT JOIN deliveries d ON d.event_id = e.id AND d.sink = %s"
                    " WHERE e.id > %s AND d.delivered_at IS NULL AND d.dead_letter_at IS NULL"
                    " ORDER BY e.id LIMIT %s",
                    (sink, cursor, limit),
                ).fetchall()
                if settled_through is None:
                    if rows:
                        settled_through = rows[0]["id"] - 1
                    else:
                        row = self._one(conn, "SELECT COALESCE(MAX(id), %s) AS m FROM events", (after_id,))
                        settled_through = int(row["m"]) if row else after_id
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
                        blocked.add(job_id)
                if items or len(rows) < limit:
                    break
                cursor = rows[-1]["id"]
        return OutboxBatch(items=items, settled_through=max(settled_through, after_id), next_due=next_due)

    def _delivery(self, sink: str, rowid: int, sets: str, args: Sequence[Any]) -> None:
        self._run(lambda conn: self._delivery_upsert(conn, sink, rowid, sets, args))

    @staticmethod
    def _delivery_upsert(conn: Conn, sink: str, rowid: int, sets: str, args: Sequence[Any]) -> None:
        conn.execute(
            "INSERT INTO deliveries (sink, event_id) VALUES (%s, %s) ON CONFLICT (sink, event_id) DO NOTHING",
            (sink, rowid),
        )
        conn.execute(
            f"UPDATE deliveries SET attempts = attempts + 1, {sets} WHERE sink = %s AND event_id = %s",
            (*args, sink, rowid),
        )

    def mark_delivered(self, sink: str, rowid: int, *, now: float) -> None:
        self._delivery(sink, rowid, "delivered_at = %s, next_try = NULL", (now,))

    def mark_retry(self, sink: str, rowid: int, *, error: str, next_try: float, now: float) -> None:
        self._delivery(sink, rowid, "next_try = %s, last_error = %s", (next_try, error))

    def mark_dead_letter(self, sink: str, rowid: int, *, error: str, now: float) -> None:
        self._delivery(sink, rowid, "dead_letter_at = %s, next_try = NULL, last_error = %s", (now, error))

    def dead_letters(self, sink: str | None = None) -> builtins.list[DeadLetter]:
        query = (
            "SELECT e.*, d.sink AS d_sink, d.attempts AS d_attempts, d.dead_letter_at AS d_dead,"
            " d.last_error AS d_error FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.dead_letter_at IS NOT NULL"
        )
        args: list[Any] = []
        if sink is not None:
            query += " AND d.sink = %s"
            args.append(sink)
        rows = self._run(
            lambda conn: conn.execute(query + " ORDER BY d.dead_letter_at, e.id", args).fetchall()
        )  # type: ignore[arg-type]
        return [
            DeadLetter(r["d_sink"], r["id"], event_from_row(r), r["d_attempts"], r["d_dead"], r["d_error"])
            for r in rows
        ]

    def retry_dead_letters(self, sink: str) -> int:
        """Give ``sink``'s dead letters a fresh set of attempts."""
        return self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE deliveries SET dead_letter_at = NULL, attempts = 0, next_try = NULL"
                    " WHERE sink = %s AND dead_letter_at IS NOT NULL",
                    (sink,),
                ).rowcount
            )
        )

    def delivery(self, sink: str, rowid: int) -> dict[str, Any] | None:
        """The delivery record of one event for one sink (for inspection and tests)."""
        return self._run(
            lambda conn: self._one(
                conn, "SELECT * FROM deliveries WHERE sink = %s AND event_id = %s", (sink, rowid)
            )
        )

    # -- LISTEN ---------------------------------------------------------------------------------------

    async def wait_for_jobs_async(self, timeout: float) -> bool:
        """Wait on ``LISTEN vfax_jobs``: True as soon as a job was submitted or requeued by any node, False
        after ``timeout``. If the database is gone this sleeps ``timeout`` and returns False (the next
        claim reports the outage); the connection is made again on the next call."""
        loop = asyncio.get_running_loop()
        try:
            if self._listen is None or self._listen.closed or self._listen_loop is not loop:
                await self._drop_listen()
                self._listen = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
                )
                self._listen_loop = loop
                await self._listen.execute(f"LISTEN {CHANNEL}")
            async for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.OperationalError as exc:
            log.warning("LISTEN %s: %s", CHANNEL, self._unavailable(exc))
            await self._drop_listen()
            await asyncio.sleep(timeout)
            return False

    async def _drop_listen(self) -> None:
        conn, self._listen = self._listen, None
        if conn is not None and not conn.closed:
            if self._listen_loop is asyncio.get_running_loop():
                with contextlib.suppress(Exception):
                    await conn.close()
            else:
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()

    async def aclose(self) -> None:
        """Close the LISTEN connection (on the event loop that made it)."""
        await self._drop_listen()
