"""The local HTTP API of ``vfax serve``: submit and follow outbound jobs, fetch received faxes, live events.

The API is a thin shell over the job store. It never reaches into the controller: a submitted job is a row
written with :meth:`~vfax.store.model.JobStore.submit` followed by ``wake()`` (the controller looks at its
queue now), a cancel is :meth:`~vfax.store.sqlite.JobStore.cancel` followed by ``wake()``. It runs in the
service's own asyncio loop, the loop that carries SIP and media, so nothing slow runs on it: store calls
(an fsync each) and document conversion (PDF rendering) go to worker threads.

Endpoints (all under a bearer token but ``/healthz`` and ``/openapi.json``; see ``docs/api.md``)::

    POST /v1/jobs                 multipart upload: document (or preview_id) + to, device, priority, ...
    GET  /v1/jobs                 ?state=&device=&destination=&limit=&offset=
    GET  /v1/jobs/{id}            the job and its events
    GET  /v1/jobs/{id}/attempts/{n}/report   the call report of attempt n
    POST /v1/jobs/{id}/cancel     200 job; 404 unknown; 409 already finished
    GET  /v1/faxes                ?state=&read=&limit=&offset=
    GET  /v1/faxes/{id}           the received fax and its events
    GET  /v1/faxes/{id}/pdf|tiff|report
    POST /v1/faxes/{id}/read|unread, DELETE /v1/faxes/{id} (files gone, row marked deleted)
    GET  /v1/faxes/{id}/pages     page count, size and resolution; .../pages/{n}.png?width=&rotate= a page
    POST /v1/jobs/{id}/resubmit   a finished job's document queued again as a new job
    GET  /v1/jobs/{id}/pages      the same for the job's spooled TIFF-F (what is faxed)
    POST /v1/previews             convert an upload as POST /v1/jobs would, keep it 15 min (preview_id)
    GET  /v1/previews/{id}[/pages/{n}.png], DELETE /v1/previews/{id}
    GET  /v1/events               server-sent events (id: store-wide event number; Last-Event-ID resumes)
    GET  /v1/devices              what the service reports about its devices
    GET  /v1/nodes                every node sharing the job store (state, devices, calls, draining)
    POST /v1/nodes/{id}/drain     the node claims no new job and takes no new call; calls in progress go on
    POST /v1/nodes/{id}/resume    it takes work again; 404 unknown node
    GET  /healthz                 liveness, no authentication
    GET  /, /outbound, /inbox ... the fax console (vfax.console, docs/console.md): HTML pages, not in the
                                  OpenAPI document; a login sets a session cookie that authorises too

Security: a request carries the token (``Authorization: Bearer``) or the console's session cookie; with
the cookie a state-changing request also needs the session's CSRF token (``X-CSRF-Token``), see
:mod:`vfax.console.auth`. The token is compared in constant time (``hmac.compare_digest``) before any
request body is read, so an anonymous client cannot make the service parse an upload; bodies larger than
``max_upload_mb`` get 413 while they stream in. Failed requests answer ``{"error": code, "detail":
reason}`` and store nothing; while the database cannot be reached (PostgreSQL restarting) they answer 503
``store_unavailable`` with the reason.

In a cluster (a store that holds files) any node serves any fax: a file not on this node's disk is fetched
from the database into a local cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hmac
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, cast
from urllib.parse import quote

import uvicorn
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vfax import documents
from vfax.call.dialing import BadDestination, normalize_number
from vfax.console import auth as console_auth
from vfax.service.config import ApiConfig, parse_listen
from vfax.service.converter import DocumentConverter
from vfax.service.pages import (
    DEFAULT_WIDTH,
    MAX_WIDTH,
    MIN_WIDTH,
    PageImages,
    Preview,
    PreviewNotFoundError,
    Previews,
)
from vfax.storage import attempt_report_owner, attempt_report_path, fsync_dir
from vfax.store.events import FaxEvent
from vfax.store.model import (
    InboundFax,
    InboundState,
    InvalidTransitionError,
    JobFilter,
    JobNotFoundError,
    JobState,
    JobStore,
    NodeInfo,
    NodeNotFoundError,
    OutboundJob,
    StoreUnavailableError,
)
from vfax.store.options import OPT_ECM, OPT_HEADER, OPT_T38

log = logging.getLogger("vfax.api")

__all__ = [
    "API_VERSION",
    "ApiServer",
    "create_app",
    "openapi_spec",
    "serve_api",
]

API_VERSION = "1.0.0"
HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 1.0
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})
#: Events read from the store at a time by the event stream.
SSE_BATCH = 200
#: The reserved outbox sink name the event stream reads through when the store has no ``events_after``:
#: no delivery is ever recorded for it, so every event is "pending" for it, in store order.
SSE_CURSOR_SINK = "vfax-api:sse"
MAX_DESTINATION = 256
MAX_HEADER = 100
_DESTINATION_USER = re.compile(r"^[A-Za-z0-9+*#._~()-]{1,64}$")
_TIFF = "image/tiff"
_PDF = "application/pdf"

Wake = Callable[[], None]
Subscribe = Callable[[], AsyncIterator[FaxEvent]]
DevicesStatus = Callable[[], list[dict[str, Any]]]
SetDraining = Callable[[bool], None]


# --------------------------------------------------------------------------------------------------
# Response models (they make /openapi.json useful)
# --------------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every failed request answers with this body."""

    error: str = Field(
        description="Short machine-readable code: unauthorized, invalid_request, bad_document, not_found, "
        "conflict, too_large, file_missing, file_error, store_unavailable."
    )
    detail: str = Field(description="One-line reason for a person.")


class Event(BaseModel):
    """One event of a job or received fax (the same JSON the event sinks deliver, version 1)."""

    v: int = Field(description="Schema version of the event JSON (keys are only ever added).")
    id: str = Field(description="Stable event id `<job_id>.<seq>`; receivers dedupe on it.")
    job_id: str
    seq: int = Field(ge=1, description="1, 2, ... per job.")
    type: Literal["status", "page", "terminal"]
    terminal: bool = Field(description="True for the one terminal event of the job.")
    status: str = Field(description="FAX_DEV_STATUS as a string id, e.g. `busy`, `completed`.")
    status_code: int = Field(description="The Windows `FS_*` number.")
    status_name: str = Field(description="The `FS_*` name.")
    at: str = Field(description="UTC time the event was recorded, ISO 8601 with milliseconds.")
    payload: dict[str, Any] = Field(description="Depends on `type`; see `vfax.service.events`.")


class Job(BaseModel):
    """An outbound fax job."""

    id: str
    state: Literal["queued", "in_flight", "completed", "failed", "cancelled"]
    destination: str
    device: str | None = Field(description="The device that must send it; null: any device.")
    priority: int = Field(description="Higher is sent first.")
    created_at: dt.datetime
    updated_at: dt.datetime
    not_before: dt.datetime = Field(description="Not sent (or retried) before this time.")
    finished_at: dt.datetime | None
    attempts: int = Field(description="Attempts started so far.")
    max_attempts: int
    status: str | None = Field(description="Outcome of the last attempt (string id), null before one.")
    status_code: int | None
    status_name: str | None
    last_error: str
    pages_sent: int
    options: dict[str, Any] = Field(description="Call options of the next attempt (ecm, t38, header ...).")
    cancel_requested: bool


class JobDetail(Job):
    events: list[Event]


class JobList(BaseModel):
    jobs: list[Job]
    limit: int
    offset: int


class Fax(BaseModel):
    """A received fax."""

    id: str
    state: Literal["receiving", "completed", "partial", "failed"]
    call_id: str
    caller: str
    callee: str
    device: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    pages: int
    remote_csi: str = Field(description="The sender's fax identity (T.30 CSI/TSI).")
    status: str | None
    status_code: int | None
    status_name: str | None
    error: str
    has_tiff: bool = Field(description="GET /v1/faxes/{id}/tiff will return the file.")
    has_pdf: bool
    has_report: bool
    read: bool = Field(description="Marked read (`POST /v1/faxes/{id}/read`).")
    read_at: dt.datetime | None = Field(description="When it was first marked read.")


class FaxDetail(Fax):
    events: list[Event]


class FaxList(BaseModel):
    faxes: list[Fax]
    limit: int
    offset: int


class PageSize(BaseModel):
    """One page of a fax document as stored (fax pixels are not square: standard is 204 x 98 per inch)."""

    number: int = Field(ge=1, description="1, 2, ...: the `{n}` of `.../pages/{n}.png`.")
    width_px: int = Field(description="Pixels along the scan line (1728 for an A4-wide fax page).")
    height_px: int = Field(description="Scan lines.")
    x_dpi: float = Field(description="Horizontal resolution, pixels per inch (204 for a fax).")
    y_dpi: float = Field(description="Vertical resolution: 98 standard, 196 fine, 391 superfine.")
    width_mm: float
    height_mm: float


class PageList(BaseModel):
    count: int = Field(description="Number of pages.")
    pages: list[PageSize]


class PreviewBody(BaseModel):
    """An upload converted as it will be faxed, kept for a while for `POST /v1/jobs` (`preview_id`)."""

    id: str = Field(description="Give it as `preview_id` to `POST /v1/jobs` to queue these pages.")
    count: int = Field(description="Number of pages.")
    pages: list[PageSize]
    resolution: Literal["standard", "fine", "superfine"]
    paper: Literal["a4", "letter", "legal"]
    expires_at: dt.datetime = Field(description="Deleted after this time.")


class Device(BaseModel):
    """What the service reports about a device (more keys may be present)."""

    model_config = ConfigDict(extra="allow")
    name: str


class DeviceList(BaseModel):
    devices: list[Device]


class Node(BaseModel):
    """One `vfax serve` process sharing the job store."""

    id: str
    state: Literal["up", "stopped", "lost"] = Field(
        description="`up`; `stopped` (left cleanly); `lost` (no heartbeat for longer than its lease)."
    )
    started_at: dt.datetime
    heartbeat_at: dt.datetime = Field(description="Its last heartbeat.")
    api: str | None = Field(description="Base URL of its API, if known.")
    devices: list[dict[str, Any]] = Field(description="Its devices as in `GET /v1/devices`.")
    registrations: dict[str, str] = Field(description="Registration state per device name.")
    calls: list[dict[str, Any]] = Field(description="Calls in progress (id, kind, device, call_id ...).")
    draining: bool = Field(
        description="Marked to drain (`POST /v1/nodes/{id}/drain`): it claims no new job and answers new "
        "calls and OPTIONS 503; its calls in progress go on. Cleared by resume or when the node starts."
    )
    drained: bool = Field(
        description="Draining, its last heartbeat says it applies the mark, and it had no call in progress "
        "then: it may be stopped now without cutting a call."
    )
    info: dict[str, Any] = Field(description="Everything the node reported in its last heartbeat.")


class NodeList(BaseModel):
    nodes: list[Node]


class Health(BaseModel):
    status: Literal["ok"]


# --------------------------------------------------------------------------------------------------
# Mapping store records to JSON
# --------------------------------------------------------------------------------------------------


def _time(at: float | None) -> dt.datetime | None:
    return None if at is None else dt.datetime.fromtimestamp(at, tz=dt.UTC)


def _event(event: FaxEvent) -> Event:
    return Event.model_validate(event.to_dict())


def _job(job: OutboundJob) -> Job:
    status = job.last_status
    return Job(
        id=job.id,
        state=job.state.value,
        destination=job.destination,
        device=job.device,
        priority=job.priority,
        created_at=cast(dt.datetime, _time(job.created_at)),
        updated_at=cast(dt.datetime, _time(job.updated_at)),
        not_before=cast(dt.datetime, _time(job.not_before)),
        finished_at=_time(job.finished_at),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        status=None if status is None else status.string_id,
        status_code=None if status is None else int(status),
        status_name=None if status is None else status.name,
        last_error=job.last_error,
        pages_sent=job.pages_sent,
        options=dict(job.options),
        cancel_requested=job.cancel_requested,
    )


class _Files:
    """Which files of a received fax may be served: only regular files inside the inbox, or (when the store
    holds files) the stored copy fetched into this node's cache."""

    def __init__(self, inbox: Path, store: JobStore | None = None, cache: Path | None = None) -> None:
        self.inbox = inbox.resolve()
        self.store = store
        self.cache = cache

    @property
    def in_store(self) -> bool:
        return bool(self.store is not None and getattr(self.store, "holds_files", False))

    def has(self, value: str | None) -> bool:
        """Will it be served? A recorded file counts when the store holds a copy (another node's fax)."""
        if self.get(value) is not None:
            return True
        return bool(value) and self.in_store

    def fetch(self, owner_id: str, kind: str, suffix: str) -> Path | None:
        """The store's copy of ``kind`` of ``owner_id`` in the cache, or None. Runs in a worker thread."""
        if not self.in_store or self.store is None or self.cache is None:
            return None
        dest = self.cache / "faxes" / owner_id / f"{kind}{suffix}"
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self.store.fetch_file(owner_id, kind, dest)

    def get(self, value: str | None) -> Path | None:
        if not value:
            return None
        path = Path(value).resolve()
        if not path.is_relative_to(self.inbox):
            log.warning("not serving %s: outside the inbox %s", path, self.inbox)
            return None
        return path if path.is_file() else None


class AttemptReports:
    """The call reports of outbound attempts: this node's file (vfax.storage.attempt_report_path), or the
    store's copy when another node placed the call."""

    def __init__(self, directory: Path, files: _Files) -> None:
        self.directory = directory
        self.files = files

    def get(self, job_id: str, attempt: int) -> Path | None:
        path = attempt_report_path(self.directory, job_id, attempt)
        if path.is_file():
            return path
        return self.files.fetch(attempt_report_owner(job_id, attempt), "report", ".json")


def _node(node: NodeInfo) -> Node:
    info = dict(node.info)
    state = node.state if node.state in ("up", "stopped", "lost") else "lost"
    calls = list(info.get("calls") or [])
    # The mark is in the store at once; the node applies it within a heartbeat and reports that it does
    # (info "draining"): only then does "no calls" mean that none will start.
    drained = node.draining and state == "up" and info.get("draining") is True and not calls
    return Node(
        id=node.id,
        state=cast(Literal["up", "stopped", "lost"], state),
        started_at=cast(dt.datetime, _time(node.started_at)),
        heartbeat_at=cast(dt.datetime, _time(node.heartbeat_at)),
        api=node.api or info.get("api"),
        devices=list(info.get("devices") or []),
        registrations={str(k): str(v) for k, v in dict(info.get("registrations") or {}).items()},
        calls=calls,
        draining=node.draining,
        drained=drained,
        info=info,
    )


def _fax(fax: InboundFax, files: _Files) -> Fax:
    status = fax.last_status
    return Fax(
        id=fax.id,
        state=fax.state.value,
        call_id=fax.call_id,
        caller=fax.caller,
        callee=fax.callee,
        device=fax.device,
        started_at=cast(dt.datetime, _time(fax.started_at)),
        finished_at=_time(fax.finished_at),
        pages=fax.pages,
        remote_csi=fax.remote_csi,
        status=None if status is None else status.string_id,
        status_code=None if status is None else int(status),
        status_name=None if status is None else status.name,
        error=fax.error,
        has_tiff=files.has(fax.tiff_path),
        has_pdf=files.has(fax.pdf_path),
        has_report=files.has(fax.report_path),
        read=fax.read_at is not None,
        read_at=_time(fax.read_at),
    )


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A request refused with a status, a code and a reason (rendered as :class:`ErrorBody`)."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def _error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# --------------------------------------------------------------------------------------------------
# The guard: authentication and body size, before any body is read
# --------------------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


def token_matches(header: bytes | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header value."""
    if header is None:
        return False
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(value.strip(), token.encode())


def _login_redirect(scope: Scope) -> Response:
    """A console page asked for without a session: to the login form, and back afterwards."""
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return RedirectResponse(f"{console_auth.LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)


class _Guard:
    """ASGI middleware: 401 without the token (except public paths), 413 for oversized bodies."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path, method = scope["path"], scope["method"]
        protected = (
            self.token is not None
            and path not in PUBLIC_PATHS
            and not console_auth.auth_free(path)
            and method != "OPTIONS"
        )
        if protected and not token_matches(headers.get(b"authorization"), self.token or ""):
            # the console's session cookie authorises too; a state-changing request with it also needs
            # the session's CSRF token (header; the console's own forms check their form field)
            token = cast(str, self.token)
            session = console_auth.check_session(
                console_auth.session_cookie(headers.get(b"cookie")), token, time.time()
            )
            response: Response | None = None
            if session is None:
                if not path.startswith("/v1/") and method in ("GET", "HEAD"):
                    response = _login_redirect(scope)
                else:
                    response = _error_response(
                        401,
                        "unauthorized",
                        "missing or wrong bearer token (Authorization: Bearer <token>)",
                        {"WWW-Authenticate": "Bearer"},
                    )
            elif (
                method not in ("GET", "HEAD")
                and not console_auth.checks_form_csrf(path)
                and not console_auth.csrf_matches(token, session, headers.get(console_auth.CSRF_HEADER))
            ):
                response = _error_response(
                    403, "csrf", "missing or wrong CSRF token (X-CSRF-Token) for a request with a session"
                )
            if response is not None:
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[console_auth.COOKIE] = session
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the 413 replaces whatever the app made of the cut-off body
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body / (1024 * 1024)
        response = _error_response(413, "too_large", f"request body larger than {limit:g} MB")
        await response(scope, receive, send)


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def check_destination(value: str) -> str:
    """A destination is a SIP URI (``sip:``/``sips:``) or a bare user part (digits, ``+``, ``*``, ``#``...)
    that the device dials through its server."""
    text = value.strip()
    if not text:
        raise ApiError(422, "invalid_request", "to: must not be empty")
    if len(text) > MAX_DESTINATION:
        raise ApiError(422, "invalid_request", f"to: longer than {MAX_DESTINATION} characters")
    if not text.lower().startswith(("sip:", "sips:")):
        try:  # a telephone number as people type it ("+49 (30) 123-456", "tel:+4930123456"): its digits
            number = normalize_number(text)
        except BadDestination as exc:
            raise ApiError(422, "invalid_request", f"to: {exc}") from None
        if number is not None:
            return number
    if any(ord(c) <= 32 or ord(c) == 127 for c in text):
        raise ApiError(422, "invalid_request", "to: must not contain spaces or control characters")
    lower = text.lower()
    if lower.startswith(("sip:", "sips:")):
        rest = text.split(":", 1)[1]
        if not rest or rest.startswith("@") or rest.endswith("@"):
            raise ApiError(422, "invalid_request", f"to: not a SIP URI: {text!r}")
        return text
    if not _DESTINATION_USER.match(text):
        raise ApiError(
            422,
            "invalid_request",
            f"to: must be sip:USER@HOST or a number/user (A-Z 0-9 + * # . - _), not {text!r}",
        )
    return text


def parse_not_before(value: str, name: str = "not_before") -> float:
    """ISO 8601 (naive means UTC) or Unix seconds, between 1970 and 2100 (``name``: the field, for errors)."""
    text = value.strip()
    try:
        at = float(text)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(
                422, "invalid_request", f"{name}: not ISO 8601 or Unix seconds: {value[:64]!r}"
            ) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        at = stamp.timestamp()
    if not math.isfinite(at) or not 0 <= at < 4102444800:
        raise ApiError(422, "invalid_request", f"{name}: out of range (1970..2100): {value[:64]!r}")
    return at


Since = Annotated[
    str | None,
    Query(max_length=64, description="Only those created at or after this time: ISO 8601 (UTC if no "
          "offset) or Unix seconds."),
]
Until = Annotated[
    str | None,
    Query(max_length=64, description="Only those created before this time: ISO 8601 (UTC if no offset) "
          "or Unix seconds."),
]


def _bound(value: str | None, name: str) -> float | None:
    """A time filter's bound (None or empty: no bound); 422 for anything else than a time."""
    return parse_not_before(value, name) if value and value.strip() else None


def check_header(value: str) -> str:
    if len(value) > MAX_HEADER:
        raise ApiError(422, "invalid_request", f"header: longer than {MAX_HEADER} characters")
    if not value.isprintable():
        raise ApiError(422, "invalid_request", "header: must be printable text")
    return value


# --------------------------------------------------------------------------------------------------
# Spooling an upload
# --------------------------------------------------------------------------------------------------


_SPOOL_NAMES = re.compile(r"^(upload|original\.\w+|fax\.tif)(?=:)")


def _display_name(filename: str | None) -> str:
    """The client's file name for messages (never a path of ours), or ``document``."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not name or len(name) > 100 or not name.isprintable():
        return "document"
    return name


def _scrub(message: str, staging: Path, shown_name: str) -> str:
    """A conversion error for the client: its own file name in place of our spool paths."""
    for name in ("original.pdf", "original.png", "original.jpg", "original.tiff", "fax.tif", "upload"):
        message = message.replace(str(staging / name), shown_name)
    message = message.replace(str(staging), "spool")
    return _SPOOL_NAMES.sub(lambda _: shown_name, message, count=1)


def _copy_upload(src: BinaryIO, dst: Path) -> int:
    src.seek(0)
    with dst.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def _spool_upload(
    parent: Path,
    upload: BinaryIO,
    *,
    shown_name: str,
    resolution: documents.Resolution,
    paper: documents.PaperSize,
    converter: DocumentConverter,
) -> tuple[Path, str, int]:
    """Keep the upload and its TIFF-F in a new directory ``parent/<key>/`` (``original.<kind>``,
    ``fax.tif``); returns it, the original's file name and the page count. On any error nothing is left.
    Runs in a worker thread; the conversion itself in ``converter``."""
    parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(10)
    staging = parent / f".{key}.part"
    final = parent / key
    staging.mkdir()
    try:
        raw = staging / "upload"
        if _copy_upload(upload, raw) == 0:
            raise documents.DocumentError("upload: empty file, not a document")
        kind = documents.detect_kind(raw)
        original = staging / f"original.{'jpg' if kind == 'jpeg' else kind}"
        raw.rename(original)
        prepared = converter.convert(original, staging / "fax.tif", resolution=resolution, paper=paper)
        log.info("spooled %s: %d page(s) from %s", key, prepared.pages, kind)
        fsync_dir(staging)
        staging.rename(final)
        fsync_dir(parent)
    except documents.DocumentError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise documents.DocumentError(_scrub(str(exc), staging, shown_name)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, original.name, prepared.pages


def _spool_and_submit(
    store: JobStore,
    spool_dir: Path,
    upload: BinaryIO,
    *,
    shown_name: str,
    destination: str,
    resolution: documents.Resolution,
    paper: documents.PaperSize,
    submit_kw: dict[str, Any],
    converter: DocumentConverter,
) -> OutboundJob:
    """Keep the upload and its TIFF-F in ``spool/<key>/``, then queue the job; on any error nothing
    is left (no row, no file). Runs in a worker thread; the conversion itself in ``converter``."""
    final, original, _ = _spool_upload(
        spool_dir, upload, shown_name=shown_name, resolution=resolution, paper=paper, converter=converter
    )
    try:  # a store that holds files keeps the document's bytes with the job row (any node may send it)
        return store.submit(final / "fax.tif", destination, original=final / original, **submit_kw)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------------
# The event stream
# --------------------------------------------------------------------------------------------------


class _EventFeed:
    """Every event of the store in order, by a store-wide number (the SQLite row id of the event).

    Uses ``store.events_after(after_id, limit) -> list[(number, FaxEvent)]`` and ``store.last_event_id()``
    when the store has them; otherwise reads the outbox (``pending_events``) under a sink name that never
    records a delivery, which yields the same sequence.
    """

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def after(self, after_id: int, limit: int = 200) -> list[tuple[int, FaxEvent]]:
        events_after = getattr(self.store, "events_after", None)
        if events_after is not None:
            return list(events_after(after_id, limit))
        batch = self.store.pending_events(SSE_CURSOR_SINK, now=time.time(), after_id=after_id, limit=limit)
        return [(item.rowid, item.event) for item in batch.items]

    def last_id(self) -> int:
        """The number of the newest event (0 when there is none)."""
        last = getattr(self.store, "last_event_id", None)
        if last is not None:
            return int(last())
        if not self.after(0, 1):
            return 0
        lo, hi = 0, 1  # invariant: an event exists after lo
        while self.after(hi, 1):
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # the newest number is in (lo, hi]: no event after hi
            mid = (lo + hi) // 2
            if self.after(mid, 1):
                lo = mid
            else:
                hi = mid
        return hi


def _sse(number: int, event: FaxEvent) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (number, event.to_json())


# --------------------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------------------

JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="Job id.")]
PreviewId = Annotated[str, PathParam(min_length=1, max_length=64, description="Preview id.")]
PageNumber = Annotated[int, PathParam(ge=1, le=100_000, description="Page number, from 1.")]
PageWidth = Annotated[
    int,
    Query(ge=MIN_WIDTH, le=MAX_WIDTH, description="Width in pixels of the upright page (thumbnails: 160)."),
]


class Rotation(enum.IntEnum):
    """Clockwise quarter turns of a page image (an IntEnum: a query string "90" is read as 90)."""

    NONE = 0
    QUARTER = 90
    HALF = 180
    THREE_QUARTERS = 270


Rotate = Annotated[Rotation, Query(description="Turn the page clockwise by this many degrees.")]
PAGE_CACHE_CONTROL = "private, max-age=86400"
FaxId = Annotated[str, PathParam(min_length=1, max_length=64, description="Received fax id.")]
NodeId = Annotated[str, PathParam(min_length=1, max_length=200, description="Node id (`GET /v1/nodes`).")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip.")]

_bearer = HTTPBearer(auto_error=False, description="The `api.token` of the service configuration.")


def _page_sizes(infos: list[documents.PageInfo]) -> list[PageSize]:
    return [
        PageSize(
            number=number,
            width_px=info.width_px,
            height_px=info.height_px,
            x_dpi=round(info.x_dpi, 3),
            y_dpi=round(info.y_dpi, 3),
            width_mm=round(info.width_mm, 1),
            height_mm=round(info.height_mm, 1),
        )
        for number, info in enumerate(infos, start=1)
    ]


def _etag_matches(header: str | None, tag: str) -> bool:
    """RFC 9110 §13.1.2 If-None-Match: ``*`` or a list of (possibly weak) tags, compared weakly."""
    if not header:
        return False
    wanted = tag.removeprefix("W/")
    return any(t.strip() == "*" or t.strip().removeprefix("W/") == wanted for t in header.split(","))


def _file_responses(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": what,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        },
        404: {"model": ErrorBody, "description": "No such fax, or the file is not there."},
    }


def create_app(
    store: JobStore,
    config: ApiConfig,
    *,
    inbox_dir: Path,
    spool_dir: Path,
    wake: Wake,
    subscribe: Subscribe | None = None,
    devices_status: DevicesStatus | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
    poll_interval: float = POLL_SECONDS,
    file_cache: Path | None = None,
    node_id: str | None = None,
    set_draining: SetDraining | None = None,
    converter: DocumentConverter | None = None,
    reports_dir: Path | None = None,
    previews: Previews | None = None,
) -> FastAPI:
    """The API over ``store``. ``wake()`` is called (in the event loop) after a job was submitted or
    cancelled; ``subscribe()``, when given, yields live events and makes the event stream prompt (the
    stream reads the events themselves from the store, so none is missed or repeated); without it the
    stream polls the store every ``poll_interval`` seconds. ``node_id`` is the node this process runs:
    a drain or resume of that node is also applied at once with ``set_draining(flag)`` (other nodes
    follow the mark in the store at their next heartbeat). ``converter`` turns uploads into TIFF-F
    (default: in the request's worker thread; ``vfax serve`` passes one that uses separate processes)."""
    convert = converter or DocumentConverter(processes=0)
    files = _Files(inbox_dir, store, file_cache or spool_dir / "cache")
    reports = AttemptReports(reports_dir or inbox_dir.parent / "reports", files)
    images = PageImages(cast(Path, files.cache))
    previews = previews or Previews(spool_dir / ".previews")
    spool_root = spool_dir.resolve()
    feed = _EventFeed(store)
    app = FastAPI(
        title="vfax",
        version=API_VERSION,
        summary="Local HTTP API of a virtual fax device (SIP, T.38, G.711).",
        description=(
            "Submit documents to fax, follow outbound jobs, download received faxes and follow events "
            "live. Every endpoint but `/healthz` needs `Authorization: Bearer <token>` when the service "
            'has a token. Errors answer `{"error": code, "detail": reason}`.'
        ),
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_bearer)],
    )
    app.state.closing = False
    app.state.stream_signals = set()  # one asyncio.Event per open event stream: set to wake it
    common: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
        422: {"model": ErrorBody, "description": "Invalid input; nothing was stored."},
        503: {"model": ErrorBody, "description": "The job store (database) cannot be reached now; retry."},
    }

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StoreUnavailableError)
    async def _store_down(request: Request, exc: StoreUnavailableError) -> Response:
        log.warning("%s %s: 503, the job store is unavailable: %s", request.method, request.url.path, exc)
        return _error_response(
            503, "store_unavailable", f"the job store is unavailable: {exc}", {"Retry-After": "5"}
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    def known_device(name: str) -> None:
        if devices_status is None:
            return
        names = {str(d.get("name")) for d in devices_status()}
        if name not in names:
            raise ApiError(
                422,
                "invalid_request",
                f"device: no device named {name!r} (known: {', '.join(sorted(names))})",
            )

    def get_job(job_id: str) -> OutboundJob:
        try:
            return store.get(job_id)
        except JobNotFoundError:
            raise ApiError(404, "not_found", f"no job {job_id!r}") from None

    def get_fax(fax_id: str) -> InboundFax:
        try:
            fax = store.get_inbound(fax_id)
        except JobNotFoundError:
            fax = None
        if fax is None or fax.deleted_at is not None:
            raise ApiError(404, "not_found", f"no received fax {fax_id!r}")
        return fax

    # -- health ------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["service"], summary="Liveness (no authentication)", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    # -- outbound jobs -----------------------------------------------------------------------------

    def submit_preview(
        preview_id: str, destination: str, resolution: str | None, paper: str | None,
        submit_kw: dict[str, Any],
    ) -> OutboundJob:  # fmt: skip
        """Queue the pages of a preview: its directory becomes the job's spool directory (one rename)."""
        previews.sweep()
        try:
            preview = previews.get(preview_id)
        except PreviewNotFoundError:
            raise ApiError(
                422, "invalid_request", f"preview_id: no preview {preview_id!r} (previews expire)"
            ) from None
        made_for = (("resolution", resolution, preview.resolution), ("paper", paper, preview.paper))
        for name, given, made in made_for:
            if given is not None and given != made:
                raise ApiError(
                    422, "invalid_request",
                    f"{name}: the preview was converted for {made}; leave {name} out or make a new preview",
                )  # fmt: skip
        spool_dir.mkdir(parents=True, exist_ok=True)
        final = spool_dir / secrets.token_hex(10)
        try:
            taken = previews.take(preview_id, final)
        except (PreviewNotFoundError, FileNotFoundError):
            raise ApiError(
                422, "invalid_request", f"preview_id: no preview {preview_id!r} (previews expire)"
            ) from None
        try:
            job = store.submit(final / "fax.tif", destination, original=final / taken.original, **submit_kw)
        except BaseException:
            previews.give_back(taken, final)  # the store failed (503): the preview stays for a retry
            raise
        images.forget(f"preview-{preview_id}")
        log.info("job %s queued from preview %s (%d page(s))", job.id, preview_id, taken.pages)
        return job


    @app.post(
        "/v1/jobs",
        tags=["jobs"],
        summary="Submit a document to fax",
        status_code=201,
        response_model=Job,
        responses={
            **common,
            201: {
                "description": "Queued; `Location` names the job.",
                "model": Job,
                "headers": {"Location": {"description": "/v1/jobs/{id}", "schema": {"type": "string"}}},
            },
            413: {"model": ErrorBody, "description": "The upload is larger than the configured limit."},
            422: {"model": ErrorBody, "description": "Invalid field or unusable document; nothing stored."},
        },
    )
    async def submit_job(
        to: Annotated[str, Form(description="sip:USER@HOST[:PORT], or a number the device dials.")],
        device: Annotated[str | None, Form(description="Device to send it (default: any).")] = None,
        priority: Annotated[int, Form(ge=-100, le=100, description="Higher is sent first.")] = 0,
        not_before: Annotated[
            str | None, Form(description="Do not send before: ISO 8601 (UTC if no offset) or Unix seconds.")
        ] = None,
        ecm: Annotated[
            bool | None, Form(description="Error correction mode (default: the device's).")
        ] = None,
        resolution: Annotated[
            Literal["standard", "fine", "superfine"] | None,
            Form(description="Vertical resolution of the fax (default: fine, or the preview's)."),
        ] = None,
        paper: Annotated[
            Literal["a4", "letter", "legal"] | None,
            Form(description="Page size (default: a4, or the preview's)."),
        ] = None,
        t38: Annotated[
            Literal["auto", "off", "only", "direct"] | None, Form(description="T.38 policy for this job.")
        ] = None,
        header: Annotated[str | None, Form(description="Page header text (default: the device's).")] = None,
        max_attempts: Annotated[int | None, Form(ge=1, le=100, description="Attempts in all.")] = None,
        document: Annotated[
            UploadFile | None, File(description="PDF, PNG, JPEG or TIFF (or give `preview_id`).")
        ] = None,
        preview_id: Annotated[
            str | None,
            Form(
                max_length=64,
                description="Queue the pages of this preview (`POST /v1/previews`) instead of a document: "
                "exactly what was previewed is faxed.",
            ),
        ] = None,
    ) -> Response:
        if document is None and preview_id is None:
            raise ApiError(422, "invalid_request", "document: required (or preview_id)")
        if document is not None and preview_id is not None:
            raise ApiError(422, "invalid_request", "document: give a document or preview_id, not both")
        destination = check_destination(to)
        if device is not None:
            known_device(device)
        options: dict[str, Any] = {}
        if ecm is not None:
            options[OPT_ECM] = ecm
        if t38 is not None:
            options[OPT_T38] = t38
        if header is not None:
            options[OPT_HEADER] = check_header(header)
        submit_kw: dict[str, Any] = {
            "device": device,
            "priority": priority,
            "not_before": None if not_before is None else parse_not_before(not_before),
            "max_attempts": max_attempts,
            "options": options,
        }
        try:
            if preview_id is not None:
                job = await asyncio.to_thread(
                    submit_preview, preview_id, destination, resolution, paper, submit_kw
                )
            else:
                assert document is not None
                job = await asyncio.to_thread(
                    _spool_and_submit,
                    store,
                    spool_dir,
                    document.file,
                    shown_name=_display_name(document.filename),
                    destination=destination,
                    resolution=documents.Resolution.from_name(resolution or "fine"),
                    paper=documents.PaperSize.from_name(paper or "a4"),
                    submit_kw=submit_kw,
                    converter=convert,
                )
        except documents.DocumentError as exc:
            raise ApiError(422, "bad_document", str(exc)) from None
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        log.info("job %s queued for %s", job.id, job.destination)
        wake()
        body = _job(job).model_dump(mode="json")
        return JSONResponse(body, status_code=201, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get(
        "/v1/jobs",
        tags=["jobs"],
        summary="List outbound jobs, oldest first",
        response_model=JobList,
        responses=common,
    )
    def list_jobs(
        state: Annotated[
            list[Literal["queued", "in_flight", "completed", "failed", "cancelled"]] | None,
            Query(description="Only jobs in these states (repeat the parameter for several)."),
        ] = None,
        device: Annotated[str | None, Query(max_length=64, description="Only jobs for this device.")] = None,
        destination: Annotated[
            str | None, Query(max_length=300, description="Only jobs to this destination (as queued).")
        ] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> JobList:
        states = None if not state else frozenset(JobState(s) for s in state)
        wanted = JobFilter(states=states, device=device, destination=destination,
                           since=_bound(since, "since"), until=_bound(until, "until"))  # fmt: skip
        jobs = store.list(wanted, limit=limit, offset=offset)
        return JobList(jobs=[_job(j) for j in jobs], limit=limit, offset=offset)

    @app.get(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="One job and its events",
        response_model=JobDetail,
        responses={**common, 404: {"model": ErrorBody, "description": "No such job."}},
    )
    def get_job_detail(job_id: JobId) -> JobDetail:
        job = get_job(job_id)
        events = [_event(e) for e in store.events_for(job_id)]
        return JobDetail(**_job(job).model_dump(), events=events)

    @app.get(
        "/v1/jobs/{job_id}/attempts/{attempt}/report",
        tags=["jobs"],
        summary="The call report of one attempt of a job (SIP ladder, media, T.30 timeline)",
        responses={
            200: {"description": "The report.", "content": {"application/json": {}}},
            **common,
            404: {"model": ErrorBody, "description": "No such job or attempt, or no report kept."},
        },
        response_class=FileResponse,
    )
    def job_attempt_report(job_id: JobId, attempt: Annotated[int, PathParam(ge=1, le=1000)]) -> FileResponse:
        job = get_job(job_id)
        path = reports.get(job.id, attempt) if attempt <= job.attempts else None
        if path is None:
            raise ApiError(404, "file_missing", f"job {job_id} has no call report of attempt {attempt}")
        return FileResponse(path, media_type="application/json", filename=f"{job.id}-{attempt}.json")

    @app.post(
        "/v1/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a job",
        description="A queued job is cancelled at once; a job being sent gets `cancel_requested` and its "
        "device aborts the call.",
        response_model=Job,
        responses={
            **common,
            404: {"model": ErrorBody, "description": "No such job."},
            409: {"model": ErrorBody, "description": "The job is already finished."},
        },
    )
    async def cancel_job(job_id: JobId) -> Job:
        job = await asyncio.to_thread(get_job, job_id)
        if job.state.is_final:
            raise ApiError(409, "conflict", f"job {job_id} is already {job.state.value}")
        job = await asyncio.to_thread(store.cancel, job_id)
        log.info("job %s: cancel requested (now %s)", job_id, job.state.value)
        wake()
        return _job(job)

    # -- received faxes ----------------------------------------------------------------------------

    @app.get(
        "/v1/faxes",
        tags=["faxes"],
        summary="List received faxes, oldest first",
        response_model=FaxList,
        responses=common,
    )
    def list_faxes(
        state: Annotated[
            list[Literal["receiving", "completed", "partial", "failed"]] | None,
            Query(description="Only faxes in these states (repeat the parameter for several)."),
        ] = None,
        read: Annotated[bool | None, Query(description="Only faxes marked read (true) or unread.")] = None,
        caller: Annotated[
            str | None,
            Query(max_length=200, description="Only faxes whose caller (From URI) contains this text "
                  "(case-insensitive, no wildcards)."),
        ] = None,
        csi: Annotated[
            str | None,
            Query(max_length=100, description="Only faxes whose remote CSI contains this text "
                  "(case-insensitive, no wildcards)."),
        ] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> FaxList:
        states = None if not state else frozenset(InboundState(s) for s in state)
        faxes = store.list_inbound(states, limit=limit, offset=offset, read=read, caller=caller or None,
                                   csi=csi or None, since=_bound(since, "since"),
                                   until=_bound(until, "until"))  # fmt: skip
        return FaxList(faxes=[_fax(f, files) for f in faxes], limit=limit, offset=offset)

    @app.get(
        "/v1/faxes/{fax_id}",
        tags=["faxes"],
        summary="One received fax and its events",
        response_model=FaxDetail,
        responses={**common, 404: {"model": ErrorBody, "description": "No such fax."}},
    )
    def get_fax_detail(fax_id: FaxId) -> FaxDetail:
        fax = get_fax(fax_id)
        events = [_event(e) for e in store.events_for(fax_id)]
        return FaxDetail(**_fax(fax, files).model_dump(), events=events)

    def fax_file(fax_id: str, which: str, suffix: str) -> Path:
        fax = get_fax(fax_id)
        recorded = getattr(fax, f"{which}_path")
        path = files.get(recorded)
        if path is None and recorded:  # received on another node: the database's copy
            path = files.fetch(fax_id, which, suffix)
            if path is None and which == "tiff":  # a reception cut short: the pages stored as they came
                path = files.fetch(fax_id, "partial", suffix)
        if path is None:
            raise ApiError(404, "file_missing", f"fax {fax_id} has no {which} file")
        return path

    def serve_file(fax_id: str, which: str, media_type: str, suffix: str) -> FileResponse:
        path = fax_file(fax_id, which, suffix)
        return FileResponse(path, media_type=media_type, filename=f"{fax_id}{suffix}")

    @app.get(
        "/v1/faxes/{fax_id}/pdf",
        tags=["faxes"],
        summary="The received fax as PDF",
        response_class=FileResponse,
        responses={**common, **_file_responses(_PDF, "The PDF.")},
    )
    def fax_pdf(fax_id: FaxId) -> FileResponse:
        return serve_file(fax_id, "pdf", _PDF, ".pdf")

    @app.get(
        "/v1/faxes/{fax_id}/tiff",
        tags=["faxes"],
        summary="The received fax as TIFF (as received)",
        response_class=FileResponse,
        responses={**common, **_file_responses(_TIFF, "The TIFF-F.")},
    )
    def fax_tiff(fax_id: FaxId) -> FileResponse:
        return serve_file(fax_id, "tiff", _TIFF, ".tif")

    @app.get(
        "/v1/faxes/{fax_id}/report",
        tags=["faxes"],
        summary="The call report of a received fax (SIP ladder, media, T.30 timeline)",
        response_class=FileResponse,
        responses={
            **common,
            200: {
                "description": "The report.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            404: {"model": ErrorBody, "description": "No such fax, or no report."},
        },
    )
    def fax_report(fax_id: FaxId) -> FileResponse:
        return serve_file(fax_id, "report", "application/json", ".json")

    fax_responses: dict[int | str, dict[str, Any]] = {
        **common,
        404: {"model": ErrorBody, "description": "No such fax (or it was deleted)."},
    }

    async def mark_read(fax_id: str, flag: bool) -> Fax:
        def work() -> InboundFax:
            get_fax(fax_id)
            try:
                return store.mark_inbound_read(fax_id, flag)
            except JobNotFoundError:  # deleted meanwhile
                raise ApiError(404, "not_found", f"no received fax {fax_id!r}") from None

        return _fax(await asyncio.to_thread(work), files)

    @app.post(
        "/v1/faxes/{fax_id}/read",
        tags=["faxes"],
        summary="Mark a received fax read",
        description="Answers the fax; `read_at` keeps the first time.",
        response_model=Fax,
        responses=fax_responses,
    )
    async def fax_read(fax_id: FaxId) -> Fax:
        return await mark_read(fax_id, True)

    @app.post(
        "/v1/faxes/{fax_id}/unread",
        tags=["faxes"],
        summary="Mark a received fax unread again",
        response_model=Fax,
        responses=fax_responses,
    )
    async def fax_unread(fax_id: FaxId) -> Fax:
        return await mark_read(fax_id, False)

    def delete_fax_files(fax_id: str) -> None:
        fax = get_fax(fax_id)
        if fax.state is InboundState.RECEIVING:
            raise ApiError(409, "conflict", f"fax {fax_id} is still being received")
        # the files first: if the store cannot be written now (503), a retry finds the row and finishes
        for which in ("tiff", "pdf", "report"):
            recorded = getattr(fax, f"{which}_path")
            path = files.get(recorded)
            if path is None:
                if recorded and Path(recorded).exists():
                    log.warning("fax %s: %s file %s is outside the inbox; not deleted", fax_id, which,
                                recorded)  # fmt: skip
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("fax %s: cannot delete %s: %s", fax_id, path, exc)
                raise ApiError(
                    500, "file_error", f"fax {fax_id}: its {which} file cannot be deleted ({exc.strerror})"
                ) from None
        with contextlib.suppress(OSError):
            fsync_dir(files.inbox)
        if files.cache is not None:
            shutil.rmtree(files.cache / "faxes" / fax_id, ignore_errors=True)  # copies fetched from the store
        images.forget(fax_id)
        try:
            store.delete_inbound(fax_id)
        except JobNotFoundError:
            raise ApiError(404, "not_found", f"no received fax {fax_id!r}") from None
        except InvalidTransitionError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        log.warning("received fax %s (from %s, %d page(s)) deleted through the API", fax_id, fax.caller,
                    fax.pages)  # fmt: skip

    @app.delete(
        "/v1/faxes/{fax_id}",
        tags=["faxes"],
        summary="Delete a received fax",
        description=(
            "Its TIFF, PDF and call report are deleted from this node's inbox, with the page images and "
            "copies this node cached and the copies a PostgreSQL store holds; the fax is no longer listed "
            "or served (its row stays, marked deleted, with its events). In a cluster the node that "
            "received it removes its files at its next heartbeat, and every node its cached copies. "
            "`409` while it is being received."
        ),
        status_code=204,
        response_class=Response,
        responses={
            **fax_responses,
            204: {"description": "Deleted."},
            409: {"model": ErrorBody, "description": "The fax is still being received."},
            500: {"model": ErrorBody, "description": "A file could not be deleted (`file_error`); retry."},
        },
    )
    async def delete_fax(fax_id: FaxId) -> Response:
        await asyncio.to_thread(delete_fax_files, fax_id)
        return Response(status_code=204)

    # -- page images -------------------------------------------------------------------------------

    def page_list(src: Path) -> PageList:
        try:
            infos = documents.tiff_page_info(src)
        except documents.DocumentError as exc:
            raise ApiError(422, "bad_document", str(exc)) from None
        return PageList(count=len(infos), pages=_page_sizes(infos))

    async def page_png(
        request: Request, owner: str, label: str, resolve: Callable[[], Path], number: int, width: int,
        rotate: int,
    ) -> Response:  # fmt: skip
        src = await asyncio.to_thread(resolve)
        try:
            tag = await asyncio.to_thread(images.etag, src, number, width, int(rotate))
        except FileNotFoundError:  # deleted meanwhile
            raise ApiError(404, "file_missing", f"{label} has no document file") from None
        headers = {"ETag": tag, "Cache-Control": PAGE_CACHE_CONTROL}
        if _etag_matches(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers=headers)
        try:
            data, tag = await asyncio.to_thread(images.png, owner, src, number, width, int(rotate))
        except IndexError as exc:
            raise ApiError(404, "not_found", f"{label}: {exc}") from None
        except documents.DocumentError as exc:
            raise ApiError(422, "bad_document", str(exc)) from None
        return Response(data, media_type="image/png", headers=headers)

    page_responses: dict[int | str, dict[str, Any]] = {
        **common,
        404: {"model": ErrorBody, "description": "No such fax/job, or no document file."},
        422: {"model": ErrorBody, "description": "Invalid input, or the stored TIFF cannot be read."},
    }
    png_responses: dict[int | str, dict[str, Any]] = {
        **page_responses,
        200: {
            "description": "The page as a gray PNG. `ETag` and `Cache-Control: private, max-age=86400`.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "Not modified (`If-None-Match` named the current ETag)."},
        404: {"model": ErrorBody, "description": "No such fax/job, no document file, or no such page."},
    }
    png_description = (
        "The page rendered from the fax TIFF, `width` pixels wide when upright and as tall as the page's "
        "true proportions make it (a standard-resolution page, 204 x 98 pixels per inch, is not shown "
        "squashed), then turned `rotate` degrees clockwise: 90 and 270 swap the PNG's width and height. "
        "Cached on the server; answers 304 to a matching `If-None-Match`."
    )

    def fax_tiff_path(fax_id: str) -> Path:
        return fax_file(fax_id, "tiff", ".tif")

    @app.get(
        "/v1/faxes/{fax_id}/pages",
        tags=["faxes"],
        summary="The pages of a received fax: count, size and resolution of each",
        response_model=PageList,
        responses=page_responses,
    )
    def fax_pages(fax_id: FaxId) -> PageList:
        return page_list(fax_tiff_path(fax_id))

    @app.get(
        "/v1/faxes/{fax_id}/pages/{n}.png",
        tags=["faxes"],
        summary="One page of a received fax as PNG",
        description=png_description,
        response_class=Response,
        responses=png_responses,
    )
    async def fax_page_png(
        request: Request,
        fax_id: FaxId,
        n: PageNumber,
        width: PageWidth = DEFAULT_WIDTH,
        rotate: Rotate = Rotation.NONE,
    ) -> Response:
        return await page_png(
            request, fax_id, f"fax {fax_id}", lambda: fax_tiff_path(fax_id), n, width, rotate
        )

    def job_document(job_id: str) -> Path:
        job = get_job(job_id)
        path = Path(job.document).resolve() if job.document else None
        if path is not None and path.is_relative_to(spool_root) and path.is_file():
            return path
        fetched = files.fetch(job_id, "document", ".tif")  # queued on another node: the database's copy
        if fetched is None:
            raise ApiError(404, "file_missing", f"job {job_id} has no document file")
        return fetched

    @app.get(
        "/v1/jobs/{job_id}/pages",
        tags=["jobs"],
        summary="The pages of a job's fax document (as they are faxed)",
        response_model=PageList,
        responses=page_responses,
    )
    def job_pages(job_id: JobId) -> PageList:
        return page_list(job_document(job_id))

    @app.get(
        "/v1/jobs/{job_id}/pages/{n}.png",
        tags=["jobs"],
        summary="One page of a job's fax document as PNG",
        description=png_description,
        response_class=Response,
        responses=png_responses,
    )
    async def job_page_png(
        request: Request,
        job_id: JobId,
        n: PageNumber,
        width: PageWidth = DEFAULT_WIDTH,
        rotate: Rotate = Rotation.NONE,
    ) -> Response:
        return await page_png(
            request, job_id, f"job {job_id}", lambda: job_document(job_id), n, width, rotate
        )

    def resubmit(job_id: str) -> OutboundJob:
        """A copy of a finished job's spooled TIFF-F (and original) in a new spool directory, queued with
        the same destination, device, priority, attempts and options."""
        job = get_job(job_id)
        if not job.state.is_final:
            raise ApiError(409, "conflict", f"job {job_id} is still {job.state.value}: cancel it first")
        src = job_document(job_id)
        key = secrets.token_hex(10)
        staging, final = spool_dir / f".{key}.part", spool_dir / key
        staging.mkdir(parents=True)
        try:
            shutil.copyfile(src, staging / "fax.tif")
            original = Path(job.original) if job.original else None
            kept = None
            if original is not None and original.is_file() and original.resolve().is_relative_to(spool_root):
                kept = staging / original.name
                shutil.copyfile(original, kept)
            fsync_dir(staging)
            staging.rename(final)
            fsync_dir(spool_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            new = store.submit(final / "fax.tif", job.destination,
                               original=final / kept.name if kept else None, device=job.device,
                               priority=job.priority, max_attempts=job.max_attempts,
                               options=job.options)  # fmt: skip
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        log.info("job %s queued again as %s for %s", job_id, new.id, new.destination)
        return new

    @app.post(
        "/v1/jobs/{job_id}/resubmit",
        tags=["jobs"],
        summary="Queue a finished job's document again, as a new job",
        description="The job's spooled fax document (the same pages) is copied into a new job with the same "
        "destination, device, priority, max attempts and options (ECM, T.38, header); it is sent now.",
        status_code=201,
        response_model=Job,
        responses={
            **common,
            201: {
                "description": "Queued; `Location` names the new job.",
                "model": Job,
                "headers": {"Location": {"description": "/v1/jobs/{id}", "schema": {"type": "string"}}},
            },
            404: {"model": ErrorBody, "description": "No such job, or its document is gone."},
            409: {"model": ErrorBody, "description": "The job is not finished."},
        },
    )
    async def resubmit_job(job_id: JobId) -> Response:
        job = await asyncio.to_thread(resubmit, job_id)
        wake()
        body = _job(job).model_dump(mode="json")
        return JSONResponse(body, status_code=201, headers={"Location": f"/v1/jobs/{job.id}"})

    # -- previews ----------------------------------------------------------------------------------

    def get_preview(preview_id: str) -> Preview:
        previews.sweep()
        try:
            return previews.get(preview_id)
        except PreviewNotFoundError:
            raise ApiError(404, "not_found", f"no preview {preview_id!r} (previews expire)") from None

    def preview_body(preview: Preview) -> PreviewBody:
        listed = page_list(preview.tiff)
        return PreviewBody(
            id=preview.id,
            count=listed.count,
            pages=listed.pages,
            resolution=cast(Literal["standard", "fine", "superfine"], preview.resolution),
            paper=cast(Literal["a4", "letter", "legal"], preview.paper),
            expires_at=cast(dt.datetime, _time(preview.expires_at)),
        )

    def make_preview(
        upload: BinaryIO, shown_name: str, resolution: str, paper: str
    ) -> PreviewBody:
        previews.sweep()
        spooled, original, pages = _spool_upload(
            previews.directory,
            upload,
            shown_name=shown_name,
            resolution=documents.Resolution.from_name(resolution),
            paper=documents.PaperSize.from_name(paper),
            converter=convert,
        )
        try:
            return preview_body(previews.register(spooled, original, pages, resolution, paper))
        except BaseException:
            shutil.rmtree(spooled, ignore_errors=True)
            raise

    preview_responses: dict[int | str, dict[str, Any]] = {
        **common,
        404: {"model": ErrorBody, "description": "No such preview, or it expired."},
    }

    @app.post(
        "/v1/previews",
        tags=["jobs"],
        summary="Convert a document as it will be faxed, without queueing it",
        description=(
            "The same upload and conversion as `POST /v1/jobs` (the same errors for a bad document; "
            f"nothing is kept then). The pages are kept for {previews.ttl / 60:g} minutes: view them "
            "with `GET /v1/previews/{id}/pages/{n}.png`, queue exactly them with `POST /v1/jobs` and "
            "`preview_id` (no second conversion)."
        ),
        status_code=201,
        response_model=PreviewBody,
        responses={
            **common,
            201: {
                "description": "Converted; `Location` names the preview.",
                "model": PreviewBody,
                "headers": {"Location": {"description": "/v1/previews/{id}", "schema": {"type": "string"}}},
            },
            413: {"model": ErrorBody, "description": "The upload is larger than the configured limit."},
            422: {"model": ErrorBody, "description": "Invalid field or unusable document; nothing kept."},
        },
    )
    async def create_preview(
        document: Annotated[UploadFile, File(description="PDF, PNG, JPEG or TIFF.")],
        resolution: Annotated[
            Literal["standard", "fine", "superfine"], Form(description="Vertical resolution of the fax.")
        ] = "fine",
        paper: Annotated[Literal["a4", "letter", "legal"], Form(description="Page size.")] = "a4",
    ) -> Response:
        try:
            body = await asyncio.to_thread(
                make_preview, document.file, _display_name(document.filename), resolution, paper
            )
        except documents.DocumentError as exc:
            raise ApiError(422, "bad_document", str(exc)) from None
        log.info("preview %s: %d page(s)", body.id, body.count)
        return JSONResponse(
            body.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/previews/{body.id}"}
        )

    @app.get(
        "/v1/previews/{preview_id}",
        tags=["jobs"],
        summary="A preview: its pages and when it expires",
        response_model=PreviewBody,
        responses=preview_responses,
    )
    def preview_detail(preview_id: PreviewId) -> PreviewBody:
        return preview_body(get_preview(preview_id))

    @app.get(
        "/v1/previews/{preview_id}/pages/{n}.png",
        tags=["jobs"],
        summary="One page of a preview as PNG",
        description=png_description,
        response_class=Response,
        responses={**png_responses, 404: {"model": ErrorBody, "description": "No such preview or page."}},
    )
    async def preview_page_png(
        request: Request, preview_id: PreviewId, n: PageNumber, width: PageWidth = DEFAULT_WIDTH,
        rotate: Rotate = Rotation.NONE,
    ) -> Response:  # fmt: skip
        return await page_png(
            request,
            f"preview-{preview_id}",
            f"preview {preview_id}",
            lambda: get_preview(preview_id).tiff,
            n,
            width,
            rotate,
        )

    @app.delete(
        "/v1/previews/{preview_id}",
        tags=["jobs"],
        summary="Discard a preview",
        status_code=204,
        response_class=Response,
        responses={**preview_responses, 204: {"description": "Deleted."}},
    )
    def delete_preview(preview_id: PreviewId) -> Response:
        preview = get_preview(preview_id)
        shutil.rmtree(preview.directory, ignore_errors=True)
        images.forget(f"preview-{preview_id}")
        return Response(status_code=204)

    # -- events ------------------------------------------------------------------------------------

    @app.get(
        "/v1/events",
        tags=["events"],
        summary="Live events (server-sent events)",
        description=(
            "A `text/event-stream`: each event is `id: <n>` (a store-wide event number) and `data: <event "
            "JSON>`; a comment line is sent every 15 s of silence. Without `Last-Event-ID` or `after` the "
            "stream starts with the next new event; with either, it replays every event after that number "
            "first. EventSource clients resume by themselves. While the job store is unavailable a new "
            "stream is refused with 503 `store_unavailable` (and Retry-After); an open stream stays open, "
            "says so in a comment line and goes on where it was once the store answers."
        ),
        response_class=StreamingResponse,
        responses={
            **common,
            200: {
                "description": "The stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
    )
    async def events(
        request: Request,
        after: Annotated[int | None, Query(ge=0, description="Replay the events after this number.")] = None,
        job: Annotated[
            str | None, Query(max_length=64, description="Only the events of this job or fax.")
        ] = None,
        last_event_id: Annotated[str | None, Header(description="Resume after this event number.")] = None,
    ) -> StreamingResponse:
        cursor: int | None = after
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise ApiError(400, "invalid_request", "Last-Event-ID: must be an event number")
            cursor = int(last_event_id.strip())
        if cursor is None:
            cursor = await asyncio.to_thread(feed.last_id)
        # read once before answering: a store that is down gets 503 store_unavailable (with the reason and
        # Retry-After), not a 200 whose body ends at once
        first = await asyncio.to_thread(feed.after, cursor, SSE_BATCH)
        return StreamingResponse(
            _stream(feed, cursor, job, subscribe, app, heartbeat, poll_interval, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- devices -----------------------------------------------------------------------------------

    @app.get(
        "/v1/devices",
        tags=["service"],
        summary="The fax devices and their state",
        response_model=DeviceList,
        responses=common,
    )
    async def list_devices() -> DeviceList:
        return DeviceList(devices=[Device(**d) for d in (devices_status() if devices_status else [])])

    @app.get(
        "/v1/nodes",
        tags=["service"],
        summary="Every node sharing the job store",
        description="Each `vfax serve` process on the same database, with its state, devices, "
        "registrations and calls in progress as of its last heartbeat. With SQLite: this node alone.",
        response_model=NodeList,
        responses=common,
    )
    async def list_nodes() -> NodeList:
        nodes = await asyncio.to_thread(store.list_nodes)
        return NodeList(nodes=[_node(n) for n in nodes])

    async def mark_draining(target: str, flag: bool) -> Node:
        try:
            record = await asyncio.to_thread(store.set_node_draining, target, flag)
        except NodeNotFoundError:
            raise ApiError(404, "not_found", f"no node {target!r}") from None
        here = target == node_id and set_draining is not None
        if here:
            cast(SetDraining, set_draining)(flag)  # this process: at once, not at its next heartbeat
        log.warning("node %s %s through the API%s", target, "marked draining" if flag else "resumed",
                    "" if here else " (it follows the mark at its next heartbeat)")  # fmt: skip
        return _node(record)

    node_responses: dict[int | str, dict[str, Any]] = {
        **common,
        404: {"model": ErrorBody, "description": "No such node."},
    }

    @app.post(
        "/v1/nodes/{node_id}/drain",
        tags=["service"],
        summary="Drain a node",
        description="The node claims no new job and answers new calls and OPTIONS 503 (so a dispatcher "
        "in front routes around it); its calls in progress finish. The node that serves this request "
        "applies it at once when it is the one drained, another node at its next heartbeat. Once `drained` "
        "is true in `GET /v1/nodes` the node may be stopped without cutting a call. The mark is cleared "
        "by resume and when the node starts again. Answers the node's record.",
        response_model=Node,
        responses=node_responses,
    )
    async def drain_node(node_id: NodeId) -> Node:
        return await mark_draining(node_id, True)

    @app.post(
        "/v1/nodes/{node_id}/resume",
        tags=["service"],
        summary="Put a drained node back to work",
        description="Clears the drain mark: the node claims jobs and takes calls again (at once when it "
        "serves this request, else at its next heartbeat). Answers the node's record.",
        response_model=Node,
        responses=node_responses,
    )
    async def resume_node(node_id: NodeId) -> Node:
        return await mark_draining(node_id, False)

    # -- the console (web pages over this API; not in the OpenAPI document) ---------------------------
    from vfax.console.pages import mount_console

    mount_console(
        app, store, token=config.token, files=files, devices_status=devices_status,
        reports_dir=reports.directory,
    )  # fmt: skip

    # Starlette adds middleware outside-in in reverse order: CORS (if any) must see preflights first.
    app.add_middleware(_Guard, token=config.token, max_body=config.max_upload_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    return app


async def _stream(
    feed: _EventFeed,
    cursor: int,
    job: str | None,
    subscribe: Subscribe | None,
    app: FastAPI,
    heartbeat: float,
    poll_interval: float,
    first: list[tuple[int, FaxEvent]],
) -> AsyncIterator[bytes]:
    """The body of ``GET /v1/events``: store events after ``cursor`` (``first``: the batch already read),
    as they come. While the store is unavailable the stream stays open: it says so in a comment line
    and goes on from its cursor when the store answers again, so no event is skipped."""
    signal = asyncio.Event()
    listener: asyncio.Task[None] | None = None

    async def listen() -> None:
        assert subscribe is not None
        source = subscribe()
        try:
            async for _ in source:
                signal.set()
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    if subscribe is not None:
        listener = asyncio.create_task(listen(), name="vfax-api:sse-subscribe")
    app.state.stream_signals.add(signal)
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    try:
        yield b"retry: 3000\n: vfax events\n\n"
        batch: list[tuple[int, FaxEvent]] | None = first
        outage = ""
        while not app.state.closing:
            while True:
                if batch is None:
                    try:
                        batch = await asyncio.to_thread(feed.after, cursor, SSE_BATCH)
                    except StoreUnavailableError as exc:
                        if not outage:
                            outage = str(exc)
                            yield f": store unavailable: {outage}; waiting\n\n".encode()
                            last_sent = loop.time()
                        break
                    if outage:
                        outage = ""
                        yield b": store available again\n\n"
                        last_sent = loop.time()
                for number, event in batch:
                    cursor = number
                    if job is None or event.job_id == job:
                        yield _sse(number, event)
                        last_sent = loop.time()
                full, batch = len(batch) >= SSE_BATCH, None
                if not full:
                    break
            if loop.time() - last_sent >= heartbeat:
                yield b": keep-alive\n\n"
                last_sent = loop.time()
            wait = min(poll_interval, max(0.01, heartbeat - (loop.time() - last_sent)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), timeout=wait)
            signal.clear()
    finally:
        app.state.stream_signals.discard(signal)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener


# --------------------------------------------------------------------------------------------------
# The spec and the server
# --------------------------------------------------------------------------------------------------


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document of the API (what ``docs/openapi.json`` holds)."""
    app = create_app(
        cast(JobStore, None), ApiConfig(), inbox_dir=Path("."), spool_dir=Path("."), wake=lambda: None
    )
    return app.openapi()


class ApiServer(uvicorn.Server):
    """A uvicorn server that runs as a task of an existing loop and leaves signal handling to its owner."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the service installs its own handlers
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn versions call this instead
        return None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self._ready is not None:
            self._ready.set()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when the configured one was 0)."""
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                return host, port
        raise RuntimeError("the API server is not listening")

    async def stop(self) -> None:
        """Ask open event streams to end, stop accepting, and wait for the task."""
        app = self.config.app
        state = getattr(app, "state", None)
        if state is not None:
            state.closing = True
            for signal in list(getattr(state, "stream_signals", ())):
                signal.set()
        self.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def serve_api(
    app: FastAPI, listen: str, *, log_level: str = "warning", sock: socket.socket | None = None
) -> ApiServer:
    """Start serving ``app`` on ``listen`` (``HOST:PORT``) as a task of the running loop; returns once it
    listens. Raises ``OSError`` when it cannot listen. Stop it with ``await server.stop()``.

    ``sock``: an already listening socket to serve on instead (``vfax serve --workers``: the supervisor
    binds ``listen`` once and every worker serves that socket)."""
    host, port = parse_listen(listen, "api.listen")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )
    server = ApiServer(config)
    server._ready = asyncio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock] if sock is not None else None)
        except SystemExit:  # uvicorn exits the process when it cannot bind: turn that into an error
            raise OSError(f"cannot listen on {listen} for the API") from None

    server.task = asyncio.create_task(run(), name="vfax-api")
    ready = asyncio.create_task(server._ready.wait())
    try:
        await asyncio.wait({server.task, ready}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if server.task.done():
        server.task.result()  # raises the start-up error
        raise OSError(f"the API server on {listen} stopped at start-up")
    log.info("API listening on http://%s:%d", *server.address)
    return server


def write_openapi(path: Path) -> None:
    path.write_text(json.dumps(openapi_spec(), indent=2) + "\n")


if __name__ == "__main__":  # python -m vfax.service.api docs/openapi.json
    import sys

    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m vfax.service.api OUTPUT.json\n")
        raise SystemExit(2)
    write_openapi(Path(sys.argv[1]))
