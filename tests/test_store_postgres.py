"""What only the PostgreSQL store has: several nodes claiming at once, LISTEN/NOTIFY, a server restart,
schema refusal, files in the database. The shared contract runs in tests/test_jobstore.py on both stores.

Every test gets a fresh database of a real PostgreSQL server (fixture ``postgres``, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.conftest import PostgresDatabase
from vfax.status import FaxStatus
from vfax.store import open_store
from vfax.store.async_store import AsyncJobStore
from vfax.store.model import JobState, SchemaError, StoreUnavailableError
from vfax.store.postgres import _EVENTS_LOCK, MIGRATIONS, SCHEMA_VERSION, PostgresJobStore
from vfax.store.retry import AttemptResult, RetryPolicy


def _doc(tmp_path: Path, name: str = "a.tif", data: bytes = b"II*\x00page") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


# -- several nodes --------------------------------------------------------------------------------------


def test_two_nodes_claim_1000_jobs_each_exactly_once(postgres: PostgresDatabase, tmp_path: Path) -> None:
    document = _doc(tmp_path)
    nodes = [PostgresJobStore(postgres.url, owner=f"node-{n}", pool_max=2) for n in "ab"]
    try:
        queued = {nodes[0].submit(document, f"sip:{i}@127.0.0.1").id for i in range(1000)}
        taken: list[list[str]] = [[], []]
        latency: list[float] = []
        start = threading.Barrier(2)

        def worker(n: int) -> None:
            start.wait()
            while True:
                t0 = time.perf_counter()
                job = nodes[n].claim_next()
                latency.append(time.perf_counter() - t0)
                if job is None:
                    return
                assert job.lease_owner == f"node-{'ab'[n]}"
                taken[n].append(job.id)
                nodes[n].record_attempt_result(job.id, AttemptResult(FaxStatus.FS_COMPLETED, pages=1))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = taken[0] + taken[1]
        assert len(everything) == len(set(everything)) == 1000 and set(everything) == queued
        assert taken[0] and taken[1]  # both nodes did work
        assert nodes[1].count() == {"completed": 1000}
        with psycopg.connect(postgres.url) as conn:
            per_job = conn.execute(
                "SELECT job_id, COUNT(*) FILTER (WHERE terminal), COUNT(*) FROM events GROUP BY job_id"
            ).fetchall()
        assert {row[0] for row in per_job} == queued
        assert all(row[1] == 1 and row[2] == 1 for row in per_job)
        ms = sorted(x * 1000 for x in latency)
        split = f"{len(taken[0])}/{len(taken[1])}"
        print(
            f"\nclaim latency, 2 nodes, 1000 jobs: p50 {statistics.median(ms):.2f} ms,"
            f" p95 {ms[int(len(ms) * 0.95)]:.2f} ms, max {ms[-1]:.2f} ms (split {split})"
        )
    finally:
        for node in nodes:
            node.close()


def test_nodes_opening_an_empty_database_together_migrate_it_once(postgres: PostgresDatabase) -> None:
    opened: list[PostgresJobStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def node() -> None:
        start.wait()
        try:
            opened.append(PostgresJobStore(postgres.url, pool_max=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in opened:
        store.close()
    assert errors == [] and len(opened) == 4
    with psycopg.connect(postgres.url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


# -- LISTEN/NOTIFY --------------------------------------------------------------------------------------


def test_an_idle_node_wakes_when_another_submits(postgres: PostgresDatabase, tmp_path: Path) -> None:
    document = _doc(tmp_path)
    idle = AsyncJobStore(PostgresJobStore(postgres.url, owner="idle"))
    busy = PostgresJobStore(postgres.url, owner="busy")

    async def scenario() -> tuple[bool, bool, float, bool]:
        nothing = await idle.wait_for_jobs(0.3)  # no job submitted: times out
        loop = asyncio.get_running_loop()
        submitted = asyncio.Event()

        def submit_later() -> None:
            time.sleep(0.2)
            busy.submit(document, "sip:1@127.0.0.1")
            loop.call_soon_threadsafe(submitted.set)

        thread = threading.Thread(target=submit_later)
        t0 = time.perf_counter()
        thread.start()
        woken = await idle.wait_for_jobs(30.0)
        waited = time.perf_counter() - t0
        thread.join()
        claimed = await idle.claim_next()
        await idle.close()
        return nothing, woken, waited, claimed is not None and submitted.is_set()

    try:
        nothing, woken, waited, claimed = asyncio.run(scenario())
    finally:
        busy.close()
    print(f"\nwoken {waited * 1000:.0f} ms after waiting (the submit came after 200 ms)")
    assert nothing is False
    assert woken is True and claimed  # True means notified: a timeout returns False after 30 s


def test_a_requeue_also_wakes_idle_nodes(postgres: PostgresDatabase, tmp_path: Path) -> None:
    node = PostgresJobStore(postgres.url, owner="a", policy=RetryPolicy(jitter=0.0))
    idle = AsyncJobStore(PostgresJobStore(postgres.url, owner="b"))
    job = node.submit(_doc(tmp_path), "sip:1@127.0.0.1")
    node.claim_next()

    async def scenario() -> bool:
        assert await idle.wait_for_jobs(0.2) is False  # the submit happened before LISTEN: not seen
        waiting = asyncio.create_task(idle.wait_for_jobs(30.0))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(node.record_attempt_result, job.id, AttemptResult(FaxStatus.FS_BUSY))
        woken = await waiting
        await idle.close()
        return woken

    try:
        assert asyncio.run(scenario()) is True
        assert node.get(job.id).state is JobState.QUEUED
    finally:
        node.close()


# -- failures -------------------------------------------------------------------------------------------


def test_a_postgres_restart_is_reported_then_survived(postgres: PostgresDatabase, tmp_path: Path) -> None:
    url = _with_password(postgres.url, "hunter2")  # trust authentication ignores it; messages must hide it
    store = PostgresJobStore(url, owner="n1", connect_timeout=2.0)
    try:
        job = store.submit(_doc(tmp_path), "sip:1@127.0.0.1")
        fax = store.record_inbound(call_id="c", caller="1", callee="2", device="d")
        postgres.server.stop()
        for call in (
            lambda: store.get(job.id),
            lambda: store.claim_next(),
            lambda: store.submit(_doc(tmp_path, "b.tif"), "sip:2@127.0.0.1"),
            lambda: store.heartbeat("n1", lease_seconds=60),
        ):
            with pytest.raises(StoreUnavailableError) as err:
                call()
            assert _address(postgres.url) in str(err.value) and "hunter2" not in str(err.value)
        postgres.server.start()
        # the same object again, without reopening: the pool replaced its dead connections
        assert store.get(job.id).state is JobState.QUEUED
        claimed = store.claim_next()
        assert claimed is not None and claimed.id == job.id
        assert store.get_inbound(fax.id).call_id == "c"
        assert [j.id for j in store.list()] == [job.id]  # nothing lost, nothing half-written
    finally:
        postgres.server.start()
        store.close()


def test_an_unreachable_database_at_open_names_its_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql://vfax:hunter2@127.0.0.1:{port}/vfaxdb"
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}/vfaxdb") as err:
        open_store(url, owner="n1")
    assert "hunter2" not in str(err.value)


def test_a_newer_schema_is_refused_and_left_untouched(postgres: PostgresDatabase, tmp_path: Path) -> None:
    with PostgresJobStore(postgres.url) as store:
        job = store.submit(_doc(tmp_path), "sip:1@127.0.0.1")
    with psycopg.connect(postgres.url) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 'from the future', 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError, match=rf"newer.*\({SCHEMA_VERSION}\)"):
        open_store(postgres.url)
    with pytest.raises(SchemaError, match="newer"):  # also older code against today's schema
        PostgresJobStore(postgres.url, migrations=MIGRATIONS[:0])
    with psycopg.connect(postgres.url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [*range(1, SCHEMA_VERSION + 1), SCHEMA_VERSION + 1]
        assert conn.execute("SELECT state FROM jobs WHERE id = %s", (job.id,)).fetchone() == ("queued",)


def test_the_database_itself_rejects_a_second_terminal_row(postgres: PostgresDatabase) -> None:
    with PostgresJobStore(postgres.url) as store:
        store.append_event("job-x", "terminal", FaxStatus.FS_COMPLETED)
    with psycopg.connect(postgres.url) as conn, pytest.raises(psycopg.errors.UniqueViolation) as err:
        conn.execute(
            "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal)"
            " VALUES ('job-x', 99, 'terminal', 1, '{}', 0, true)"
        )
    assert err.value.diag.constraint_name == "events_one_terminal"


# -- files ----------------------------------------------------------------------------------------------


def test_files_round_trip_through_the_database(postgres: PostgresDatabase, tmp_path: Path) -> None:
    document = _doc(tmp_path, data=b"II*\x00" + bytes(range(256)) * 300)
    node_a = open_store(postgres.url, owner="a")
    node_b = open_store(postgres.url, owner="b")
    try:
        assert node_a.holds_files and isinstance(node_a, PostgresJobStore)
        job = node_a.submit(document, "sip:1@127.0.0.1")  # the document travels with the job
        fetched = node_b.fetch_file(job.id, "document", tmp_path / "b" / "doc.tif")
        assert fetched == tmp_path / "b" / "doc.tif" and fetched.read_bytes() == document.read_bytes()

        fax = node_b.record_inbound(call_id="c", caller="1", callee="2", device="d")
        node_b.store_file(fax.id, "tiff", _doc(tmp_path, "in.tif", b"first"))
        node_b.store_file(fax.id, "tiff", _doc(tmp_path, "in.tif", b"second, longer"))  # replaces
        dest = tmp_path / "a" / "fax.tif"
        dest.parent.mkdir()
        dest.write_bytes(b"old content")
        assert node_a.fetch_file(fax.id, "tiff", dest) == dest and dest.read_bytes() == b"second, longer"
        assert sorted(p.name for p in dest.parent.iterdir()) == ["fax.tif"]  # no temporary left behind
        assert node_a.fetch_file(fax.id, "pdf", tmp_path / "a" / "fax.pdf") is None
        assert not (tmp_path / "a" / "fax.pdf").exists()

        # bytes that no longer match their checksum are refused and the destination is left alone
        with psycopg.connect(postgres.url) as conn:
            conn.execute("UPDATE files SET data = 'xxxxxxxxxxxxxx' WHERE owner_id = %s", (fax.id,))
        with pytest.raises(StoreUnavailableError, match="checksum"):
            node_a.fetch_file(fax.id, "tiff", dest)
        assert dest.read_bytes() == b"second, longer"
        assert sorted(p.name for p in dest.parent.iterdir()) == ["fax.tif"]
    finally:
        node_a.close()
        node_b.close()


def test_an_attempts_call_report_kept_by_one_node_is_served_by_another(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    """What the controller does at the end of an attempt (store_file under the attempt's owner id) and
    what another node's API does to serve ``/v1/jobs/{id}/attempts/{n}/report`` (AttemptReports)."""
    from vfax.service.api import AttemptReports, _Files
    from vfax.storage import attempt_report_owner, attempt_report_path, write_json

    node_a = open_store(postgres.url, owner="a")
    node_b = open_store(postgres.url, owner="b")
    try:
        job = node_b.submit(_doc(tmp_path), "sip:1@127.0.0.1")
        kept = write_json(attempt_report_path(tmp_path / "b" / "reports", job.id, 1), {"call_id": "c1"})
        node_b.store_file(attempt_report_owner(job.id, 1), "report", kept)
        reports_a = AttemptReports(tmp_path / "a" / "reports", _Files(tmp_path / "a" / "inbox", node_a,
                                                                      tmp_path / "a" / "cache"))  # fmt: skip
        served = reports_a.get(job.id, 1)
        assert served is not None and served.read_bytes() == kept.read_bytes()
        assert reports_a.get(job.id, 2) is None
    finally:
        node_a.close()
        node_b.close()


def test_a_fax_deleted_through_another_node_is_removed_from_the_disk_of_the_node_that_received_it(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    """Node B received the fax (its inbox on its own host); node A's API deletes it. A cannot reach B's
    files, so the store keeps their paths; B's next sweep removes them and forgets the paths; A's sweep
    drops the page images A had cached. Nothing of the fax is left on either node."""
    from vfax.service.cleanup import sweep_deleted_faxes
    from vfax.status import FaxStatus

    node_a = open_store(postgres.url, owner="a")
    node_b = open_store(postgres.url, owner="b")
    a_inbox, b_inbox = tmp_path / "a" / "inbox", tmp_path / "b" / "inbox"
    a_cache, b_cache = tmp_path / "a" / "cache", tmp_path / "b" / "cache"
    try:
        fax = node_b.record_inbound(call_id="c", caller="1", callee="2", device="d")
        node_b.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1)
        b_inbox.mkdir(parents=True)
        files = [_doc(b_inbox, f"fax.{kind}", b"received") for kind in ("tif", "pdf", "json")]
        node_b.place_inbound_files(fax.id, tiff_path=files[0], pdf_path=files[1], report_path=files[2])
        (a_cache / "pages" / fax.id).mkdir(parents=True)  # A's API had rendered its pages
        (a_cache / "pages" / fax.id / "1-800-0.png").write_bytes(b"png")

        node_a.delete_inbound(fax.id)  # through A's API: B's paths stay recorded for B
        assert node_a.get_inbound(fax.id).tiff_path == str(files[0])
        assert sweep_deleted_faxes(node_a, inbox=a_inbox, cache=a_cache, now=time.time()) == 1
        assert not (a_cache / "pages" / fax.id).exists() and all(f.exists() for f in files)

        assert sweep_deleted_faxes(node_b, inbox=b_inbox, cache=b_cache, now=time.time()) == 3
        assert not any(f.exists() for f in files)
        gone = node_a.get_inbound(fax.id)
        assert (gone.tiff_path, gone.pdf_path, gone.report_path) == (None, None, None)
        assert sweep_deleted_faxes(node_b, inbox=b_inbox, cache=b_cache, now=time.time()) == 0
    finally:
        node_a.close()
        node_b.close()


def test_a_document_that_cannot_be_read_is_refused_and_nothing_is_queued(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    with PostgresJobStore(postgres.url) as store:
        with pytest.raises(ValueError, match=r"missing\.tif"):
            store.submit(tmp_path / "missing.tif", "sip:1@127.0.0.1")
        assert store.list() == [] and Counter(store.count()) == Counter()


# -- the outbox across nodes ----------------------------------------------------------------------------


def test_an_event_committed_late_by_another_node_is_not_skipped_by_the_outbox(
    postgres: PostgresDatabase,
) -> None:
    """Event ids come from a sequence: without ordering, a node that took id n and commits after another
    node's n+1 would be passed over by a reader that has already settled everything up to n+1."""
    store = PostgresJobStore(postgres.url)
    slow = psycopg.connect(postgres.url)  # another node, in the middle of a transaction that writes an event
    try:
        first = store.pending_events("sink", now=0.0)
        assert first.items == [] and first.settled_through == 0
        slow.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENTS_LOCK,))  # as every event writer does
        slow.execute(
            "INSERT INTO events (job_id, seq, type, status, payload, created_at, terminal)"
            " VALUES ('job-slow', 1, 'status', %s, '{}', 0, false)",
            (int(FaxStatus.FS_DIALING),),
        )
        fast = threading.Thread(target=store.append_event, args=("job-fast", "status", FaxStatus.FS_DIALING))
        fast.start()
        fast.join(0.5)  # give it every chance to commit first (it must not be able to)
        seen: list[str] = []
        after = 0
        batch = store.pending_events("sink", now=0.0, after_id=after)
        seen += [item.event.job_id for item in batch.items]
        after = max(after, batch.settled_through)
        slow.commit()
        fast.join()
        batch = store.pending_events("sink", now=0.0, after_id=after)
        seen += [item.event.job_id for item in batch.items]
        assert seen == ["job-slow", "job-fast"]
    finally:
        slow.close()
        store.close()


def test_a_url_that_does_not_parse_is_refused_naming_database() -> None:
    for url, why in (
        ("postgresql://vfax:hunter2@[::1/vfax", "not a valid PostgreSQL URL"),
        ("postgresql://vfax:hunter2@127.0.0.1:abc/vfax", "port must be 1..65535"),
        ("postgres://vfax:hunter2@127.0.0.1:70000/vfax", "port must be 1..65535"),
    ):
        with pytest.raises(ValueError, match="database") as err:
            open_store(url)
        assert why in str(err.value) and "hunter2" not in str(err.value), str(err.value)
