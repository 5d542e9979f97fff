"""What the SQLite and PostgreSQL job stores share, so that each rule of the store is written once.

The row -> record conversions read a ``sqlite3.Row`` or a psycopg dict row alike (JSON columns are text
in SQLite and already decoded ``jsonb`` in PostgreSQL). :class:`StoreBase` holds the logic that is the
same on both databases (applying the retry policy's decision, ending receptions, recovery and lease
reports, events and the outbox, node bookkeeping); its SQL is written once with ``?`` placeholders and
the markers ``{jobs}`` (the outbound table), ``{json}`` (a JSON parameter) and ``{true}``, which
:meth:`StoreBase._q` turns into the backend's dialect. What really differs (claiming, transactions,
advisory locks, NOTIFY, stored files, node registration and heartbeats) stays in each backend.
"""

from __future__ import annotations

import builtins  # the stores have a method named `list`: annotations say builtins.list
import contextlib
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from vfax.status import FaxStatus
from vfax.store.events import EVENT_TYPES, EventType, FaxEvent, OutboxBatch, OutboxItem
from vfax.store.model import (
    FILE_KINDS,
    NODE_LOST,
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
    NodeNotFoundError,
    OutboundJob,
    RecoveryReport,
    TerminalEventExistsError,
    default_owner_alive,
    new_id,
    this_process,
)
from vfax.store.retry import AttemptResult, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

CRASH_ERROR = "interrupted: the vfax process died during this attempt"
LEASE_ERROR = "interrupted: the lease of node {owner} expired (no heartbeat)"


# --------------------------------------------------------------------------------------------------
# Checks and small conversions
# --------------------------------------------------------------------------------------------------


def check_lease_seconds(value: float, name: str = "lease_seconds") -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def check_file_kind(kind: str) -> str:
    if kind not in FILE_KINDS:
        raise ValueError(f"file kind must be one of {sorted(FILE_KINDS)}, got {kind!r}")
    return kind


def path_or_none(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


def dump_json(value: Mapping[str, Any] | None) -> str:
    """Event payloads and node info as stored: sorted keys, anything unknown as its ``str``."""
    return json.dumps(dict(value or {}), sort_keys=True, default=str)


def _json_column(value: Any) -> dict[str, Any]:
    """A JSON object column: text in SQLite, already decoded (``jsonb``) in PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def _lease_expiry(row: Any) -> float | None:
    """``lease_expires_at`` (absent from a SQLite store opened with migrations before version 4)."""
    return row["lease_expires_at"] if "lease_expires_at" in row.keys() else None  # noqa: SIM118


def _status_or_none(value: int | None) -> FaxStatus | None:
    return None if value is None else FaxStatus(value)


# --------------------------------------------------------------------------------------------------
# Rows -> records
# --------------------------------------------------------------------------------------------------


def job_from_row(row: Any) -> OutboundJob:
    return OutboundJob(
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        document=row["document"],
        original=row["original"],
        destination=row["destination"],
        device=row["device"],
        priority=row["priority"],
        not_before=row["not_before"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        state=JobState(row["state"]),
        last_status=_status_or_none(row["last_status"]),
        last_error=row["last_error"],
        pages_sent=row["pages_sent"],
        options=_json_column(row["options"]),
        lease_owner=row["lease_owner"],
        cancel_requested=bool(row["cancel_requested"]),
        terminal_event_emitted=bool(row["terminal_event_emitted"]),
        fax_failures=row["fax_failures"],
        finished_at=row["finished_at"],
        lease_expires_at=_lease_expiry(row),
    )


def inbound_from_row(row: Any) -> InboundFax:
    return InboundFax(
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        call_id=row["call_id"],
        caller=row["caller"],
        callee=row["callee"],
        device=row["device"],
        started_at=row["started_at"],
        state=InboundState(row["state"]),
        pages=row["pages"],
        remote_csi=row["remote_csi"],
        tiff_path=row["tiff_path"],
        pdf_path=row["pdf_path"],
        report_path=row["report_path"],
        last_status=_status_or_none(row["last_status"]),
        error=row["error"],
        owner=row["owner"],
        terminal_event_emitted=bool(row["terminal_event_emitted"]),
        finished_at=row["finished_at"],
        lease_expires_at=_lease_expiry(row),
        read_at=_optional(row, "read_at"),
        deleted_at=_optional(row, "deleted_at"),
    )


def _optional(row: Any, column: str) -> Any:
    """A column added by a later migration (absent from a store opened with older migrations)."""
    return row[column] if column in row.keys() else None  # noqa: SIM118


def event_from_row(row: Any) -> FaxEvent:
    return FaxEvent(
        job_id=row["job_id"],
        seq=row["seq"],
        type=row["type"],
        status=FaxStatus(row["status"]),
        at=row["created_at"],
        payload=_json_column(row["payload"]),
    )


def node_from_row(row: Any, now: float) -> NodeInfo:
    """A node row; ``lost`` when it is ``up`` but its heartbeat is older than its lease."""
    state = row["state"]
    if state == NODE_UP and row["heartbeat_at"] + row["lease_seconds"] < now:
        state = NODE_LOST
    return NodeInfo(
        id=row["id"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        state=state,
        api=row["api"],
        info=_json_column(row["info"]),
        draining=bool(row["draining"]),
    )


def check_event(type: EventType, status: FaxStatus) -> tuple[FaxStatus, bool]:
    """``(status, terminal)`` of an event to append; ValueError for an unknown type, or for a terminal
    event without a terminal status."""
    if type not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
    status = FaxStatus(status)
    terminal = type == "terminal"
    if terminal and not status.is_terminal:
        raise ValueError(f"a terminal event needs a terminal status, not {status.name}")
    return status, terminal


def process_is_dead(process: str) -> bool:
    """``host:pid:token`` (:func:`~vfax.store.model.this_process`) names a process of this host that is
    gone: its pid no longer exists, or the pid is ours under another token (a restart that got the same
    pid, as the first process of a container does)."""
    if not default_owner_alive(process):
        return True
    host, _, rest = process.partition(":")
    mine = this_process()
    return host == mine.partition(":")[0] and rest.partition(":")[0] == str(os.getpid()) and process != mine


def duplicate_node_error(node_id: str, row: Any, now: float) -> DuplicateNodeError:
    return DuplicateNodeError(
        f"node id {node_id!r} is held by a live node (heartbeat {now - row['heartbeat_at']:.1f} s"
        f" ago, lease {row['lease_seconds']:g} s); nothing was changed"
    )


def lease_lost_error(node_id: str) -> LeaseLostError:
    return LeaseLostError(
        f"node {node_id!r} is not up in the store any more (presumed dead, its work retried"
        " elsewhere): stop its calls"
    )


# --------------------------------------------------------------------------------------------------
# The shared store logic
# --------------------------------------------------------------------------------------------------


class StoreBase:
    """The part of :class:`~vfax.store.model.JobStore` that is the same on every database.

    A backend sets the dialect (``_JOBS``, ``_JSON``, ``_TRUE``, the row-lock clauses) and implements the
    hooks: :meth:`_tx` (one write transaction), :meth:`_query` (reads), :meth:`_read` (one snapshot for
    several reads), :meth:`_append_event` (how event ids and the one terminal event are enforced),
    :meth:`_in` and the rest of the protocol (claim, nodes' registration and heartbeat, lease expiry,
    files). ``conn`` is the backend's connection; rows are read by column name.
    """

    owner: str
    lease_seconds: float
    policy: RetryPolicy
    _clock: Callable[[], float]
    _rng: random.Random

    _JOBS = "outbound_jobs"  # the outbound table
    _JSON = "?"  # a JSON parameter
    _TRUE = "1"
    _FOR_UPDATE = ""  # locks a row read before it changes (where the database has row locks)
    _SKIP_LOCKED = ""  # leaves the rows another transaction holds to it (they are being finished now)

    # -- hooks --------------------------------------------------------------------------------------

    def _tx(self, work: Callable[[Any], T]) -> T:
        """``work(conn)`` in one write transaction (committed on return, rolled back on error)."""
        raise NotImplementedError

    def _query(self, work: Callable[[Any], T]) -> T:
        """``work(conn)`` for reads."""
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        """One consistent snapshot for several SELECTs."""
        raise NotImplementedError

    def _lock_events(self, conn: Any) -> None:
        """Before an event is written, where writers of events must take turns beyond the transaction."""

    def _insert_event(
        self,
        conn: Any,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        body: str,
        now: float,
        terminal: bool,
    ) -> int:
        """Write the job's next event (``body`` is the JSON payload) and return its ``seq``; raise
        :class:`TerminalEventExistsError` when the database's one-terminal-event index refuses it."""
        raise NotImplementedError

    def _in(self, column: str, values: Sequence[str]) -> tuple[str, builtins.list[Any]]:
        """``column`` is one of ``values``: the SQL and its arguments."""
        raise NotImplementedError

    def _prepare_document(self, document: str | os.PathLike[str]) -> Any:
        """Before a submit's transaction: what :meth:`_submitted` needs (the bytes, where kept)."""
        return None

    def _submitted(self, conn: Any, job_id: str, prepared: Any, now: float, due: float) -> None:
        """In a submit's transaction, after the row is written."""

    def _requeued(self, conn: Any, not_before: float) -> None:
        """In the transaction that puts a job back in the queue."""

    def _has_stored_file(self, conn: Any, owner_id: str, kind: str) -> bool:
        """Whether the database holds a non-empty file of that kind."""
        return False

    def _register_node(
        self, conn: Any, node_id: str, api: str | None, info: str, lease: float, now: float
    ) -> Any:
        """In :meth:`register_node`'s transaction: :meth:`_check_node_free`, :meth:`_settle_leftovers`, and
        the node's row written ``up`` (returned), in the order this database's locks need."""
        raise NotImplementedError

    def _extend_leases(self, node_id: str, info: str | None, lease: float, now: float) -> int | None:
        """Heartbeat: the node's row and every lease it holds move on to ``now + lease``, in one
        transaction; how many leases, or None (nothing changed) when the node is not ``up``."""
        raise NotImplementedError

    def _lock_lease_owners(self, conn: Any, now: float) -> None:
        """Before :meth:`expire_leases` takes leases over (where a heartbeat could interleave)."""

    # -- plumbing -----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _q(self, sql: str) -> str:
        """Shared SQL in this backend's dialect."""
        return sql.replace("{jobs}", self._JOBS).replace("{json}", self._JSON).replace("{true}", self._TRUE)

    def _exec(self, conn: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        return conn.execute(self._q(sql), args)

    def _job_row(self, conn: Any, job_id: str, *, lock: bool = False) -> Any:
        query = "SELECT * FROM {jobs} WHERE id = ?" + (self._FOR_UPDATE if lock else "")
        row = self._exec(conn, query, (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return row

    def _inbound_row(self, conn: Any, inbound_id: str, *, lock: bool = False) -> Any:
        query = "SELECT * FROM inbound_faxes WHERE id = ?" + (self._FOR_UPDATE if lock else "")
        row = self._exec(conn, query, (inbound_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(inbound_id)
        return row

    # -- events -------------------------------------------------------------------------------------

    def _has_terminal(self, conn: Any, job_id: str) -> bool:
        query = "SELECT 1 FROM events WHERE job_id = ? AND terminal = {true}"
        return self._exec(conn, query, (job_id,)).fetchone() is not None

    def _mark_terminal(self, conn: Any, job_id: str) -> None:
        """The job or inbound fax ``job_id`` has its terminal event (written in this transaction)."""
        self._exec(conn, "UPDATE {jobs} SET terminal_event_emitted = {true} WHERE id = ?", (job_id,))
        self._exec(conn, "UPDATE inbound_faxes SET terminal_event_emitted = {true} WHERE id = ?", (job_id,))

    def _append_event(
        self,
        conn: Any,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None,
        now: float,
    ) -> FaxEvent:
        """One event in the caller's transaction: nothing after a terminal event, and the job or inbound
        fax row is marked when the terminal one is written."""
        status, terminal = check_event(type, status)
        self._lock_events(conn)
        if self._has_terminal(conn, job_id):
            raise TerminalEventExistsError(job_id)
        body = dump_json(payload)
        seq = self._insert_event(conn, job_id, type, status, body, now, terminal)
        if terminal:
            self._mark_terminal(conn, job_id)
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
        at = self._now(now)
        return self._tx(lambda conn: self._append_event(conn, job_id, type, status, payload, at))

    def events_for(self, job_id: str) -> builtins.list[FaxEvent]:
        query = "SELECT * FROM events WHERE job_id = ? ORDER BY seq"
        rows = self._query(lambda conn: self._exec(conn, query, (job_id,)).fetchall())
        return [event_from_row(r) for r in rows]

    # -- outbound -----------------------------------------------------------------------------------

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
        """Queue a fax. ``document`` is the prepared TIFF-F, ``original`` what the user gave us. Where the
        database holds files (PostgreSQL) the document's bytes are stored with the job, in its transaction,
        and idle nodes are woken when it commits."""
        now = self._now(now)
        if not destination:
            raise ValueError("destination must not be empty")
        limit = self.policy.max_attempts if max_attempts is None else max_attempts
        if limit < 1:
            raise ValueError(f"max_attempts must be >= 1, got {limit}")
        prepared = self._prepare_document(document)
        job_id = new_id(now)
        due = now if not_before is None else not_before

        def work(conn: Any) -> Any:
            self._exec(
                conn,
                "INSERT INTO {jobs} (id, created_at, updated_at, document, original, destination, device,"
                " priority, not_before, max_attempts, state, options)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', {json})",
                (
                    job_id, now, now, os.fspath(document), path_or_none(original), destination, device,
                    priority, due, limit, json.dumps(dict(options or {}), sort_keys=True),
                ),
            )  # fmt: skip
            self._submitted(conn, job_id, prepared, now, due)
            return self._job_row(conn, job_id)

        return job_from_row(self._tx(work))

    def _finish_attempt(self, conn: Any, row: Any, result: AttemptResult, now: float) -> JobState:
        """Apply the retry policy's decision to the attempt that ``result`` ends: back to the queue with a
        ``status`` event, or finished (completed, failed, cancelled) with the terminal event."""
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
            "node": job.lease_owner,  # the node that ran this attempt (or held it when it died)
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
            self._exec(
                conn,
                "UPDATE {jobs} SET state = 'queued', not_before = ?, options = {json}, fax_failures = ?,"
                " last_status = ?, last_error = ?, pages_sent = ?, lease_owner = NULL, lease_at = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                (
                    decision.not_before, json.dumps(decision.next_options, sort_keys=True),
                    decision.fax_failures, int(result.status), result.error, result.pages, now, job.id,
                ),
            )  # fmt: skip
            payload = {**common, "retry": True, "not_before": decision.not_before, "reason": decision.reason}
            self._append_event(conn, job.id, "status", result.status, payload, now)
            self._requeued(conn, decision.not_before)
            return JobState.QUEUED
        if result.status.is_success:
            state = JobState.COMPLETED
        elif cancelled:
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED
        self._exec(
            conn,
            "UPDATE {jobs} SET state = ?, fax_failures = ?, last_status = ?, last_error = ?,"
            " pages_sent = ?, lease_owner = NULL, lease_at = NULL, lease_expires_at = NULL,"
            " finished_at = ?, updated_at = ? WHERE id = ?",
            (
                state.value, decision.fax_failures, int(result.status), result.error, result.pages,
                now, now, job.id,
            ),
        )  # fmt: skip
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

        def work(conn: Any) -> Any:
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

        return job_from_row(self._tx(work))

    def cancel(self, job_id: str, *, now: float | None = None) -> OutboundJob:
        """Cancel: a queued job ends now (terminal ``FS_USER_ABORT``); an in-flight job is flagged
        ``cancel_requested`` for its device to abort; a finished job is returned unchanged."""
        now = self._now(now)

        def work(conn: Any) -> Any:
            row = self._job_row(conn, job_id, lock=True)
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                self._exec(
                    conn,
                    "UPDATE {jobs} SET state = 'cancelled', cancel_requested = {true}, last_status = ?,"
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
                self._exec(
                    conn,
                    "UPDATE {jobs} SET cancel_requested = {true}, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
            return self._job_row(conn, job_id)

        return job_from_row(self._tx(work))

    def get(self, job_id: str) -> OutboundJob:
        return job_from_row(self._query(lambda conn: self._job_row(conn, job_id)))

    def list(
        self, filter: JobFilter | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[OutboundJob]:
        """Outbound jobs, oldest first."""
        query = "SELECT * FROM {jobs} WHERE {true}"
        args: builtins.list[Any] = []
        if filter is not None:
            if filter.states is not None:
                sql, values = self._in("state", sorted(s.value for s in filter.states))
                query += f" AND {sql}"
                args += values
            if filter.device is not None:
                query += " AND device = ?"
                args.append(filter.device)
            if filter.destination is not None:
                query += " AND destination = ?"
                args.append(filter.destination)
            if filter.since is not None:
                query += " AND created_at >= ?"
                args.append(filter.since)
            if filter.until is not None:
                query += " AND created_at < ?"
                args.append(filter.until)
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        args += [limit, offset]
        rows = self._query(lambda conn: self._exec(conn, query, args).fetchall())
        return [job_from_row(r) for r in rows]

    def count(self) -> dict[str, int]:
        """Jobs per state, outbound as ``"queued"``... and inbound as ``"inbound:receiving"``..."""
        with self._read() as conn:
            out = {
                r["state"]: r["n"]
                for r in self._exec(conn, "SELECT state, COUNT(*) AS n FROM {jobs} GROUP BY state")
            }
            for r in self._exec(conn, "SELECT state, COUNT(*) AS n FROM inbound_faxes GROUP BY state"):
                out[f"inbound:{r['state']}"] = r["n"]
        return out

    # -- inbound ------------------------------------------------------------------------------------

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
        """Record an incoming fax call *before* answering it, under this owner's lease. ``tiff_path`` is
        where pages will be spooled."""
        now = self._now(now)
        inbound_id = new_id(now)

        def work(conn: Any) -> Any:
            self._exec(
                conn,
                "INSERT INTO inbound_faxes (id, created_at, updated_at, call_id, caller, callee, device,"
                " started_at, state, tiff_path, owner, lease_expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'receiving', ?, ?, ?)",
                (
                    inbound_id, now, now, call_id, caller, callee, device, now, path_or_none(tiff_path),
                    self.owner, now + self.lease_seconds,
                ),
            )  # fmt: skip
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._tx(work))

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

        def work(conn: Any) -> Any:
            row = self._inbound_row(conn, inbound_id, lock=True)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            self._exec(
                conn,
                "UPDATE inbound_faxes SET pages = COALESCE(?, pages), remote_csi = COALESCE(?, remote_csi),"
                " tiff_path = COALESCE(?, tiff_path), updated_at = ? WHERE id = ?",
                (pages, remote_csi, path_or_none(tiff_path), now, inbound_id),
            )
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._tx(work))

    def _end_inbound(
        self,
        conn: Any,
        row: Any,
        state: InboundState,
        status: FaxStatus,
        pages: int,
        error: str,
        remote_csi: str | None,
        now: float,
    ) -> None:
        """Finish a reception and write its terminal event (unless one exists already)."""
        self._exec(
            conn,
            "UPDATE inbound_faxes SET state = ?, last_status = ?, pages = ?, error = ?,"
            " remote_csi = COALESCE(?, remote_csi), lease_expires_at = NULL, finished_at = ?,"
            " updated_at = ? WHERE id = ?",
            (state.value, int(status), pages, error, remote_csi, now, now, row["id"]),
        )
        payload = {"state": state.value, "pages": pages, "error": error, "call_id": row["call_id"]}
        payload["node"] = row["owner"]  # the node that answered the call
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

        def work(conn: Any) -> Any:
            row = self._inbound_row(conn, inbound_id, lock=True)
            if row["state"] != InboundState.RECEIVING:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is {row['state']}, not receiving")
            self._end_inbound(conn, row, state, status, pages, error, remote_csi, now)
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._tx(work))

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

        def work(conn: Any) -> Any:
            self._inbound_row(conn, inbound_id, lock=True)
            self._exec(
                conn,
                "UPDATE inbound_faxes SET tiff_path = COALESCE(?, tiff_path),"
                " pdf_path = COALESCE(?, pdf_path), report_path = COALESCE(?, report_path),"
                " updated_at = ? WHERE id = ?",
                (path_or_none(tiff_path), path_or_none(pdf_path), path_or_none(report_path), now, inbound_id),
            )
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._tx(work))

    def get_inbound(self, inbound_id: str) -> InboundFax:
        return inbound_from_row(self._query(lambda conn: self._inbound_row(conn, inbound_id)))

    def list_inbound(
        self,
        states: frozenset[InboundState] | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        read: bool | None = None,
        caller: str | None = None,
        csi: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[InboundFax]:
        """Received faxes that are not deleted, oldest first; ``read``: only those read (True) or unread;
        ``caller``/``csi``: the From URI / remote CSI contains the text (case-insensitive, no wildcards);
        ``since``/``until``: created_at in [since, until)."""
        query = "SELECT * FROM inbound_faxes WHERE deleted_at IS NULL"
        args: builtins.list[Any] = []
        if states is not None:
            sql, values = self._in("state", sorted(s.value for s in states))
            query += f" AND {sql}"
            args += values
        if read is not None:
            query += " AND read_at IS NOT NULL" if read else " AND read_at IS NULL"
        for column, text in (("caller", caller), ("remote_csi", csi)):
            if text:
                # LIKE with its wildcards escaped: the text is matched literally (both backends)
                query += f" AND LOWER({column}) LIKE ? ESCAPE '!'"
                literal = text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
                args.append(f"%{literal}%")
        if since is not None:
            query += " AND created_at >= ?"
            args.append(since)
        if until is not None:
            query += " AND created_at < ?"
            args.append(until)
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        args += [limit, offset]
        rows = self._query(lambda conn: self._exec(conn, query, args).fetchall())
        return [inbound_from_row(r) for r in rows]

    def _live_inbound_row(self, conn: Any, inbound_id: str) -> Any:
        row = self._inbound_row(conn, inbound_id, lock=True)
        if row["deleted_at"] is not None:
            raise JobNotFoundError(inbound_id)
        return row

    def mark_inbound_read(
        self, inbound_id: str, read: bool = True, *, now: float | None = None
    ) -> InboundFax:
        """Mark a received fax read (first time kept) or unread. JobNotFoundError: unknown or deleted."""
        now = self._now(now)

        def work(conn: Any) -> Any:
            self._live_inbound_row(conn, inbound_id)
            if read:
                sql, args = "read_at = COALESCE(read_at, ?), updated_at = ?", (now, now, inbound_id)
            else:
                sql, args = "read_at = NULL, updated_at = ?", (now, inbound_id)
            self._exec(conn, f"UPDATE inbound_faxes SET {sql} WHERE id = ?", args)
            return self._inbound_row(conn, inbound_id)

        return inbound_from_row(self._tx(work))

    def _delete_stored_files(self, conn: Any, owner_id: str) -> None:
        """Drop the copies of ``owner_id``'s files the store itself holds (none in a local store)."""

    def delete_inbound(self, inbound_id: str, *, now: float | None = None) -> InboundFax:
        """Mark a finished received fax deleted and forget its paths (and stored copies); returns the row
        as it was, so the caller can remove the files. JobNotFoundError: unknown or already deleted;
        InvalidTransitionError: still being received."""
        now = self._now(now)

        def work(conn: Any) -> Any:
            row = self._live_inbound_row(conn, inbound_id)
            if row["state"] == InboundState.RECEIVING.value:
                raise InvalidTransitionError(f"inbound fax {inbound_id} is still being received")
            # Another host's files stay recorded until that node removes them (the controller's sweep);
            # a local store (one host) or our own fax: the caller removes them now.
            elsewhere = self.holds_files and row["owner"] not in (None, self.owner)
            paths = "" if elsewhere else ", tiff_path = NULL, pdf_path = NULL, report_path = NULL"
            self._exec(
                conn,
                f"UPDATE inbound_faxes SET deleted_at = ?{paths}, updated_at = ? WHERE id = ?",
                (now, now, inbound_id),
            )
            self._delete_stored_files(conn, inbound_id)
            return row

        return inbound_from_row(self._tx(work))

    def deleted_inbound(self, since: float, limit: int = 500) -> builtins.list[InboundFax]:
        query = (
            "SELECT * FROM inbound_faxes WHERE deleted_at IS NOT NULL AND (deleted_at >= ? OR (owner = ?"
            " AND (tiff_path IS NOT NULL OR pdf_path IS NOT NULL OR report_path IS NOT NULL)))"
            " ORDER BY deleted_at LIMIT ?"
        )
        rows = self._query(lambda conn: self._exec(conn, query, (since, self.owner, limit)).fetchall())
        return [inbound_from_row(r) for r in rows]

    def forget_inbound_paths(self, inbound_id: str) -> None:
        self._tx(lambda conn: self._exec(
            conn, "UPDATE inbound_faxes SET tiff_path = NULL, pdf_path = NULL, report_path = NULL"
            " WHERE id = ? AND deleted_at IS NOT NULL", (inbound_id,),
        ))  # fmt: skip

    # -- recovery and leases ------------------------------------------------------------------------

    def _settle_job(self, conn: Any, row: Any, error: str, now: float, report: RecoveryReport) -> JobState:
        """End an attempt nobody will finish as ``FS_DISCONNECTED`` (attempt counted, policy applies)."""
        result = AttemptResult(FaxStatus.FS_DISCONNECTED, pages=0, error=error, fax_phase=False)
        state = self._finish_attempt(conn, row, result, now)
        {
            JobState.QUEUED: report.requeued,
            JobState.FAILED: report.failed,
            JobState.CANCELLED: report.cancelled,
        }[state].append(row["id"])
        return state

    def _settle_inbound(
        self, conn: Any, row: Any, has_pages: bool, error: str, now: float, report: RecoveryReport
    ) -> InboundState:
        """End a reception nobody will finish: partial with its recorded pages, or failed."""
        state = InboundState.PARTIAL if has_pages else InboundState.FAILED
        pages = row["pages"] if has_pages else 0
        self._end_inbound(conn, row, state, FaxStatus.FS_DISCONNECTED, pages, error, None, now)
        (report.inbound_partial if has_pages else report.inbound_failed).append(row["id"])
        return state

    def recover_after_crash(
        self, now: float | None = None, *, owner_alive: Callable[[str], bool] | None = None
    ) -> RecoveryReport:
        """Settle the work of dead processes of *this host* (their lease owner names a pid that no longer
        exists): in-flight jobs end their attempt as ``FS_DISCONNECTED`` (policy applies), receptions
        become partial when their TIFF (or the stored partial file) holds data, failed otherwise. Other
        hosts' work is left to them, or to lease expiry. Safe to call at every start."""
        at = self._now(now)
        alive = owner_alive or default_owner_alive

        def dead(owner: str | None) -> bool:
            return owner != self.owner and (owner is None or not alive(owner))

        def work(conn: Any) -> RecoveryReport:
            report = RecoveryReport()
            query = "SELECT * FROM {jobs} WHERE state = 'in_flight' ORDER BY id" + self._SKIP_LOCKED
            for row in self._exec(conn, query).fetchall():
                if dead(row["lease_owner"]):
                    state = self._settle_job(conn, row, CRASH_ERROR, at, report)
                    owner = row["lease_owner"]
                    log.warning("recovered in-flight job %s from dead owner %s: %s", row["id"], owner, state)
            query = "SELECT * FROM inbound_faxes WHERE state = 'receiving' ORDER BY id" + self._SKIP_LOCKED
            for row in self._exec(conn, query).fetchall():
                if dead(row["owner"]):
                    tiff = row["tiff_path"]
                    has_pages = bool(tiff) and os.path.isfile(tiff) and os.path.getsize(tiff) > 0
                    has_pages = has_pages or self._has_stored_file(conn, row["id"], "partial")
                    state = self._settle_inbound(conn, row, has_pages, CRASH_ERROR, at, report)
                    log.warning(
                        "recovered inbound fax %s from dead owner %s: %s", row["id"], row["owner"], state
                    )
            return report

        return self._tx(work)

    def _settle_leases(
        self, conn: Any, where: str, args: Sequence[Any], now: float, report: RecoveryReport
    ) -> set[str]:
        """Settle the in-flight jobs and receptions matching ``where`` (shared SQL on ``lease_expires_at``
        and ``owner``, the lease owner in both tables): jobs end their attempt as ``FS_DISCONNECTED``,
        receptions become partial (pages recorded) or failed. Returns their owners."""
        owners: set[str] = set()
        for row in self._exec(
            conn,
            "SELECT * FROM (SELECT *, lease_owner AS owner FROM {jobs} WHERE state = 'in_flight') AS j"
            f" WHERE {where} ORDER BY id{self._SKIP_LOCKED}",
            args,
        ).fetchall():
            state = self._settle_job(conn, row, LEASE_ERROR.format(owner=row["owner"]), now, report)
            owners.add(row["owner"])
            log.warning("job %s: lease of %s expired: %s", row["id"], row["owner"], state)
        for row in self._exec(
            conn,
            f"SELECT * FROM inbound_faxes WHERE state = 'receiving' AND {where}"
            f" ORDER BY id{self._SKIP_LOCKED}",
            args,
        ).fetchall():
            error = LEASE_ERROR.format(owner=row["owner"])
            state = self._settle_inbound(conn, row, row["pages"] > 0, error, now, report)
            owners.add(row["owner"])
            log.warning("inbound fax %s: lease of %s expired: %s", row["id"], row["owner"], state)
        return owners

    # -- nodes --------------------------------------------------------------------------------------

    @staticmethod
    def _check_node_free(node_id: str, row: Any, now: float) -> None:
        """:class:`DuplicateNodeError` if ``row`` (the id's node row, or None) is a live node.

        A node that reports its process (``info["process"]``, ``host:pid:token``) and whose process is
        known dead is not live, however fresh its heartbeat: the same id restarted after a crash on the
        same host rejoins at once instead of waiting out its old lease (its leftovers are settled)."""
        if row is None:
            return
        node = node_from_row(row, now)
        if node.state != NODE_UP:
            return
        process = node.info.get("process")
        if process == this_process():
            return  # this very process joining again
        if isinstance(process, str) and process_is_dead(process):
            log.warning("node %s: its last run (%s) died on this host; taking its id over", node_id, process)
            return
        raise duplicate_node_error(node_id, row, now)

    def _settle_leftovers(self, conn: Any, node_id: str, now: float) -> None:
        """Work left by an earlier life of this node id: nobody runs it any more."""
        left = RecoveryReport()
        self._settle_leases(conn, "owner = ?", (node_id,), now, left)
        if left.changed:
            log.warning("node %s rejoined: settled %d leftovers of its last run", node_id, left.changed)

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
        body = dump_json(info)

        def work(conn: Any) -> Any:
            row = self._register_node(conn, node_id, api, body, lease, at)
            if row["draining"]:  # a node starts to work: draining was for its last run (an upgrade)
                self._exec(conn, "UPDATE nodes SET draining = ? WHERE id = ?", (False, node_id))
                row = self._exec(conn, "SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
            return row

        return node_from_row(self._tx(work), at)

    def heartbeat(
        self,
        node_id: str,
        *,
        info: Mapping[str, Any] | None = None,
        lease_seconds: float,
        now: float | None = None,
    ) -> int:
        """The node's row and every lease it holds move on to ``now + lease_seconds``; returns how many
        leases. :class:`LeaseLostError` when the node is not ``up`` any more (presumed dead meanwhile,
        its work taken over)."""
        at = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        body = None if info is None else dump_json(info)
        extended = self._extend_leases(node_id, body, lease, at)
        if extended is None:
            raise lease_lost_error(node_id)
        return extended

    def expire_leases(
        self, *, now: float | None = None, forget_nodes_after: float | None = None
    ) -> RecoveryReport:
        """Retry (per policy) the jobs and settle the receptions whose lease ran out; their owners, and the
        nodes without a heartbeat for longer than their lease, become ``lost`` (their next heartbeat
        raises :class:`LeaseLostError`). Nodes stopped or lost for more than ``forget_nodes_after``
        seconds are removed, so that the node list does not grow with every container ever run."""
        at = self._now(now)
        if forget_nodes_after is not None and not forget_nodes_after > 0:
            raise ValueError(f"forget_nodes_after must be > 0 seconds, got {forget_nodes_after!r}")

        def work(conn: Any) -> RecoveryReport:
            report = RecoveryReport()
            self._lock_lease_owners(conn, at)
            owners = self._settle_leases(conn, "lease_expires_at < ?", (at,), at, report)
            # a node whose work was taken must learn it at its next heartbeat, whatever its clock says
            sql, args = self._in("id", sorted(owners))
            self._exec(
                conn,
                f"UPDATE nodes SET state = 'lost' WHERE state = 'up' AND ({sql}"
                " OR heartbeat_at + lease_seconds < ?)",
                (*args, at),
            )
            if forget_nodes_after is not None:
                old = self._exec(
                    conn,
                    "SELECT id FROM nodes WHERE state <> 'up' AND heartbeat_at < ? ORDER BY id",
                    (at - forget_nodes_after,),
                ).fetchall()
                report.nodes_forgotten.extend(r["id"] for r in old)
                sql, args = self._in("id", report.nodes_forgotten)
                self._exec(conn, f"DELETE FROM nodes WHERE state <> 'up' AND ({sql})", args)
            return report

        return self._tx(work)

    def set_node_draining(self, node_id: str, draining: bool, *, now: float | None = None) -> NodeInfo:
        """Drain ``node_id`` or put it back to work; it learns it at its next heartbeat."""
        at = self._now(now)

        def work(conn: Any) -> Any:
            self._exec(conn, "UPDATE nodes SET draining = ? WHERE id = ?", (bool(draining), node_id))
            row = self._exec(conn, "SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if row is None:
                raise NodeNotFoundError(f"no node {node_id!r} in this store")
            return row

        return node_from_row(self._tx(work), at)

    def hold_role(self, role: str, node_id: str, *, lease_seconds: float, now: float | None = None) -> bool:
        """Take ``role`` if it is free (never held, or its holder's lease ran out) or keep it if ours, for
        ``lease_seconds``; True when ``node_id`` holds it. One upsert: two nodes never both get True
        for the same moment."""
        at = self._now(now)
        lease = check_lease_seconds(lease_seconds)
        if not role or not node_id:
            raise ValueError("role and node id must not be empty")

        def work(conn: Any) -> bool:
            self._exec(
                conn,
                "INSERT INTO roles (name, node_id, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET node_id = excluded.node_id, expires_at = excluded.expires_at"
                " WHERE roles.node_id = excluded.node_id OR roles.expires_at < ?",
                (role, node_id, at + lease, at),
            )
            row = self._exec(conn, "SELECT node_id FROM roles WHERE name = ?", (role,)).fetchone()
            return row is not None and row["node_id"] == node_id

        return self._tx(work)

    def release_role(self, role: str, node_id: str) -> None:
        """Give ``role`` up if ``node_id`` holds it."""
        self._tx(
            lambda conn: self._exec(conn, "DELETE FROM roles WHERE name = ? AND node_id = ?", (role, node_id))
        )

    def leave_node(self, node_id: str, *, now: float | None = None) -> None:
        """Clean shutdown: the node's state becomes ``stopped``."""
        at = self._now(now)
        self._tx(
            lambda conn: self._exec(
                conn,
                "UPDATE nodes SET state = 'stopped', heartbeat_at = ? WHERE id = ? AND state = 'up'",
                (at, node_id),
            )
        )

    def list_nodes(self, *, now: float | None = None) -> builtins.list[NodeInfo]:
        """Every node; ``lost`` when its heartbeat is older than its lease."""
        at = self._now(now)
        rows = self._query(lambda conn: self._exec(conn, "SELECT * FROM nodes ORDER BY id").fetchall())
        return [node_from_row(r, at) for r in rows]

    # -- the outbox (vfax.service.events.EventOutbox) -------------------------------------------------

    def pending_events(self, sink: str, *, now: float, after_id: int = 0, limit: int = 200) -> OutboxBatch:
        """See :meth:`vfax.service.events.EventOutbox.pending_events`. Reads one snapshot; pages on past
        events that wait behind a retry, so one stuck job cannot hide the due events of others."""
        items: builtins.list[OutboxItem] = []
        blocked: set[str] = set()
        next_due: float | None = None
        settled_through: int | None = None
        cursor = after_id
        with self._read() as conn:
            while True:
                rows = self._exec(
                    conn,
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
                        query = "SELECT COALESCE(MAX(id), ?) AS m FROM events"
                        row = self._exec(conn, query, (after_id,)).fetchone()
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
                        blocked.add(job_id)  # keep its later events out of this batch
                if items or len(rows) < limit:
                    break
                cursor = rows[-1]["id"]
        return OutboxBatch(items=items, settled_through=max(settled_through, after_id), next_due=next_due)

    def _delivery(self, sink: str, rowid: int, sets: str, args: Sequence[Any]) -> None:
        def work(conn: Any) -> None:
            self._exec(
                conn,
                "INSERT INTO deliveries (sink, event_id) VALUES (?, ?)"
                " ON CONFLICT (sink, event_id) DO NOTHING",
                (sink, rowid),
            )
            self._exec(
                conn,
                f"UPDATE deliveries SET attempts = attempts + 1, {sets} WHERE sink = ? AND event_id = ?",
                (*args, sink, rowid),
            )

        self._tx(work)

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
        args: builtins.list[Any] = []
        if sink is not None:
            query += " AND d.sink = ?"
            args.append(sink)
        query += " ORDER BY d.dead_letter_at, e.id"
        rows = self._query(lambda conn: self._exec(conn, query, args).fetchall())
        return [
            DeadLetter(r["d_sink"], r["id"], event_from_row(r), r["d_attempts"], r["d_dead"], r["d_error"])
            for r in rows
        ]

    def retry_dead_letters(self, sink: str) -> int:
        """Give ``sink``'s dead letters a fresh set of attempts (after the receiver is fixed); a running
        :class:`~vfax.service.events.EventDispatcher` picks them up after its ``rescan()``."""
        return self._tx(
            lambda conn: self._exec(
                conn,
                "UPDATE deliveries SET dead_letter_at = NULL, attempts = 0, next_try = NULL"
                " WHERE sink = ? AND dead_letter_at IS NOT NULL",
                (sink,),
            ).rowcount
        )

    def delivery(self, sink: str, rowid: int) -> dict[str, Any] | None:
        """The delivery record of one event for one sink (for inspection and tests)."""
        query = "SELECT * FROM deliveries WHERE sink = ? AND event_id = ?"
        row = self._query(lambda conn: self._exec(conn, query, (sink, rowid)).fetchone())
        return None if row is None else dict(row)
