"""The console's pages: server-rendered HTML over the same store calls and models as the ``/v1`` API.

Every page is rendered from the records the API itself would answer (``api._job``, ``api._fax``,
``api._node`` turned into JSON-shaped dicts), so the page and ``GET /v1/...`` never disagree; the scripts
in ``static/`` then keep a page current through ``/v1`` endpoints only (``/v1/events``, ``/v1/jobs/{id}``,
...). Templates are Jinja2 with autoescape on: anything that came from the network (caller id, CSI, SIP
reason, file names) is text, never markup.

Adding a page (see docs/console.md): a route here (``include_in_schema=False``), a template that
extends ``base.html``, an entry in :data:`NAV` if it belongs in the menu, and a script in ``static/``
if it updates itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from vfax.console import auth
from vfax.report_view import PAGE_CSS, render_call_report
from vfax.store.model import InboundFax, InboundState, JobFilter, JobNotFoundError, JobState, JobStore

if TYPE_CHECKING:
    from vfax.service.api import _Files

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: Rows per page of the outbound and inbox lists.
PAGE_SIZE = 100
#: Jobs read at a time when counting today's outcomes.
_COUNT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    label: str


#: The menu, in order.
NAV: list[NavItem] = [
    NavItem("/", "Overview"),
    NavItem("/outbound", "Outbound"),
    NavItem("/outbound/new", "Send"),
    NavItem("/inbox", "Inbox"),
]

JOB_STATES = [s.value for s in JobState]


def _when(value: Any) -> str:
    """An ISO time from the API models as 'YYYY-MM-DD HH:MM:SS' UTC (the scripts format the same way)."""
    if not value:
        return ""
    text = str(value).replace("T", " ")
    return text[:19] + " UTC"


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def start_of_day(now: float) -> float:
    """Midnight UTC of ``now``'s day: 'today' for the counters (the console shows UTC throughout)."""
    day = dt.datetime.fromtimestamp(now, tz=dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def counters_today(store: JobStore, now: float) -> dict[str, int]:
    """Jobs sent (completed), jobs failed and faxes received (completed or partial) since midnight UTC.

    Reads the finished rows in batches; a store with a count by time would make this one query."""
    since = start_of_day(now)
    out = {"sent": 0, "failed": 0, "received": 0}
    for key, state in (("sent", JobState.COMPLETED), ("failed", JobState.FAILED)):
        offset = 0
        while True:
            batch = store.list(JobFilter(states=frozenset({state})), limit=_COUNT_BATCH, offset=offset)
            out[key] += sum(1 for j in batch if (j.finished_at or 0) >= since)
            if len(batch) < _COUNT_BATCH:
                break
            offset += _COUNT_BATCH
    offset = 0
    received = frozenset({InboundState.COMPLETED, InboundState.PARTIAL})
    while True:
        faxes = store.list_inbound(received, limit=_COUNT_BATCH, offset=offset)
        out["received"] += sum(1 for f in faxes if (f.finished_at or 0) >= since)
        if len(faxes) < _COUNT_BATCH:
            break
        offset += _COUNT_BATCH
    return out


def mount_console(
    app: FastAPI,
    store: JobStore,
    *,
    token: str | None,
    files: _Files,
    devices_status: Callable[[], Sequence[dict[str, Any]]] | None,
    reports_dir: Path,
) -> None:
    """Add the console's routes and static files to the API's ``app`` (none of them in the OpenAPI
    document: the console is a client of the API, not part of it)."""
    from vfax.service import api  # the API's record -> model conversions; imported late (api imports us)

    env = make_environment()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = request.scope.get("state", {}).get(auth.COOKIE)
        csrf = auth.csrf_token(token, session) if token and session else ""
        html = env.get_template(name).render(
            nav=NAV,
            path=request.url.path,
            csrf=csrf,
            logged_in=bool(token and session),
            **context,
        )
        return HTMLResponse(
            html,
            status_code=status,
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )

    app.mount(auth.STATIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="console-static")

    # -- login -------------------------------------------------------------------------------------

    @app.get(auth.LOGIN_PATH, include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> Response:
        if token is None:
            return RedirectResponse(auth.safe_next(next), status_code=303)
        return render(request, "login.html", next=auth.safe_next(next), error="")

    @app.post(auth.LOGIN_PATH, include_in_schema=False)
    def login(
        request: Request,
        token_field: Annotated[str, Form(alias="token", max_length=4096)] = "",
        next: Annotated[str, Form(max_length=2000)] = "/",
    ) -> Response:
        target = auth.safe_next(next)
        if token is None:
            return RedirectResponse(target, status_code=303)
        if not auth.token_equals(token_field, token):
            wrong = "Wrong token: it must be the api.token of the service configuration."
            return render(request, "login.html", status=401, next=target, error=wrong)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            auth.COOKIE,
            auth.new_session(token, time.time()),
            max_age=auth.SESSION_SECONDS,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        session = request.scope.get("state", {}).get(auth.COOKIE)
        if token is not None and session is not None and not auth.csrf_matches(token, session, csrf):
            return render(request, "message.html", status=403, title="Not logged out",
                          message="The form's CSRF token is missing or wrong; reload the page.")  # fmt: skip
        response = RedirectResponse(auth.LOGIN_PATH, status_code=303)
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- overview ----------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def overview(request: Request) -> Response:
        now = time.time()
        nodes = await asyncio.to_thread(store.list_nodes)
        counters = await asyncio.to_thread(counters_today, store, now)
        devices = list(devices_status() if devices_status else [])
        return render(
            request,
            "overview.html",
            title="Overview",
            devices=devices,
            nodes=[api._node(n).model_dump(mode="json") for n in nodes],
            counters=counters,
            today=dt.datetime.fromtimestamp(start_of_day(now), tz=dt.UTC).date().isoformat(),
        )

    # -- outbound ----------------------------------------------------------------------------------

    @app.get("/outbound", include_in_schema=False)
    async def outbound(
        request: Request,
        state: Annotated[list[str] | None, Query(max_length=20)] = None,
        device: Annotated[str, Query(max_length=64)] = "",
        destination: Annotated[str, Query(max_length=300)] = "",
        since: Annotated[str, Query(max_length=64)] = "",
        until: Annotated[str, Query(max_length=64)] = "",
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> Response:
        states = [s for s in (state or []) if s in JOB_STATES]
        since, until, error = since.strip(), until.strip(), ""
        try:  # as GET /v1/jobs?since=&until= parses them (a datetime-local field is UTC here)
            bounds = {"since": api._bound(since, "since"), "until": api._bound(until, "until")}
        except api.ApiError as exc:
            bounds, error = {"since": None, "until": 0.0}, exc.detail  # nothing listed, the error shown
        wanted = JobFilter(
            states=frozenset(JobState(s) for s in states) if states else None,
            device=device.strip() or None,
            destination=destination.strip() or None,
            **bounds,
        )
        jobs = await asyncio.to_thread(store.list, wanted, PAGE_SIZE + 1, offset)
        devices = sorted({str(d.get("name")) for d in (devices_status() if devices_status else [])})

        def link(at: int) -> str:
            query = {"state": states, "device": device, "destination": destination, "since": since,
                     "until": until, "offset": at}  # fmt: skip
            return "/outbound?" + urlencode(query, doseq=True)

        return render(
            request,
            "outbound.html",
            title="Outbound",
            jobs=[api._job(j).model_dump(mode="json") for j in jobs[:PAGE_SIZE]],
            more=len(jobs) > PAGE_SIZE,
            offset=offset,
            seen=min(len(jobs), PAGE_SIZE),
            earlier=link(max(0, offset - PAGE_SIZE)) if offset > 0 else "",
            later=link(offset + PAGE_SIZE) if len(jobs) > PAGE_SIZE else "",
            states=JOB_STATES,
            chosen=states,
            device=device,
            destination=destination,
            since=since,
            until=until,
            error=error,
            devices=devices,
        )

    @app.get("/outbound/new", include_in_schema=False)  # before /outbound/{job_id}: "new" is not a job
    def send_form(request: Request) -> Response:
        devices = sorted({str(d.get("name")) for d in (devices_status() if devices_status else [])})
        return render(request, "send.html", title="Send a fax", devices=devices)

    @app.get("/outbound/{job_id}", include_in_schema=False)
    async def job_page(request: Request, job_id: str) -> Response:
        try:
            job = await asyncio.to_thread(store.get, job_id[:64])
        except JobNotFoundError:
            return render(request, "message.html", status=404, title="No such job",
                          message=f"There is no outbound job {job_id!r}.")  # fmt: skip
        events = await asyncio.to_thread(store.events_for, job.id)
        return render(
            request,
            "job.html",
            title=f"Job {job.id}",
            job=api._job(job).model_dump(mode="json"),
            events=[api._event(e).model_dump(mode="json") for e in events],
        )

    # -- call reports (vfax.report_view: drawn on the server, every network value escaped there) ---------

    reports = api.AttemptReports(reports_dir, files)

    @app.get("/console/report.css", include_in_schema=False)
    def report_css() -> Response:
        return Response(PAGE_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    def report_page(request: Request, path: Path | None, title: str, back: str, back_label: str,
                    json_url: str) -> Response:  # fmt: skip
        if path is None:
            return render(request, "message.html", status=404, title="No call report",
                          message="No call report was kept for this call.")  # fmt: skip
        try:
            report = json.loads(path.read_text())
            drawing = render_call_report(report)
        except (OSError, ValueError, TypeError) as exc:
            return render(request, "message.html", status=500, title="Unreadable call report",
                          message=f"The call report cannot be read: {exc}")  # fmt: skip
        return render(request, "report.html", title=title, drawing=Markup(drawing), back=back,
                      back_label=back_label, json_url=json_url)  # fmt: skip

    @app.get("/outbound/{job_id}/attempts/{attempt}", include_in_schema=False)
    async def attempt_report(request: Request, job_id: str, attempt: int) -> Response:
        try:
            job = await asyncio.to_thread(store.get, job_id[:64])
        except JobNotFoundError:
            return render(request, "message.html", status=404, title="No such job",
                          message=f"There is no outbound job {job_id!r}.")  # fmt: skip
        path = await asyncio.to_thread(reports.get, job.id, attempt) if 1 <= attempt <= job.attempts else None
        return report_page(
            request, path, f"Job {job.id}, attempt {attempt}", f"/outbound/{quote(job.id)}",
            "Back to the job", f"/v1/jobs/{quote(job.id)}/attempts/{attempt}/report",
        )  # fmt: skip

    def live_fax(fax_id: str) -> InboundFax:
        """The received fax as the API serves it: a deleted one is not found."""
        fax = store.get_inbound(fax_id[:64])
        if fax.deleted_at is not None:
            raise JobNotFoundError(fax_id)
        return fax

    @app.get("/inbox/{fax_id}/report", include_in_schema=False)
    async def fax_report(request: Request, fax_id: str) -> Response:
        try:
            fax = await asyncio.to_thread(live_fax, fax_id)
        except JobNotFoundError:
            return render(request, "message.html", status=404, title="No such fax",
                          message=f"There is no received fax {fax_id!r}.")  # fmt: skip
        path = files.get(fax.report_path)
        if path is None and fax.report_path:
            path = await asyncio.to_thread(files.fetch, fax.id, "report", ".json")
        return report_page(
            request, path, f"Received fax {fax.id}", f"/inbox/{quote(fax.id)}", "Back to the fax",
            f"/v1/faxes/{quote(fax.id)}/report",
        )  # fmt: skip

    # -- inbox -------------------------------------------------------------------------------------

    @app.get("/inbox", include_in_schema=False)
    async def inbox(
        request: Request,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        caller: Annotated[str, Query(max_length=200)] = "",
        csi: Annotated[str, Query(max_length=100)] = "",
        since: Annotated[str, Query(max_length=64)] = "",
        until: Annotated[str, Query(max_length=64)] = "",
        deleted: Annotated[str, Query(max_length=64)] = "",
    ) -> Response:
        search = {"caller": caller.strip(), "csi": csi.strip(), "since": since.strip(),
                  "until": until.strip()}  # fmt: skip
        try:  # the same parsing as GET /v1/faxes?since=&until= (a datetime-local field is UTC here)
            bounds = {k: api._bound(search[k], k) for k in ("since", "until")}
        except api.ApiError as exc:
            return render(request, "inbox.html", status=422, title="Inbox", faxes=[], earlier="", later="",
                          search=search, searching=True, error=exc.detail, deleted="")  # fmt: skip
        faxes = await asyncio.to_thread(
            lambda: store.list_inbound(None, PAGE_SIZE + 1, offset, caller=search["caller"] or None,
                                       csi=search["csi"] or None, **bounds)
        )

        def link(at: int) -> str:
            return "/inbox?" + urlencode({**{k: v for k, v in search.items() if v}, "offset": at})

        return render(
            request,
            "inbox.html",
            title="Inbox",
            faxes=[api._fax(f, files).model_dump(mode="json") for f in faxes[:PAGE_SIZE]],
            earlier=link(max(0, offset - PAGE_SIZE)) if offset > 0 else "",
            later=link(offset + PAGE_SIZE) if len(faxes) > PAGE_SIZE else "",
            search=search,
            searching=any(search.values()),
            error="",
            deleted=deleted,
        )

    @app.get("/inbox/{fax_id}", include_in_schema=False)
    async def fax_page(request: Request, fax_id: str) -> Response:
        try:
            fax = await asyncio.to_thread(live_fax, fax_id)
        except JobNotFoundError:
            return render(request, "message.html", status=404, title="No such fax",
                          message=f"There is no received fax {fax_id!r} (or it was deleted).")  # fmt: skip
        return render(request, "fax.html", title=f"Received fax {fax.id}",
                      fax=api._fax(fax, files).model_dump(mode="json"))  # fmt: skip
