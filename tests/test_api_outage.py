"""The event stream while the job store (a real PostgreSQL) is down: new streams are refused with 503 and
the reason; an open stream stays open and goes on from where it was once the database is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.test_api import AUTH, TOKEN, ServerThread, read_sse
from vfax.service.api import create_app
from vfax.service.config import ApiConfig
from vfax.status import FaxStatus
from vfax.store.postgres import PostgresJobStore


def test_event_stream_during_a_database_outage(tmp_path: Path, postgres: Any) -> None:
    store = PostgresJobStore(postgres.url, connect_timeout=2.0)
    app = create_app(
        store, ApiConfig(token=TOKEN), inbox_dir=tmp_path / "inbox", spool_dir=tmp_path / "spool",
        wake=lambda: None, poll_interval=0.1, heartbeat=3600,
    )  # fmt: skip
    before = store.append_event("job-a", "status", FaxStatus.FS_DIALING)
    try:
        with (
            ServerThread(app) as base,
            httpx.Client(base_url=base, headers=AUTH, timeout=30) as http,
            http.stream("GET", "/v1/events", params={"after": 0}) as r,
        ):
            assert r.status_code == 200
            lines = r.iter_lines()
            events, _ = read_sse(lines, 1)
            assert events[0][1]["id"] == before.event_id
            number = events[0][0]

            postgres.server.stop()
            # the open stream says why it is quiet, and stays open
            notes = []
            for line in lines:
                if line.startswith(": store unavailable"):
                    notes.append(line)
                    break
            assert "127.0.0.1" in notes[0], notes

            # a new stream is refused with the reason, whatever its starting point
            for ask in ({"params": {"after": 0}}, {"headers": {"Last-Event-ID": str(number)}}, {}):
                refused = http.get("/v1/events", **ask)  # type: ignore[arg-type]
                assert refused.status_code == 503, (ask, refused.text)
                assert refused.json()["error"] == "store_unavailable"
                assert refused.headers["retry-after"] == "5"

            postgres.server.start()
            after = store.append_event("job-a", "status", FaxStatus.FS_TRANSMITTING)
            events, comments = read_sse(lines, 1)
            # the same stream goes on with the next event: nothing skipped, nothing repeated
            assert [e["id"] for _, e in events] == [after.event_id]
            assert ": store available again" in comments
    finally:
        store.close()
