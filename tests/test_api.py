"""The HTTP API and its CLI client against a real SQLite job store (no fakes of the store).

In-process requests go through FastAPI's TestClient; the event stream and the CLI client talk to a real
uvicorn server on 127.0.0.1 (port 0) run by :func:`vfax.service.api.serve_api` in a thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from tests import docfactory
from vfax import documents
from vfax.cli import common as cli_common
from vfax.cli.service import cancel_command, faxes_command, jobs_command, status_command, submit_command
from vfax.service.api import create_app, openapi_spec, serve_api
from vfax.service.config import ApiConfig
from vfax.status import FaxStatus
from vfax.store.events import FaxEvent
from vfax.store.model import InboundFax, JobState
from vfax.store.sqlite import SqliteJobStore

with warnings.catch_warnings():  # Starlette 1.x would like httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data")

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOCS = Path(__file__).resolve().parent.parent / "docs"


class Env:
    """A store, an app over it, and a record of wake() calls."""

    def __init__(self, tmp: Path, **app_kw: Any) -> None:
        self.tmp = tmp
        self.store = SqliteJobStore(tmp / "vfax.db")
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.spool = tmp / "spool"
        self.wakes = 0
        config = app_kw.pop("config", ApiConfig(token=TOKEN))
        self.app = create_app(
            self.store, config, inbox_dir=self.inbox, spool_dir=self.spool, wake=self._wake, **app_kw
        )
        self.client = TestClient(self.app)

    def _wake(self) -> None:
        self.wakes += 1

    def spool_files(self) -> list[Path]:
        return sorted(p for p in self.spool.rglob("*")) if self.spool.exists() else []

    def submit(self, document: Path | bytes, **fields: str) -> httpx.Response:
        data = document if isinstance(document, bytes) else document.read_bytes()
        fields.setdefault("to", "sip:1002@127.0.0.1")
        return self.client.post(
            "/v1/jobs", files={"document": ("letter.pdf", data, "application/pdf")}, data=fields, headers=AUTH
        )

    def received_fax(self, *, pages: int = 2, files: bool = True) -> InboundFax:
        tiff = docfactory.fax_tiff(self.inbox / "in.tif", pages=pages)
        fax = self.store.record_inbound(
            call_id="call-1@127.0.0.1",
            caller="sip:1001@127.0.0.1",
            callee="sip:fax@127.0.0.1",
            device="line1",
        )
        self.store.update_inbound(fax.id, pages=pages, remote_csi="+1 555 0199", tiff_path=tiff)
        self.store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=pages)
        if files:
            pdf = docfactory.text_pdf(self.inbox / "in.pdf", pages=pages)
            report = self.inbox / "in.json"
            report.write_text(json.dumps({"ok": True, "pages": pages}))
            self.store.place_inbound_files(fax.id, pdf_path=pdf, report_path=report)
        return self.store.get_inbound(fax.id)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return docfactory.text_pdf(tmp_path / "letter.pdf", pages=2)


# -- submit ------------------------------------------------------------------------------------------


def test_submitted_pdf_becomes_a_queued_job_with_its_fax_tiff_in_the_spool(env: Env, pdf: Path) -> None:
    r = env.submit(pdf, priority="5", ecm="false", t38="only", header="ACME", max_attempts="4")
    assert r.status_code == 201
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["state"] == "queued" and body["destination"] == "sip:1002@127.0.0.1"
    job = env.store.get(body["id"])
    assert job.state is JobState.QUEUED
    assert (job.priority, job.max_attempts) == (5, 4)
    assert job.options == {"ecm": False, "t38": "only", "header": "ACME"}
    tiff = Path(job.document)
    assert tiff.is_relative_to(env.spool) and documents.detect_kind(tiff) == "tiff"
    with Image.open(tiff) as im:
        assert im.n_frames == 2 and im.width == documents.FAX_WIDTH_PX
    assert job.original is not None and Path(job.original).read_bytes() == pdf.read_bytes()
    assert env.wakes == 1


@pytest.mark.parametrize(
    ("not_before", "expected"),
    [
        ("1893456000", 1893456000.0),
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01T01:00:00+01:00", 1893456000.0),
    ],
)
def test_not_before_accepts_unix_seconds_and_iso_8601(
    env: Env, pdf: Path, not_before: str, expected: float
) -> None:
    r = env.submit(pdf, not_before=not_before)
    assert r.status_code == 201
    assert env.store.get(r.json()["id"]).not_before == expected
    assert r.json()["not_before"] == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "make",
    [
        docfactory.corrupt_pdf,
        docfactory.truncated_pdf,
        docfactory.zero_page_pdf,
        docfactory.random_bytes,
        docfactory.text_file,
        docfactory.empty_file,
        docfactory.corrupt_tiff,
    ],
)
def test_bad_document_gets_422_with_the_reason_and_stores_nothing(
    env: Env, tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    bad = make(tmp_path / "bad.bin")
    r = env.submit(bad)
    assert r.status_code == 422
    assert r.json()["error"] == "bad_document"
    assert r.json()["detail"].startswith("letter.pdf: ")  # the client's file name, never a server path
    assert str(env.spool) not in r.text
    assert env.store.list() == []
    assert env.spool_files() == []
    assert env.wakes == 0


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("+49 (30) 123-456", "+4930123456"), ("tel:+1-555-0100", "+15550100"), ("0030 123 45", "003012345")],
)
def test_a_telephone_number_typed_with_separators_is_queued_as_its_digits(
    env: Env, pdf: Path, typed: str, stored: str
) -> None:
    r = env.submit(pdf, to=typed)
    assert r.status_code == 201, r.text
    assert r.json()["destination"] == stored
    assert [j.destination for j in env.store.list()] == [stored]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"to": ""}, "to"),
        ({"to": "sip:1002 @127.0.0.1"}, "to"),
        ({"to": "not a number"}, "to"),
        ({"to": "x" * 300}, "to"),
        ({"to": "+49 30 1234 5678 9012 3456"}, "to"),  # longer than E.164 allows
        ({"priority": "high"}, "priority"),
        ({"priority": "1000"}, "priority"),
        ({"not_before": "tomorrow"}, "not_before"),
        ({"not_before": "1e300"}, "not_before"),
        ({"not_before": "nan"}, "not_before"),
        ({"resolution": "ultra"}, "resolution"),
        ({"paper": "a3"}, "paper"),
        ({"t38": "maybe"}, "t38"),
        ({"ecm": "perhaps"}, "ecm"),
        ({"max_attempts": "0"}, "max_attempts"),
        ({"header": "h" * 101}, "header"),
        ({"header": "bell\x07"}, "header"),
        ({"device": "line9"}, "device"),
    ],
)
def test_malformed_api_input_gets_a_4xx_with_a_reason_and_stores_nothing(
    tmp_path: Path, pdf: Path, fields: dict[str, str], named: str
) -> None:
    env = Env(tmp_path, devices_status=lambda: [{"name": "line1", "registered": True}])
    r = env.submit(pdf, **fields)
    assert 400 <= r.status_code < 500
    assert r.json()["error"] == "invalid_request"
    assert r.json()["detail"].startswith(f"{named}: ")
    assert env.store.list() == [] and env.spool_files() == [] and env.wakes == 0


def test_submit_without_a_document_or_destination_names_the_missing_field(env: Env) -> None:
    r = env.client.post("/v1/jobs", data={"to": "sip:1@127.0.0.1"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("document: ")
    r = env.client.post("/v1/jobs", files={"document": ("a.pdf", b"%PDF-1.4")}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("to: ")
    r = env.client.post("/v1/jobs", content=b"{}", headers={**AUTH, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and "detail" in r.json()
    assert env.store.list() == []


def test_oversized_upload_gets_413_and_stores_nothing(tmp_path: Path) -> None:
    env = Env(tmp_path, config=ApiConfig(token=TOKEN, max_upload_mb=0.02))
    big = docfactory.random_bytes(tmp_path / "big.bin", size=64_000)
    r = env.submit(big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    # the same without Content-Length (chunked): counted while it streams in
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="to"\r\n\r\nsip:1@127.0.0.1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="document"; filename="a.pdf"\r\n\r\n'
        ).encode()
        + big.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = env.client.post("/v1/jobs", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert env.store.list() == [] and env.spool_files() == []


# -- authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/x"),
        ("POST", "/v1/jobs/x/cancel"),
        ("GET", "/v1/faxes"),
        ("GET", "/v1/faxes/x/pdf"),
        ("GET", "/v1/events"),
        ("GET", "/v1/devices"),
    ],
)
def test_missing_or_wrong_token_gets_401_with_www_authenticate(
    env: Env, headers: dict[str, str], method: str, path: str
) -> None:
    r = env.client.request(method, path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized"


def test_upload_without_token_is_refused_and_stores_nothing(env: Env, pdf: Path) -> None:
    r = env.client.post("/v1/jobs", files={"document": ("a.pdf", pdf.read_bytes())}, data={"to": "sip:1@h"})
    assert r.status_code == 401
    assert env.store.list() == [] and env.spool_files() == [] and env.wakes == 0


def test_health_and_spec_need_no_token(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    assert env.client.get("/openapi.json").json()["info"]["title"] == "vfax"


def test_without_a_configured_token_the_loopback_api_is_open(tmp_path: Path) -> None:
    env = Env(tmp_path, config=ApiConfig(token=None))
    assert env.client.get("/v1/jobs").status_code == 200


# -- jobs --------------------------------------------------------------------------------------------


def test_jobs_list_filters_by_state_and_device_and_pages(env: Env, tmp_path: Path) -> None:
    doc = tmp_path / "doc.tif"
    doc.write_bytes(b"II*\x00")
    ids = [
        env.store.submit(doc, f"sip:{n}@127.0.0.1", device="line1" if n % 2 else None).id for n in range(5)
    ]
    env.store.cancel(ids[0])
    listed = env.client.get("/v1/jobs", headers=AUTH).json()
    assert [j["id"] for j in listed["jobs"]] == ids
    queued = env.client.get("/v1/jobs", params={"state": "queued"}, headers=AUTH).json()["jobs"]
    assert [j["id"] for j in queued] == ids[1:]
    both = env.client.get("/v1/jobs", params=[("state", "queued"), ("state", "cancelled")], headers=AUTH)
    assert len(both.json()["jobs"]) == 5
    by_device = env.client.get("/v1/jobs", params={"device": "line1"}, headers=AUTH).json()["jobs"]
    assert [j["id"] for j in by_device] == [ids[1], ids[3]]
    page = env.client.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=AUTH).json()
    assert [j["id"] for j in page["jobs"]] == ids[2:4] and (page["limit"], page["offset"]) == (2, 2)
    assert env.client.get("/v1/jobs", params={"state": "lost"}, headers=AUTH).status_code == 422
    assert env.client.get("/v1/jobs", params={"limit": 0}, headers=AUTH).status_code == 422


def test_job_detail_has_its_events_and_unknown_job_is_404(env: Env, pdf: Path) -> None:
    job_id = env.submit(pdf).json()["id"]
    env.store.append_event(job_id, "status", FaxStatus.FS_DIALING, {"attempt": 1})
    detail = env.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert detail["id"] == job_id and detail["state"] == "queued"
    assert [(e["seq"], e["type"], e["status"]) for e in detail["events"]] == [(1, "status", "dialing")]
    assert detail["events"][0]["id"] == f"{job_id}.1"
    r = env.client.get("/v1/jobs/01NOSUCHJOB", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_cancel_a_queued_job_then_cancel_again_is_409(env: Env, pdf: Path) -> None:
    job_id = env.submit(pdf).json()["id"]
    r = env.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["status"] == "user_abort"
    assert env.store.get(job_id).state is JobState.CANCELLED
    assert env.wakes == 2  # submit, cancel
    events = env.store.events_for(job_id)
    assert [e.type for e in events] == ["terminal"]
    r = env.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)
    assert (
        r.status_code == 409 and r.json()["error"] == "conflict" and "already cancelled" in r.json()["detail"]
    )
    assert env.wakes == 2
    assert len(env.store.events_for(job_id)) == 1


def test_cancel_an_in_flight_job_asks_its_device_to_abort(env: Env, pdf: Path) -> None:
    job_id = env.submit(pdf).json()["id"]
    claimed = env.store.claim_next()
    assert claimed is not None and claimed.id == job_id
    r = env.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["state"] == "in_flight" and r.json()["cancel_requested"] is True
    assert env.store.get(job_id).cancel_requested and env.wakes == 2


def test_cancel_unknown_job_is_404(env: Env) -> None:
    r = env.client.post("/v1/jobs/01NOSUCHJOB/cancel", headers=AUTH)
    assert r.status_code == 404 and env.wakes == 0


# -- received faxes ----------------------------------------------------------------------------------


def test_faxes_list_detail_and_downloads(env: Env) -> None:
    fax = env.received_fax(pages=2)
    listed = env.client.get("/v1/faxes", headers=AUTH).json()["faxes"]
    assert [f["id"] for f in listed] == [fax.id]
    item = listed[0]
    assert (item["state"], item["pages"], item["remote_csi"], item["status"]) == (
        "completed",
        2,
        "+1 555 0199",
        "completed",
    )
    assert item["has_pdf"] and item["has_tiff"] and item["has_report"]
    assert env.client.get("/v1/faxes", params={"state": "failed"}, headers=AUTH).json()["faxes"] == []
    detail = env.client.get(f"/v1/faxes/{fax.id}", headers=AUTH).json()
    assert [e["type"] for e in detail["events"]] == ["terminal"]

    r = env.client.get(f"/v1/faxes/{fax.id}/pdf", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content == Path(str(fax.pdf_path)).read_bytes()
    assert f'filename="{fax.id}.pdf"' in r.headers["content-disposition"]
    r = env.client.get(f"/v1/faxes/{fax.id}/tiff", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff"
    assert r.content == Path(str(fax.tiff_path)).read_bytes()
    r = env.client.get(f"/v1/faxes/{fax.id}/report", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"ok": True, "pages": 2}


def test_fax_file_that_is_missing_or_outside_the_inbox_is_404(env: Env, tmp_path: Path) -> None:
    fax = env.received_fax(files=False)
    r = env.client.get(f"/v1/faxes/{fax.id}/pdf", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "file_missing"
    Path(str(fax.tiff_path)).unlink()
    assert env.client.get(f"/v1/faxes/{fax.id}/tiff", headers=AUTH).status_code == 404
    outside = tmp_path / "secret.pdf"
    outside.write_bytes(b"%PDF-1.4 not for you")
    env.store.place_inbound_files(fax.id, pdf_path=outside)
    assert env.client.get(f"/v1/faxes/{fax.id}/pdf", headers=AUTH).status_code == 404
    assert env.client.get("/v1/faxes/01NOSUCHFAX/pdf", headers=AUTH).json()["error"] == "not_found"
    assert env.client.get("/v1/faxes/01NOSUCHFAX", headers=AUTH).status_code == 404


def test_devices_come_from_the_service(tmp_path: Path) -> None:
    env = Env(tmp_path, devices_status=lambda: [{"name": "line1", "registered": True, "channels_busy": 1}])
    assert env.client.get("/v1/devices", headers=AUTH).json() == {
        "devices": [{"name": "line1", "registered": True, "channels_busy": 1}]
    }


def test_committed_openapi_spec_is_the_generated_one() -> None:
    """docs/openapi.json is the published spec.

    Regenerate it with `python -m vfax.service.api docs/openapi.json`."""
    committed = json.loads((DOCS / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_spec()))


# -- a real server: the event stream and the CLI client ---------------------------------------------


class Broadcast:
    """A live event source as the controller's subscribe() would be, fed from the test thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: list[asyncio.Queue[FaxEvent]] = []

    async def subscribe(self) -> AsyncIterator[FaxEvent]:
        self.loop = asyncio.get_running_loop()
        queue: asyncio.Queue[FaxEvent] = asyncio.Queue()
        self.queues.append(queue)
        while True:
            yield await queue.get()

    def publish(self, event: FaxEvent) -> None:
        assert self.loop is not None
        for queue in self.queues:
            self.loop.call_soon_threadsafe(queue.put_nowait, event)


class ServerThread:
    """serve_api() in its own loop and thread, as vfax serve runs it in the service loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        try:
            self.server = await serve_api(self.app, "127.0.0.1:0")
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        assert self.server.task is not None
        await self.server.task

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(10)
        if self.error:
            raise self.error
        host, port = self.server.address
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.loop.close()


def read_sse(lines: Iterator[str], count: int) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Read ``count`` events (id, data) from a stream; also return the comment lines seen."""
    events: list[tuple[int, dict[str, Any]]] = []
    comments: list[str] = []
    number: int | None = None
    for line in lines:
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("id: "):
            number = int(line[4:])
        elif line.startswith("data: "):
            assert number is not None
            events.append((number, json.loads(line[6:])))
            if len(events) == count:
                break
    return events, comments


def test_event_stream_replays_after_a_number_and_follows_new_events(tmp_path: Path) -> None:
    env = Env(tmp_path, poll_interval=0.05)
    old = [env.store.append_event("job-a", "status", FaxStatus.FS_DIALING) for _ in range(3)]
    with ServerThread(env.app) as base, httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
        with http.stream("GET", "/v1/events", params={"after": 0}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events, _ = read_sse(r.iter_lines(), 3)
        assert [e["id"] for _, e in events] == [e.event_id for e in old]
        numbers = [n for n, _ in events]
        assert numbers == sorted(numbers)

        # resume: Last-Event-ID wins over ?after, and only later events come
        with http.stream(
            "GET", "/v1/events", params={"after": 0}, headers={"Last-Event-ID": str(numbers[1])}
        ) as r:
            again, _ = read_sse(r.iter_lines(), 1)
        assert again[0][1]["id"] == old[2].event_id

        # without a starting point: only events appended after connecting, filtered by job when asked
        with http.stream("GET", "/v1/events", params={"job": "job-b"}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("retry:")  # the stream is open before we append
            env.store.append_event("job-a", "status", FaxStatus.FS_TRANSMITTING)
            new = env.store.append_event("job-b", "page", FaxStatus.FS_TRANSMITTING, {"pages": 1})
            events, _ = read_sse(lines, 1)
        assert events[0][1]["id"] == new.event_id and events[0][1]["payload"] == {"pages": 1}
        assert http.get("/v1/events", headers={"Last-Event-ID": "x"}).status_code == 400


def test_event_stream_sends_heartbeats_while_idle(tmp_path: Path) -> None:
    env = Env(tmp_path, heartbeat=0.05, poll_interval=0.02)
    with ServerThread(env.app) as base, httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
        with http.stream("GET", "/v1/events") as r:
            comments = []
            for line in r.iter_lines():
                if line == ": keep-alive":
                    comments.append(line)
                    if len(comments) == 2:
                        break
        assert comments == [": keep-alive", ": keep-alive"]


def test_event_stream_is_woken_by_the_live_subscription(tmp_path: Path) -> None:
    live = Broadcast()
    # polling alone would take an hour: only the subscription can deliver the event within the read timeout
    env = Env(tmp_path, subscribe=live.subscribe, poll_interval=3600, heartbeat=3600)
    with ServerThread(env.app) as base, httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
        with http.stream("GET", "/v1/events") as r:
            lines = r.iter_lines()
            next(lines)
            for _ in range(100):  # the subscription starts in the server's loop
                if live.queues:
                    break
                time.sleep(0.02)
            event = env.store.append_event("job-c", "status", FaxStatus.FS_DIALING)
            live.publish(event)
            events, _ = read_sse(lines, 1)
        assert events[0][1]["id"] == event.event_id


def test_stopping_the_server_ends_open_event_streams(tmp_path: Path) -> None:
    env = Env(tmp_path, poll_interval=3600, heartbeat=3600)
    server = ServerThread(env.app)
    base = server.__enter__()
    with httpx.Client(base_url=base, headers=AUTH, timeout=10) as http, http.stream("GET", "/v1/events") as r:
        lines = r.iter_lines()
        assert next(lines).startswith("retry:")
        server.__exit__(None, None, None)  # asserts the server thread ended
        assert list(lines)[-1:] in ([], [""])  # the stream ended cleanly instead of timing out


def test_cors_preflight_is_answered_for_configured_origins_only(tmp_path: Path) -> None:
    env = Env(tmp_path, config=ApiConfig(token=TOKEN, cors_origins=("http://127.0.0.1:3000",)))
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    r = env.client.options("/v1/jobs", headers={"Origin": "http://127.0.0.1:3000", **ask})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    r = env.client.options("/v1/jobs", headers={"Origin": "http://127.0.0.1:4000", **ask})
    assert "access-control-allow-origin" not in r.headers
    r = env.client.get("/v1/jobs", headers={"Origin": "http://127.0.0.1:3000"})
    assert r.status_code == 401  # CORS lets the browser ask; the token still decides


def test_serve_api_reports_a_port_it_cannot_take(tmp_path: Path) -> None:
    env = Env(tmp_path)
    with ServerThread(env.app) as base:
        port = int(base.rsplit(":", 1)[1])

        async def clash() -> None:
            await serve_api(env.app, f"127.0.0.1:{port}")

        with pytest.raises(OSError, match="cannot listen"):
            asyncio.run(clash())


# -- the CLI client ----------------------------------------------------------------------------------

cli = typer.Typer()
for name, fn in (
    ("jobs", jobs_command),
    ("status", status_command),
    ("cancel", cancel_command),
    ("submit", submit_command),
    ("faxes", faxes_command),
):
    cli.command(name)(fn)
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as the ids: the shared console took its width from the terminal at import."""
    monkeypatch.setattr(cli_common.out, "width", 200)
    monkeypatch.setattr(cli_common.err, "width", 400)  # and error lines unwrapped, whatever the tmp path


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_cli_submit_status_jobs_cancel_and_faxes_against_a_running_service(tmp_path: Path, pdf: Path) -> None:
    env = Env(tmp_path)
    fax = env.received_fax()
    with ServerThread(env.app) as base:
        common = ["--api", base, "--token", TOKEN]
        code, out, err = run_cli(
            "submit", str(pdf), "--to", "sip:1002@127.0.0.1", "--no-ecm", "--json", *common
        )
        assert code == 0, err
        job = json.loads(out)
        assert env.store.get(job["id"]).options == {"ecm": False}

        code, out, _ = run_cli("submit", str(pdf), "--to", "sip:1003@127.0.0.1", *common)
        assert code == 0 and "queued job" in out

        code, out, _ = run_cli("jobs", "--json", "--state", "queued", *common)
        assert code == 0 and len(json.loads(out)["jobs"]) == 2
        code, out, _ = run_cli("jobs", *common)
        assert code == 0 and job["id"] in out and "sip:1002@127.0.0.1" in out

        # token from the environment, as documented
        code, out, _ = run_cli("status", job["id"], "--api", base, env={"VFAX_API_TOKEN": TOKEN})
        assert code == 0 and "queued" in out

        code, out, _ = run_cli("cancel", job["id"], "--json", *common)
        assert code == 0 and json.loads(out)["state"] == "cancelled"
        code, out, err = run_cli("cancel", job["id"], *common)
        assert code == 1 and "already cancelled" in err

        code, out, _ = run_cli("status", job["id"], *common)
        assert code == 0 and "cancelled" in out and "user_abort" in out

        code, out, _ = run_cli("faxes", "--json", *common)
        assert code == 0 and [f["id"] for f in json.loads(out)["faxes"]] == [fax.id]
        code, out, _ = run_cli("faxes", *common)
        assert code == 0 and fax.id in out


def test_cli_errors_are_one_line_with_the_documented_exit_codes(tmp_path: Path, pdf: Path) -> None:
    env = Env(tmp_path)
    with ServerThread(env.app) as base:
        common = ["--api", base, "--token", TOKEN]
        code, _, err = run_cli("status", "01NOSUCHJOB", *common)
        assert code == 2 and "no job" in err
        code, _, err = run_cli("jobs", "--api", base, "--token", "wrong-token-0123456789")
        assert code == 2 and "refused the token" in err
        bad = docfactory.corrupt_pdf(tmp_path / "bad.pdf")
        code, _, err = run_cli("submit", str(bad), "--to", "sip:1@127.0.0.1", *common)
        assert code == 2 and "bad.pdf" in err
        code, _, err = run_cli("submit", str(pdf), "--to", "no spaces please", *common)
        assert code == 2 and "to:" in err
        code, _, err = run_cli("submit", str(tmp_path / "missing.pdf"), "--to", "sip:1@127.0.0.1", *common)
        assert code == 2 and "no such file" in err
        assert env.store.list() == []
        port = int(base.rsplit(":", 1)[1])
    # the server is gone: nothing listens on its port any more
    code, _, err = run_cli("jobs", "--api", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert code == 1 and f"vfax serve is not running at http://127.0.0.1:{port}" in err
    code, _, err = run_cli("jobs", "--api", "ftp://127.0.0.1:1")
    assert code == 2 and "--api must be" in err
