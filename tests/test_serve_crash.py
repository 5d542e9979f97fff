"""`vfax serve` killed with SIGKILL mid-fax, then restarted: nothing queued or received is lost.

Real processes, real calls on 127.0.0.1: the service under test runs as `python -m vfax.cli serve`,
the far end as `vfax receive` or `vfax send`. Counts and files are compared before and after.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory
from tests.serve_process import Receiver, ServeProcess, free_port, spawn, vfax_argv, wait_for, write_config
from vfax.documents import read_tiff_pages

TOKEN = "crash-test-token"


class Serve(ServeProcess):
    """`vfax serve` with its data and config in the test's folder (workers: the default)."""

    def __init__(self, tmp: Path) -> None:
        self.api_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        api = f"127.0.0.1:{self.api_port}"
        config = write_config(
            tmp, api=api, token=TOKEN, inbox=tmp / "data" / "inbox",
            retry={"max_attempts": 3, "backoff": [1, 1], "jitter": 0},
            device={"listen": f"127.0.0.1:{self.sip_port}", "channels": 2, "media_timeout": 5},
        )  # fmt: skip
        super().__init__("serve", config, api, TOKEN)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path)
    yield s
    s.stop()


def test_kill_9_while_sending_then_restart_retries_and_loses_nothing(tmp_path: Path, serve: Serve) -> None:
    far = Receiver("127.0.0.1", tmp_path)
    far_inbox = far.inbox
    try:
        serve.start()
        doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=2)
        with doc.open("rb") as f:
            fields = {"to": far.uri, "resolution": "standard"}
            r = serve.client.post(
                "/v1/jobs", data=fields, files={"document": ("doc.pdf", f, "application/pdf")}
            )
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        with doc.open("rb") as f:
            later = serve.client.post("/v1/jobs", data={"to": far.uri,
                                                        "not_before": "2099-01-01T00:00:00Z"},
                                      files={"document": ("doc.pdf", f, "application/pdf")})  # fmt: skip
        assert later.status_code == 201, later.text
        wait_for(lambda: any(e["type"] == "page" for e in serve.get(f"/v1/jobs/{job_id}")["events"]), 90,
                 "the first page was never confirmed")  # fmt: skip
        before = {j["id"]: j["state"] for j in serve.get("/v1/jobs")["jobs"]}
        serve.kill9()  # in the middle of page 2

        serve.start()

        def finished() -> Any:
            j = serve.get(f"/v1/jobs/{job_id}")
            return j if j["state"] in ("completed", "failed") else None

        job = wait_for(finished, 150, "the job was not finished after the restart")
        after = {j["id"]: j["state"] for j in serve.get("/v1/jobs")["jobs"]}
        assert set(after) == set(before)  # no job lost, none invented
        assert after[later.json()["id"]] == "queued"  # the scheduled job waits, untouched
        assert job["state"] == "completed" and job["attempts"] == 2, job
        assert [e["type"] for e in job["events"]].count("terminal") == 1

        # the far end got the whole fax on the retry (it places the files once the call has ended)
        def whole_fax() -> bool:
            faxes = far_inbox.glob("fax-*.tif")
            return any(len(read_tiff_pages(p)) == 2 and "partial" not in p.name for p in faxes)

        wait_for(whole_fax, 30, f"no complete 2-page fax in {sorted(far_inbox.iterdir())}")
    finally:
        far.close()


def test_kill_9_while_receiving_keeps_the_pages_received(tmp_path: Path, serve: Serve) -> None:
    serve.start()
    doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=3)
    sender = spawn(vfax_argv("send", str(doc), "--to", f"sip:fax@127.0.0.1:{serve.sip_port}", "--resolution",
                             "standard"), tmp_path / "send.log")  # fmt: skip
    try:
        fax = wait_for(lambda: [f for f in serve.get("/v1/faxes")["faxes"] if f["pages"] >= 1], 90,
                       "no page was received")[0]  # fmt: skip
        assert fax["state"] == "receiving"  # recorded before the answer, updated per page
        serve.kill9()
        inbox = tmp_path / "data" / "inbox"
        parts = list(inbox.glob(".rx-*.tif.part"))
        assert len(parts) == 1  # the reception in progress, on disk

        serve.start()
        after = serve.get(f"/v1/faxes/{fax['id']}")
        assert after["state"] == "partial" and after["pages"] >= 1, after
        assert [e["type"] for e in after["events"]].count("terminal") == 1
        kept = sorted(inbox.glob("fax-*-partial.tif"))
        assert len(kept) == 1 and len(read_tiff_pages(kept[0])) >= after["pages"] >= 1
        pdf = serve.client.get(f"/v1/faxes/{fax['id']}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert not list(inbox.glob(".rx-*.tif.part"))  # salvaged, not left behind
    finally:
        sender.kill()
        sender.wait(10)
