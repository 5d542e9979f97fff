"""The job store's interface and records, whatever the database: errors, states, the rows as dataclasses,
the :class:`JobStore` protocol, and job ids and lease owners.

:mod:`vfax.store.sqlite` implements the protocol on SQLite (the embedded default, one host);
:mod:`vfax.store.postgres` implements it on PostgreSQL (several nodes sharing one queue). Both pass the
same contract tests.

Leases: a claimed job and a reception in progress carry ``lease_owner`` (the node id given to the store)
and ``lease_expires_at``. A node extends its leases with :meth:`JobStore.heartbeat`; any node calls
:meth:`JobStore.expire_leases` periodically, which retries (or fails, per policy) the work whose lease ran
out, exactly as :meth:`JobStore.recover_after_crash` does for the work of a dead local process.
"""

from __future__ import annotations

import builtins  # the stores have a method named `list`: annotations say builtins.list
import enum
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vfax.status import FaxStatus
from vfax.store.events import EventType, FaxEvent, OutboxBatch
from vfax.store.retry import AttemptResult

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class JobStoreError(Exception):
    """Base class of the store's own errors."""


class JobNotFoundError(JobStoreError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job or inbound fax with id {job_id!r}")
        self.job_id = job_id


class InvalidTransitionError(JobStoreError):
    """The call does not fit the job's current state (a bug of the caller, not of the peer)."""


class TerminalEventExistsError(JobStoreError):
    """A job already has its terminal event: a second one (or any event after it) is refused."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already has its terminal event; nothing was written")
        self.job_id = job_id


class SchemaError(JobStoreError):
    """The database schema is newer than this code, or a migration failed."""


class StoreUnavailableError(JobStoreError):
    """The database cannot be reached now (PostgreSQL down or restarting). The message names the address
    (never the password); the API answers 503 with it and callers retry later."""


class DuplicateNodeError(JobStoreError):
    """:meth:`JobStore.register_node`: a live node already holds this id."""


class NodeNotFoundError(JobStoreError):
    """No node of that id has ever joined this store (or its row was forgotten)."""


class LeaseLostError(JobStoreError):
    """:meth:`JobStore.heartbeat`: this node was presumed dead and its work was taken over; it must stop
    its in-flight calls at once (someone else may retry them)."""


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


class JobState(enum.StrEnum):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class InboundState(enum.StrEnum):
    RECEIVING = "receiving"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboundJob:
    id: str
    created_at: float
    updated_at: float
    document: str
    original: str | None
    destination: str
    device: str | None
    priority: int
    not_before: float
    attempts: int
    max_attempts: int
    state: JobState
    last_status: FaxStatus | None
    last_error: str
    pages_sent: int
    options: dict[str, Any]
    lease_owner: str | None
    cancel_requested: bool
    terminal_event_emitted: bool
    fax_failures: int
    finished_at: float | None
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class InboundFax:
    id: str
    created_at: float
    updated_at: float
    call_id: str
    caller: str
    callee: str
    device: str
    started_at: float
    state: InboundState
    pages: int
    remote_csi: str
    tiff_path: str | None
    pdf_path: str | None
    report_path: str | None
    last_status: FaxStatus | None
    error: str
    owner: str | None
    terminal_event_emitted: bool
    finished_at: float | None
    lease_expires_at: float | None = None
    read_at: float | None = None
    deleted_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which outbound jobs :meth:`SqliteJobStore.list` returns (None = any)."""

    states: frozenset[JobState] | None = None
    device: str | None = None
    destination: str | None = None
    #: created_at >= since and < until (Unix seconds).
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`SqliteJobStore.recover_after_crash` changed (ids per outcome)."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    inbound_partial: list[str] = field(default_factory=list)
    inbound_failed: list[str] = field(default_factory=list)
    nodes_forgotten: list[str] = field(default_factory=list)  # stopped or lost long ago: rows removed

    @property
    def changed(self) -> int:
        return sum(
            len(x)
            for x in (self.requeued, self.failed, self.cancelled, self.inbound_partial, self.inbound_failed)
        )


NODE_UP = "up"
NODE_STOPPED = "stopped"
NODE_LOST = "lost"
FILE_KINDS = frozenset({"document", "tiff", "pdf", "report", "partial"})


@dataclass(frozen=True)
class NodeInfo:
    """One ``vfax serve`` process sharing the store. ``state`` is ``"up"``, ``"stopped"`` (left cleanly)
    or ``"lost"`` (no heartbeat for longer than its lease); ``info`` is whatever the node reports
    (devices, registrations, calls in progress) as JSON. A ``draining`` node takes no new work and
    lets its calls finish (set by :meth:`JobStore.set_node_draining`, cleared when the node starts)."""

    id: str
    started_at: float
    heartbeat_at: float
    state: str
    api: str | None
    info: dict[str, Any]
    draining: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    sink: str
    rowid: int
    event: FaxEvent
    attempts: int
    dead_letter_at: float
    last_error: str


# --------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------


class JobStore(Protocol):
    """What the controller needs from a job store (SQLite or PostgreSQL). All times are Unix seconds;
    ``now=None`` means the store's clock. ``owner`` is this node's id: the lease owner of what it claims,
    for ``lease_seconds`` from the claim (extended by :meth:`heartbeat`)."""

    owner: str
    lease_seconds: float

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
    ) -> OutboundJob: ...

    def claim_next(self, now: float | None = None, device: str | None = None) -> OutboundJob | None: ...

    def record_attempt_result(
        self, job_id: str, result: AttemptResult, *, now: float | None = None
    ) -> OutboundJob: ...

    def cancel(self, job_id: str, *, now: float | None = None) -> OutboundJob: ...

    def get(self, job_id: str) -> OutboundJob: ...

    def list(
        self, filter: JobFilter | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[OutboundJob]: ...

    def record_inbound(
        self,
        *,
        call_id: str,
        caller: str,
        callee: str,
        device: str,
        tiff_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax: ...

    def update_inbound(
        self,
        inbound_id: str,
        *,
        pages: int | None = None,
        remote_csi: str | None = None,
        tiff_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax: ...

    def finish_inbound(
        self,
        inbound_id: str,
        status: FaxStatus,
        *,
        pages: int,
        error: str = "",
        remote_csi: str | None = None,
        now: float | None = None,
    ) -> InboundFax: ...

    def place_inbound_files(
        self,
        inbound_id: str,
        *,
        tiff_path: str | os.PathLike[str] | None = None,
        pdf_path: str | os.PathLike[str] | None = None,
        report_path: str | os.PathLike[str] | None = None,
        now: float | None = None,
    ) -> InboundFax: ...

    def get_inbound(self, inbound_id: str) -> InboundFax: ...

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
        """Received faxes not deleted, oldest first. ``caller``/``csi``: the From URI / remote CSI contains
        this text (case-insensitive); ``since``/``until``: created_at in [since, until)."""
        ...

    def mark_inbound_read(
        self, inbound_id: str, read: bool = True, *, now: float | None = None
    ) -> InboundFax:
        """Mark a received fax read (or unread again). JobNotFoundError for an unknown or deleted fax."""
        ...

    def delete_inbound(self, inbound_id: str, *, now: float | None = None) -> InboundFax:
        """Mark a finished received fax deleted, forget its file paths and any copies the store holds;
        returns the fax as it was (its paths: the caller removes the files). JobNotFoundError for an
        unknown or already deleted fax, InvalidTransitionError while it is being received. In a store
        shared by nodes on several hosts, the paths of a fax another node received are kept for that
        node to remove (``deleted_inbound``, ``forget_inbound_paths``)."""
        ...

    def deleted_inbound(self, since: float, limit: int = 500) -> list[InboundFax]:
        """Faxes deleted at or after ``since`` (each node drops its cached copies of them), and every
        deleted fax of this node whose files are still recorded (it removes them: it received them)."""
        ...

    def forget_inbound_paths(self, inbound_id: str) -> None:
        """The files of a deleted fax are gone from the disk of the node that received it."""
        ...

    def append_event(
        self,
        job_id: str,
        type: EventType,
        status: FaxStatus,
        payload: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> FaxEvent: ...

    def events_for(self, job_id: str) -> builtins.list[FaxEvent]: ...

    def recover_after_crash(
        self, now: float | None = None, *, owner_alive: Callable[[str], bool] | None = None
    ) -> RecoveryReport: ...

    def pending_events(
        self, sink: str, *, now: float, after_id: int = 0, limit: int = 200
    ) -> OutboxBatch: ...

    def mark_delivered(self, sink: str, rowid: int, *, now: float) -> None: ...

    def mark_retry(self, sink: str, rowid: int, *, error: str, next_try: float, now: float) -> None: ...

    def mark_dead_letter(self, sink: str, rowid: int, *, error: str, now: float) -> None: ...

    def dead_letters(self, sink: str | None = None) -> builtins.list[DeadLetter]: ...

    # -- nodes and leases -------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        *,
        api: str | None,
        info: Mapping[str, Any],
        lease_seconds: float,
        now: float | None = None,
    ) -> NodeInfo:
        """Join: :class:`DuplicateNodeError` if a node with that id is ``up`` and its heartbeat is younger
        than ``lease_seconds``; otherwise the row is (re)written ``up``."""
        ...

    def heartbeat(
        self,
        node_id: str,
        *,
        info: Mapping[str, Any] | None = None,
        lease_seconds: float,
        now: float | None = None,
    ) -> int:
        """Node row ``heartbeat_at = now`` (and ``info``); every in-flight job and reception owned by
        ``node_id`` gets ``lease_expires_at = now + lease_seconds``. Returns how many leases were extended.
        :class:`LeaseLostError` if the node is not ``up`` under this id any more."""
        ...

    def leave_node(self, node_id: str, *, now: float | None = None) -> None:
        """Clean shutdown: the node's state becomes ``stopped``."""
        ...

    def list_nodes(self, *, now: float | None = None) -> builtins.list[NodeInfo]:
        """Every node; ``lost`` when its heartbeat is older than its lease."""
        ...

    def expire_leases(
        self, *, now: float | None = None, forget_nodes_after: float | None = None
    ) -> RecoveryReport:
        """In-flight jobs whose lease ran out end their attempt as ``FS_DISCONNECTED`` (retry policy;
        cancelled if a cancel was pending); receptions whose lease ran out become partial (pages > 0) or
        failed; nodes whose heartbeat is older than their lease become ``lost``; stopped or lost nodes
        silent for more than ``forget_nodes_after`` seconds are removed. Any node may call it."""
        ...

    def set_node_draining(self, node_id: str, draining: bool, *, now: float | None = None) -> NodeInfo:
        """Drain a node (it claims no new jobs and takes no new calls; calls in progress finish) or put
        it back to work. The node learns it at its next heartbeat. :class:`NodeNotFoundError` for an
        unknown id."""
        ...

    def hold_role(self, role: str, node_id: str, *, lease_seconds: float, now: float | None = None) -> bool:
        """Take or keep ``role`` for ``lease_seconds``: True if ``node_id`` holds it now. A role is free
        when nobody holds it or its holder let the lease run out (a dead node)."""
        ...

    def release_role(self, role: str, node_id: str) -> None:
        """Give ``role`` up, if ``node_id`` holds it, so another node can take it at once."""
        ...

    # -- files ------------------------------------------------------------------------------------

    @property
    def holds_files(self) -> bool:
        """True when documents and received faxes live in the database (PostgreSQL, cluster mode)."""
        ...

    def store_file(self, owner_id: str, kind: str, path: Path) -> None:
        """Keep the bytes of ``path`` as ``kind`` (see :data:`FILE_KINDS`) of job/fax ``owner_id``
        (replacing any earlier ones). A no-op where files stay on the local disk (SQLite)."""
        ...

    def fetch_file(self, owner_id: str, kind: str, dest: Path) -> Path | None:
        """Write the stored bytes atomically to ``dest`` and return it; None if there are none. SQLite
        returns the locally recorded path of that kind if it exists, without copying."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# Ids and lease owners
# --------------------------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float) -> str:
    """A 26-character ULID-like id: 48 bits of milliseconds then 80 random bits, Crockford base32,
    so ids sort by creation time and need no coordination between processes or nodes."""
    value = (int(now * 1000) & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def make_owner() -> str:
    """This process's lease owner: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


_this_process: tuple[int, str] | None = None


def this_process() -> str:
    """``host:pid:token`` of this process, the same for every call in it (a fork gets its own): what a
    node reports as ``info["process"]`` so that its id can be taken over once this process is dead."""
    global _this_process
    if _this_process is None or _this_process[0] != os.getpid():
        _this_process = (os.getpid(), make_owner())
    return _this_process[1]


def default_owner_alive(owner: str) -> bool:
    """False only when ``owner`` names this host and a pid that no longer exists.

    Owners on other hosts are presumed alive (they must recover their own work). A reused pid keeps
    a dead owner's work in flight until the next restart; harmless, never a double send.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


