"""The records of fax events, as the job store keeps them and the sinks receive them.

They live beside the store (not in :mod:`vfax.service.events`, which delivers them) because the store
writes them: the store is the outbox, and it must not depend on the service that reads it. The JSON shape
and the delivery guarantees are described in :mod:`vfax.service.events`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vfax.status import FaxStatus

EventType = Literal["status", "page", "terminal"]
EVENT_TYPES: tuple[EventType, ...] = ("status", "page", "terminal")
EVENT_SCHEMA_VERSION = 1


def _iso(at: float) -> str:
    stamp = dt.datetime.fromtimestamp(at, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class FaxEvent:
    """One event of one job (outbound job or inbound fax), numbered ``seq`` = 1, 2, ... per job."""

    job_id: str
    seq: int
    type: EventType
    status: FaxStatus
    at: float
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {self.type!r}")
        if self.seq < 1:
            raise ValueError(f"event seq is 1-based, got {self.seq}")
        if not isinstance(self.status, FaxStatus):
            object.__setattr__(self, "status", FaxStatus(self.status))

    @property
    def terminal(self) -> bool:
        return self.type == "terminal"

    @property
    def event_id(self) -> str:
        """Stable id, the same on every re-send: receivers dedupe on it."""
        return f"{self.job_id}.{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": EVENT_SCHEMA_VERSION,
            "id": self.event_id,
            "job_id": self.job_id,
            "seq": self.seq,
            "type": self.type,
            "terminal": self.terminal,
            "status": self.status.string_id,
            "status_code": int(self.status),
            "status_name": self.status.name,
            "at": _iso(self.at),
            "payload": dict(self.payload),
        }

    def to_json(self) -> bytes:
        """The canonical body: compact, keys sorted, UTF-8 (what webhooks sign)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaxEvent:
        return cls(
            job_id=str(data["job_id"]),
            seq=int(data["seq"]),
            type=data["type"],
            status=FaxStatus(int(data["status_code"])),
            at=_parse_iso(str(data["at"])),
            payload=dict(data.get("payload") or {}),
        )


# --------------------------------------------------------------------------------------------------
# The outbox the dispatcher reads (implemented by both stores, vfax.store.base.StoreBase)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An event waiting for one sink: ``rowid`` is the store's key, ``attempts`` the failed tries so far."""

    rowid: int
    event: FaxEvent
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """Due events for one sink in delivery order, and ``settled_through``: every event with a rowid up to
    it is delivered or dead-lettered for that sink, so the next scan may start after it."""

    items: list[OutboxItem]
    settled_through: int
    next_due: float | None


class EventOutbox(Protocol):
    """What the dispatcher needs from a store. Every call is a short synchronous transaction."""

    def pending_events(self, sink: str, *, now: float, after_id: int = 0, limit: int = 200) -> OutboxBatch:
        """Unsettled events for ``sink`` with rowid > ``after_id``, oldest first, at most one run per job:
        an event whose earlier sibling is not yet settled is left out; an event whose retry time is later
        than ``now`` is left out and blocks its job's later events (``next_due`` says when to look again).
        """
        ...

    def mark_delivered(self, sink: str, rowid: int, *, now: float) -> None: ...

    def mark_retry(self, sink: str, rowid: int, *, error: str, next_try: float, now: float) -> None: ...

    def mark_dead_letter(self, sink: str, rowid: int, *, error: str, now: float) -> None: ...
