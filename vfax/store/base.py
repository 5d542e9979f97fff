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

import json
import os
from collections.abc import Mapping
from typing import Any

from vfax.service.events import FaxEvent
from vfax.status import FaxStatus
from vfax.store.model import (
    FILE_KINDS,
    NODE_LOST,
    NODE_UP,
    InboundFax,
    InboundState,
    JobState,
    NodeInfo,
    OutboundJob,
)

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
    )


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
    )
