"""`vfax serve` as a node: the `database` setting, start-up refusals, `GET /v1/nodes` / `vfax nodes`, and
two nodes on one PostgreSQL database sharing the queue (each job sent once, either API lists both nodes,
503 with the reason while PostgreSQL is down).

Real processes on 127.0.0.1: the nodes are `python -m vfax.cli serve`, the far ends `vfax receive`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import docfactory
from tests.serve_process import (
    ROOT,
    Receiver,
    ServeProcess,
    free_port,
    spawn,
    vfax_argv,
    wait_for,
    write_config,
)

TOKEN = "nodes-test-token-0123"


class Node(ServeProcess):
    """One `vfax serve` (one process: VFAX_WORKERS=1) with its own data directory, API and SIP ports."""

    def __init__(self, tmp: Path, name: str, database: str | None = None, *, channels: int = 2) -> None:
        self.api_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        api = f"127.0.0.1:{self.api_port}"
        (tmp / name).mkdir()
        config = write_config(
            tmp / name, api=api, token=TOKEN, database=database,
            retry={"max_attempts": 2, "backoff": [1], "jitter": 0},
            service={"lease_seconds": 6, "heartbeat_seconds": 0.5, "give_up_seconds": 3},
            device={"listen": f"127.0.0.1:{self.sip_port}", "channels": channels, "media_timeout": 5},
        )  # fmt: skip
        super().__init__(name, config, api, TOKEN, env={"VFAX_WORKERS": "1"})


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str, database: str | None = None, **kw: Any) -> Node:
        node = Node(tmp_path, name, database, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def serve_refused(node: Node, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start a `vfax serve` that must refuse: its exit code and its output on one line."""
    node.start({"COLUMNS": "500", **(env or {})}, wait=False)
    assert node.proc is not None
    code = node.proc.wait(60)
    return code, " ".join(node.output().split())


# -- the database setting and start-up refusals ---------------------------------------------------------


def test_bad_database_values_stop_serve_with_a_clear_error(
    nodes: Callable[..., Node], tmp_path: Path
) -> None:
    # not a PostgreSQL URL nor a SQLite path: the key is named, exit 2, no traceback
    code, text = serve_refused(nodes("mysql", "mysql://vfax@127.0.0.1/vfax"))
    assert code == 2 and "database: must be a SQLite file path or a PostgreSQL URL" in text, text
    assert "Traceback" not in text
    # a PostgreSQL URL nobody answers at (what used to be a raw sqlite3.OperationalError): the address
    port = free_port()
    code, text = serve_refused(nodes("pg-down", f"postgresql://vfax:secret-pw@127.0.0.1:{port}/vfax"))
    assert code == 1 and "database: cannot reach" in text and f"127.0.0.1:{port}" in text, text
    assert "Traceback" not in text and "secret-pw" not in text and "OperationalError" not in text
    # a directory where the SQLite file should be
    (tmp_path / "adir").mkdir()
    code, text = serve_refused(nodes("dir", str(tmp_path / "adir")))
    assert code == 2 and "database:" in text and "is a directory" in text, text
    # a file that is not a SQLite database: refused, and left as it was
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just bytes " * 100)
    code, text = serve_refused(nodes("junk", str(junk)))
    assert code == 2 and "database" in text and "Traceback" not in text, text
    assert junk.read_bytes() == b"not a database, just bytes " * 100


def test_a_database_of_a_newer_schema_is_refused_and_left_alone(
    nodes: Callable[..., Node], tmp_path: Path
) -> None:
    import sqlite3

    from vfax.store.sqlite import SqliteJobStore

    db = tmp_path / "newer.db"
    SqliteJobStore(db).close()
    with sqlite3.connect(db) as conn:  # a later vfax migrated it further
        conn.execute("INSERT INTO schema_version VALUES (999, 'from the future', 0)")

    def contents() -> list[Any]:
        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
            return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for (t,) in tables.fetchall()]

    before = contents()
    code, text = serve_refused(nodes("newer", str(db)))
    assert code == 2 and "database:" in text and "newer than this vfax" in text and "Traceback" not in text
    assert contents() == before


def test_single_sqlite_node_lists_itself_and_its_heartbeat_advances(nodes: Callable[..., Node]) -> None:
    node = nodes("solo")
    node.start({"VFAX_NODE_ID": "solo-node"})
    first = wait_for(lambda: node.get("/v1/nodes")["nodes"], 10, "no node listed")
    assert [n["id"] for n in first] == ["solo-node"]
    me = first[0]
    assert me["state"] == "up" and me["api"] == f"http://127.0.0.1:{node.api_port}"
    assert [d["name"] for d in me["devices"]] == ["line1"] and me["registrations"] == {"line1": "none"}
    assert me["calls"] == []
    wait_for(
        lambda: node.get("/v1/nodes")["nodes"][0]["heartbeat_at"] > me["heartbeat_at"],
        10,
        "the heartbeat did not advance",
    )
    # the CLI lists it too
    out = subprocess.run(
        [sys.executable, "-m", "vfax.cli", "nodes", "--api", f"http://127.0.0.1:{node.api_port}",
         "--token", TOKEN, "--json"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [n["id"] for n in json.loads(out.stdout)["nodes"]] == ["solo-node"]
    table = subprocess.run(
        [sys.executable, "-m", "vfax.cli", "nodes", "--api", f"http://127.0.0.1:{node.api_port}",
         "--token", TOKEN],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"), capture_output=True, timeout=30,
    )  # fmt: skip
    assert table.returncode == 0 and b"solo-node" in table.stdout and b"up" in table.stdout
    node.stop()
    # a clean stop leaves the node "stopped" in the store
    from vfax.store.sqlite import SqliteJobStore

    store = SqliteJobStore(node.dir / "data" / "vfax.db")
    try:
        assert [(n.id, n.state) for n in store.list_nodes()] == [("solo-node", "stopped")]
    finally:
        store.close()


# -- PostgreSQL: nodes sharing one database --------------------------------------------------------------


def test_a_live_node_id_is_refused_on_the_same_database(nodes: Callable[..., Node], postgres: Any) -> None:
    a = nodes("a", postgres.url)
    a.start({"VFAX_NODE_ID": "twin"})
    code, text = serve_refused(nodes("b", postgres.url), {"VFAX_NODE_ID": "twin"})
    assert code == 2 and "service.node_id" in text and "twin" in text and "Traceback" not in text, text
    assert [n["id"] for n in a.get("/v1/nodes")["nodes"]] == ["twin"]


def test_two_nodes_share_the_queue_send_each_job_once_and_list_each_other(
    nodes: Callable[..., Node], postgres: Any, tmp_path: Path
) -> None:
    far = [Receiver("127.0.0.1", tmp_path, name=f"far{i}") for i in range(2)]
    a = nodes("a", postgres.url, channels=2)
    b = nodes("b", postgres.url, channels=2)
    try:
        a.start({"VFAX_NODE_ID": "node-a"})
        b.start({"VFAX_NODE_ID": "node-b"})
        for n in (a, b):  # either node lists both
            listed = wait_for(lambda n=n: len(n.get("/v1/nodes")["nodes"]) == 2 and n.get("/v1/nodes"), 10,
                              "both nodes not listed")  # fmt: skip
            assert {(x["id"], x["state"]) for x in listed["nodes"]} == {("node-a", "up"), ("node-b", "up")}
        doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=1)
        jobs = []
        due = time.time() + 3
        for i in range(4):  # all submitted through node A's API, due in a few seconds
            with doc.open("rb") as f:
                r = a.client.post(
                    "/v1/jobs",
                    data={"to": far[i % 2].uri, "resolution": "standard",
                          "not_before": str(due)},
                    files={"document": ("doc.pdf", f, "application/pdf")},
                )  # fmt: skip
            assert r.status_code == 201, r.text
            jobs.append(r.json()["id"])
        # node A's spool is gone before any job is due: whoever sends fetches the document from the database
        spool = a.dir / "data" / "spool"
        for entry in spool.iterdir():
            shutil.rmtree(entry)
        final = wait_for(
            lambda: all(b.get(f"/v1/jobs/{j}")["state"] in ("completed", "failed") for j in jobs) and jobs,
            240,
            f"jobs not finished:\n{a.output()[-3000:]}\n{b.output()[-3000:]}",
        )
        details = [b.get(f"/v1/jobs/{j}") for j in final]
        assert [d["state"] for d in details] == ["completed"] * 4, details
        assert all(d["attempts"] == 1 for d in details)
        assert all([e["type"] for e in d["events"]].count("terminal") == 1 for d in details)
        # exactly one fax per job arrived at the far ends, and both nodes did some of the sending
        def received() -> int:  # the far end places a fax once its call has ended, after phase E
            return sum(len(list(r.inbox.glob("fax-*.tif"))) for r in far)

        wait_for(lambda: received() >= 4, 30, "the far ends did not place 4 faxes")
        time.sleep(1)
        assert received() == 4
        senders = {line.split("node ")[1].split()[0] for n in (a, b) for line in n.output().splitlines()
                   if "claimed by node" in line}  # fmt: skip
        assert senders == {"node-a", "node-b"}, senders
        assert all("document fetched from the store" in n.output() for n in (a, b))

        # a fax received by node B is served by node A's API (from the database)
        sent = subprocess.run(
            [sys.executable, "-m", "vfax.cli", "send", str(doc), "--to", f"sip:fax@127.0.0.1:{b.sip_port}",
             "--resolution", "standard"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        fax = wait_for(
            lambda: [f for f in a.get("/v1/faxes")["faxes"] if f["state"] == "completed" and f["has_pdf"]],
            30, "node A does not list the fax node B received",
        )[0]  # fmt: skip
        assert fax["device"] == "line1" and fax["pages"] == 1
        pdf = a.client.get(f"/v1/faxes/{fax['id']}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        tif = a.client.get(f"/v1/faxes/{fax['id']}/tiff")
        assert tif.status_code == 200
        assert tif.content == next((b.dir / "data" / "inbox").glob("fax-*.tif")).read_bytes()
        # its page images too (the console's inbox): a standard page, 204 x 98 per inch, drawn in proportion
        pages = a.get(f"/v1/faxes/{fax['id']}/pages")
        assert pages["count"] == 1 and (pages["pages"][0]["x_dpi"], pages["pages"][0]["y_dpi"]) == (204, 98)
        page = pages["pages"][0]
        thumb = a.client.get(f"/v1/faxes/{fax['id']}/pages/1.png", params={"width": 160, "rotate": 90})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(thumb.content)) as im:  # turned: as wide as the page is tall
            assert im.size == (round(page["height_px"] * 204 / 98 * 160 / page["width_px"]), 160)

        # PostgreSQL stops: the API answers 503 with the reason; after the restart it answers again
        postgres.server.stop()
        r = a.client.get("/v1/jobs")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["error"] == "store_unavailable" and "127.0.0.1" in body["detail"], body
        assert b.client.get("/v1/nodes").status_code == 503
        postgres.server.start()
        wait_for(lambda: a.client.get("/v1/jobs").status_code == 200, 30, "node A did not recover")
        wait_for(lambda: b.client.get("/v1/nodes").status_code == 200, 30, "node B did not recover")
        listed = wait_for(
            lambda: [n["state"] for n in a.get("/v1/nodes")["nodes"]] == ["up", "up"], 30,
            f"nodes not up again after the restart: {a.get('/v1/nodes')}",
        )  # fmt: skip
        assert listed
    finally:
        for r in far:
            r.close()


def test_a_node_cut_off_from_the_database_aborts_its_call_and_leaves_the_result_to_the_retry(
    nodes: Callable[..., Node], postgres: Any, tmp_path: Path
) -> None:
    far = Receiver("127.0.0.1", tmp_path)
    a = nodes("a", postgres.url)
    try:
        a.start({"VFAX_NODE_ID": "node-a"})
        doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=3)
        with doc.open("rb") as f:
            fields = {"to": far.uri, "resolution": "standard"}
            r = a.client.post("/v1/jobs", data=fields, files={"document": ("doc.pdf", f, "application/pdf")})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(
            lambda: any(e["status"] == "transmitting" for e in a.get(f"/v1/jobs/{job_id}")["events"]),
            30, "the call did not start",
        )  # fmt: skip
        postgres.server.stop()  # the node loses its database mid-fax: after give_up_seconds it must stop
        wait_for(lambda: "gives up its outgoing calls" in a.output(), 30, "the node did not give up")
        wait_for(lambda: "not recorded (the node that retries" in a.output(), 30, "the call was not aborted")
        postgres.server.start()
        job = wait_for(
            lambda: (j := a.get(f"/v1/jobs/{job_id}"))["state"] in ("completed", "failed") and j,
            180, f"the job did not finish after the database came back:\n{a.output()[-3000:]}",
        )  # fmt: skip
        assert job["state"] == "completed" and job["attempts"] == 2, job
        statuses = [(e["type"], e["status"]) for e in job["events"]]
        assert [s for s in statuses if s[0] == "terminal"] == [("terminal", "completed")]
        assert ("status", "user_abort") not in statuses and ("terminal", "user_abort") not in statuses
        assert "job " + job_id + " abandoned (call aborted)" in a.output()
        assert [n["state"] for n in a.get("/v1/nodes")["nodes"]] == ["up"]
    finally:
        far.close()


def test_pages_received_before_a_node_dies_are_in_the_database_and_served_by_another_node(
    nodes: Callable[..., Node], postgres: Any, tmp_path: Path
) -> None:
    from vfax.documents import read_tiff_pages

    b = nodes("b", postgres.url)
    b.start({"VFAX_NODE_ID": "node-b"})
    doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=3)
    sender = spawn(vfax_argv("send", str(doc), "--to", f"sip:fax@127.0.0.1:{b.sip_port}", "--resolution",
                             "standard"), tmp_path / "send.log")  # fmt: skip
    try:
        fax = wait_for(
            lambda: [f for f in b.get("/v1/faxes")["faxes"] if f["pages"] >= 1], 90,
            "node B did not receive a page",
        )[0]  # fmt: skip
        time.sleep(0.5)  # the page's TIFF goes to the database right after the page (a store write)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGKILL)  # node B dies mid-reception
        b.proc.wait(10)
    finally:
        sender.terminate()
        sender.wait(30)
    a = nodes("a", postgres.url)
    a.start({"VFAX_NODE_ID": "node-a"})
    # node B's lease runs out; node A settles the reception as partial and serves its pages
    after = wait_for(
        lambda: (f := a.get(f"/v1/faxes/{fax['id']}"))["state"] != "receiving" and f, 60,
        "the dead node's reception was not settled",
    )  # fmt: skip
    assert after["state"] == "partial" and after["pages"] >= 1 and after["has_tiff"], after
    r = a.client.get(f"/v1/faxes/{fax['id']}/tiff")
    assert r.status_code == 200, r.text
    (tmp_path / "got.tif").write_bytes(r.content)
    assert len(read_tiff_pages(tmp_path / "got.tif")) >= 1
    states = {n["id"]: n["state"] for n in a.get("/v1/nodes")["nodes"]}
    assert states == {"node-a": "up", "node-b": "lost"}, states
