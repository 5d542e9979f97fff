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
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from vfax.status import FaxStatus
from vfax.storage import atomic_path
from vfax.store.base import (
    StoreBase,
    check_file_kind,
    check_lease_seconds,
    job_from_row,
)
from vfax.store.events import EventType
from vfax.store.model import (
    OutboundJob,
    SchemaError,
    StoreUnavailableError,
    TerminalEventExistsError,
    make_owner,
)
from vfax.store.retry import RetryPolicy

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


class PostgresJobStore(StoreBase):
    """:class:`~vfax.store.model.JobStore` on a PostgreSQL database shared by several nodes (see the module
    docstring). ``owner`` is this node's id (the lease owner of its claims and receptions). The logic
    shared with SQLite is in :class:`~vfax.store.base.StoreBase`; here: the pool and its failures, the
    claim, events in commit order, NOTIFY, node registration and heartbeats, lease expiry and files."""

    _JOBS = "jobs"
    _JSON = "?::jsonb"
    _TRUE = "true"
    _FOR_UPDATE = " FOR UPDATE"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

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

    # -- StoreBase hooks ------------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        return super()._q(sql).replace("?", "%s")

    def _tx(self, work: Callable[[Conn], T]) -> T:
        return self._run(work)

    def _query(self, work: Callable[[Conn], T]) -> T:
        return self._run(work)

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, builtins.list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _prepare_document(self, document: str | os.PathLike[str]) -> bytes:
        """The document's bytes, stored with the job so that any node can send it."""
        path = Path(document)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the document {path}: {exc.strerror or exc}") from None

    def _submitted(self, conn: Conn, job_id: str, prepared: bytes, now: float, due: float) -> None:
        """The document in the job's transaction; idle nodes are woken (``NOTIFY``) when it commits."""
        self._put_file(conn, job_id, "document", prepared, now)
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, repr(due)))

    def _requeued(self, conn: Conn, not_before: float) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, repr(not_before)))

    def _has_stored_file(self, conn: Conn, owner_id: str, kind: str) -> bool:
        return self._has_file(conn, owner_id, kind)

    def _delete_stored_files(self, conn: Conn, owner_id: str) -> None:
        conn.execute("DELETE FROM files WHERE owner_id = %s", (owner_id,))

    # -- events -----------------------------------------------------------------------------------

    def _lock_events(self, conn: Conn) -> None:
        # ids in commit order: the outbox reader trusts that nothing commits below what it has seen
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENTS_LOCK,))

    def _insert_event(
        self,
        conn: Conn,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        body: str,
        now: float,
        terminal: bool,
    ) -> int:
        """``seq`` is the job's next one (under the events lock); the unique partial index
        ``events_one_terminal`` backs the check for an earlier terminal event against other nodes."""
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
        return int(row["seq"])

    # -- outbound ---------------------------------------------------------------------------------

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

    # -- nodes and leases ---------------------------------------------------------------------------

    def _lock_lease_owners(self, conn: Conn, now: float) -> None:
        # lock the owners' node rows first (a heartbeat locks its node row, then its jobs): the same
        # order on both sides, so no deadlock, and no lease can be extended while we take it
        conn.execute(
            "SELECT id FROM nodes WHERE id IN (SELECT lease_owner FROM jobs WHERE state = 'in_flight'"
            " AND lease_expires_at < %s UNION SELECT owner FROM inbound_faxes WHERE state = 'receiving'"
            " AND lease_expires_at < %s) ORDER BY id FOR UPDATE",
            (now, now),
        )

    def _register_node(
        self, conn: Conn, node_id: str, api: str | None, info: str, lease: float, now: float
    ) -> Row:
        # the INSERT takes the row lock (or waits for a concurrent registration of the same id)
        conn.execute(
            "INSERT INTO nodes (id, started_at, heartbeat_at, lease_seconds, state)"
            " VALUES (%s, %s, %s, %s, 'stopped') ON CONFLICT (id) DO NOTHING",
            (node_id, now, now, lease),
        )
        row = self._one(conn, "SELECT * FROM nodes WHERE id = %s FOR UPDATE", (node_id,))
        assert row is not None
        self._check_node_free(node_id, row, now)
        self._settle_leftovers(conn, node_id, now)
        new = self._one(
            conn,
            "UPDATE nodes SET started_at = %s, heartbeat_at = %s, lease_seconds = %s, state = 'up',"
            " api = %s, info = %s::jsonb WHERE id = %s RETURNING *",
            (now, now, lease, api, info, node_id),
        )
        assert new is not None
        return new

    def _extend_leases(self, node_id: str, info: str | None, lease: float, now: float) -> int | None:
        """One statement: the node's row and every lease it holds move on to ``now + lease``."""
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
        args = {"now": now, "lease": lease, "info": info, "id": node_id, "expires": now + lease}
        row = self._run(lambda conn: self._one(conn, query, args))  # type: ignore[arg-type]
        assert row is not None
        return None if row["up"] != 1 else int(row["n"])

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
