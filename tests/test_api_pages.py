"""What the console's inbox and send form need from the API: page images (received faxes, queued jobs,
previews before queueing), marking faxes read and deleting them. Against a real SQLite store, real TIFF
files (written by the test's own factory or by vfax's document conversion) and the real converter, in a
spawned process where the service uses one. (Read/delete on PostgreSQL: the store contract tests.)"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import docfactory
from tests.test_api import AUTH, Env
from vfax import documents
from vfax.service.converter import DocumentConverter
from vfax.service.pages import Previews
from vfax.status import FaxStatus

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def png(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def dark_box(image: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the pixels darker than mid-gray."""
    box = image.convert("L").point(lambda v: 255 if v < 128 else 0).getbbox()
    assert box is not None
    return box


def received(env: Env, tiff: Path, pages: int) -> str:
    fax = env.store.record_inbound(
        call_id="c@127.0.0.1", caller="sip:1@127.0.0.1", callee="sip:2@127.0.0.1", device="line1"
    )
    env.store.update_inbound(fax.id, pages=pages, tiff_path=tiff)
    env.store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=pages)
    return fax.id


# -- received faxes ----------------------------------------------------------------------------------


def test_fax_pages_lists_each_page_with_its_size_and_resolution(env: Env) -> None:
    fax_id = received(env, docfactory.fax_tiff(env.inbox / "std.tif", y_dpi=98, pages=2), 2)
    r = env.client.get(f"/v1/faxes/{fax_id}/pages", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 2 and [p["number"] for p in body["pages"]] == [1, 2]
    page = body["pages"][0]
    assert (page["width_px"], page["height_px"], page["x_dpi"], page["y_dpi"]) == (1728, 1146, 204, 98)
    assert page["width_mm"] == pytest.approx(215.1, abs=0.1)
    assert page["height_mm"] == pytest.approx(297, abs=0.1)


@pytest.mark.parametrize("y_dpi", [98, 196, 391])
def test_a_fax_page_png_has_the_true_proportions_of_the_page(env: Env, y_dpi: int) -> None:
    """The 1 x 1 inch black square of the page (204 x 98 pixels at standard resolution) comes out square,
    and an A4 page as tall as A4 is for its width."""
    fax_id = received(env, docfactory.fax_tiff(env.inbox / f"f{y_dpi}.tif", y_dpi=y_dpi), 1)
    image = png(env.client.get(f"/v1/faxes/{fax_id}/pages/1.png", params={"width": 864}, headers=AUTH))
    assert image.width == 864
    assert image.height == pytest.approx(864 * 297 / 215.1, abs=2)  # A4 at 8.47 inches wide
    left, top, right, bottom = dark_box(image.crop((0, 0, 300, 300)))
    assert right - left == pytest.approx(102, abs=2)  # 1 inch at 864/8.47 px per inch
    assert bottom - top == pytest.approx(right - left, abs=2)
    assert (left, top) == (pytest.approx(102, abs=2), pytest.approx(102, abs=2))


def test_default_width_and_a_thumbnail(env: Env) -> None:
    fax_id = received(env, docfactory.fax_tiff(env.inbox / "f.tif"), 1)
    assert png(env.client.get(f"/v1/faxes/{fax_id}/pages/1.png", headers=AUTH)).width == 800
    thumb = png(env.client.get(f"/v1/faxes/{fax_id}/pages/1.png", params={"width": 160}, headers=AUTH))
    assert thumb.size == (160, round(1146 * 204 / 98 * 160 / 1728))


@pytest.mark.parametrize(
    ("rotate", "corner"),
    [(0, "top-left"), (90, "top-right"), (180, "bottom-right"), (270, "bottom-left")],
)
def test_a_rotated_page_is_turned_clockwise_with_swapped_dimensions(
    env: Env, rotate: int, corner: str
) -> None:
    fax_id = received(env, docfactory.fax_tiff(env.inbox / "f.tif"), 1)
    upright = png(env.client.get(f"/v1/faxes/{fax_id}/pages/1.png", params={"width": 400}, headers=AUTH))
    image = png(
        env.client.get(
            f"/v1/faxes/{fax_id}/pages/1.png", params={"width": 400, "rotate": rotate}, headers=AUTH
        )
    )
    w, h = upright.size
    assert image.size == ((h, w) if rotate in (90, 270) else (w, h))
    # the 1-inch square near the top-left corner of the upright page is found near the turned corner
    for where in ("top-left", "top-right", "bottom-right", "bottom-left"):
        found = _square_box(image, where)
        assert (found is not None) == (where == corner), f"square near {where}: {found}"
    assert found is not None or corner != "bottom-left"


def _square_box(image: Image.Image, corner: str) -> tuple[int, int, int, int] | None:
    """The dark box within 80 pixels of ``corner`` (the square sits 47 pixels in at width 400)."""
    w, h = image.size
    boxes = {
        "top-left": (0, 0, 80, 80),
        "top-right": (w - 80, 0, w, 80),
        "bottom-right": (w - 80, h - 80, w, h),
        "bottom-left": (0, h - 80, 80, h),
    }
    region = image.convert("L").crop(boxes[corner]).point(lambda v: 255 if v < 128 else 0)
    return region.getbbox()


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("pages/0.png", {}, 422),
        ("pages/-1.png", {}, 422),
        ("pages/x.png", {}, 422),
        ("pages/3.png", {}, 404),
        ("pages/1.png", {"width": 63}, 422),
        ("pages/1.png", {"width": 2001}, 422),
        ("pages/1.png", {"width": "wide"}, 422),
        ("pages/1.png", {"rotate": 45}, 422),
        ("pages/1.png", {"rotate": -90}, 422),
        ("pages/1.gif", {}, 404),
    ],
)
def test_bad_page_number_width_or_rotation_is_refused(
    env: Env, path: str, params: dict[str, Any], status: int
) -> None:
    fax_id = received(env, docfactory.fax_tiff(env.inbox / "f.tif", pages=2), 2)
    r = env.client.get(f"/v1/faxes/{fax_id}/{path}", params=params, headers=AUTH)
    assert r.status_code == status
    assert r.json()["error"] in ("invalid_request", "not_found")
    if status == 404 and path == "pages/3.png":
        assert r.json()["detail"] == f"fax {fax_id}: 2 page(s), no page 3"


def test_unknown_fax_or_fax_without_tiff_is_404(env: Env) -> None:
    assert env.client.get("/v1/faxes/01NOSUCHFAX/pages", headers=AUTH).json()["error"] == "not_found"
    assert env.client.get("/v1/faxes/01NOSUCHFAX/pages/1.png", headers=AUTH).status_code == 404
    fax = env.store.record_inbound(call_id="c", caller="a", callee="b", device="line1")
    r = env.client.get(f"/v1/faxes/{fax.id}/pages/1.png", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "file_missing"


def test_a_corrupt_stored_tiff_is_a_clear_error_not_a_crash(env: Env) -> None:
    fax_id = received(env, docfactory.corrupt_tiff(env.inbox / "bad.tif"), 1)
    for path in ("pages", "pages/1.png"):
        r = env.client.get(f"/v1/faxes/{fax_id}/{path}", headers=AUTH)
        assert r.status_code == 422 and r.json()["error"] == "bad_document"


def test_page_png_is_cached_and_revalidated_by_etag(env: Env) -> None:
    fax_id = received(env, docfactory.fax_tiff(env.inbox / "f.tif"), 1)
    url = f"/v1/faxes/{fax_id}/pages/1.png"
    first = env.client.get(url, params={"width": 300}, headers=AUTH)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"') and "max-age" in first.headers["cache-control"]
    cached = list((env.spool / "cache" / "pages" / fax_id).glob("*.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    again = env.client.get(url, params={"width": 300}, headers={**AUTH, "If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    other = env.client.get(url, params={"width": 300, "rotate": 90}, headers={**AUTH, "If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    # a cache file cut short (a crash while writing) is rendered again, not served
    cached[0].write_bytes(first.content[:100])
    assert env.client.get(url, params={"width": 300}, headers=AUTH).content == first.content


# -- outbound jobs -----------------------------------------------------------------------------------


def test_a_finished_job_is_resubmitted_as_a_new_job_with_its_pages_and_options(env: Env) -> None:
    pdf = docfactory.text_pdf(env.tmp / "letter.pdf", pages=2)
    first = env.submit(pdf, resolution="standard", ecm="false", t38="off", max_attempts="4",
                       priority="7").json()  # fmt: skip
    r = env.client.post(f"/v1/jobs/{first['id']}/resubmit", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "conflict"  # still queued: nothing new
    assert len(env.client.get("/v1/jobs", headers=AUTH).json()["jobs"]) == 1
    env.client.post(f"/v1/jobs/{first['id']}/cancel", headers=AUTH)
    r = env.client.post(f"/v1/jobs/{first['id']}/resubmit", headers=AUTH)
    assert r.status_code == 201, r.text
    again = r.json()
    assert r.headers["location"] == f"/v1/jobs/{again['id']}" and again["id"] != first["id"]
    assert again["state"] == "queued" and again["destination"] == first["destination"]
    assert (again["max_attempts"], again["priority"]) == (4, 7)
    old, new = env.store.get(first["id"]), env.store.get(again["id"])
    assert new.options == old.options and new.options  # ECM off, T.38 off kept
    assert new.document != old.document  # its own copy: the old job's spool is not shared
    assert Path(new.document).read_bytes() == Path(old.document).read_bytes()
    assert env.client.get(f"/v1/jobs/{again['id']}/pages", headers=AUTH).json()["count"] == 2
    assert env.client.post("/v1/jobs/01NOSUCHJOB/resubmit", headers=AUTH).status_code == 404


def test_job_pages_are_the_spooled_fax_tiff(env: Env) -> None:
    pdf = docfactory.text_pdf(env.tmp / "letter.pdf", pages=3)
    job_id = env.submit(pdf, resolution="standard").json()["id"]
    body = env.client.get(f"/v1/jobs/{job_id}/pages", headers=AUTH).json()
    assert body["count"] == 3
    assert {(p["width_px"], p["y_dpi"]) for p in body["pages"]} == {(1728, 98)}
    image = png(env.client.get(f"/v1/jobs/{job_id}/pages/3.png", params={"width": 1728}, headers=AUTH))
    spooled = documents.read_tiff_pages(env.store.get(job_id).document)[2]
    assert image.width == 1728 and image.height == pytest.approx(spooled.height * 204 / 98, abs=1)
    assert env.client.get(f"/v1/jobs/{job_id}/pages/4.png", headers=AUTH).status_code == 404
    assert env.client.get("/v1/jobs/01NOSUCHJOB/pages", headers=AUTH).status_code == 404


def test_a_job_document_outside_the_spool_is_not_served(env: Env, tmp_path: Path) -> None:
    job = env.store.submit(docfactory.fax_tiff(tmp_path / "elsewhere.tif"), "sip:1@127.0.0.1")
    r = env.client.get(f"/v1/jobs/{job.id}/pages/1.png", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "file_missing"


# -- previews ----------------------------------------------------------------------------------------


def counting_converter(calls: list[Path]) -> DocumentConverter:
    def convert(src: Path, dst: Path, **kw: Any) -> documents.PreparedDocument:
        calls.append(Path(src))
        return documents.prepare_fax_tiff(src, dst, **kw)

    return DocumentConverter(processes=0, fn=convert)


def preview(env: Env, data: bytes, name: str = "letter.pdf", **fields: str) -> Any:
    return env.client.post(
        "/v1/previews",
        files={"document": (name, data, "application/octet-stream")},
        data=fields,
        headers=AUTH,
    )


def test_preview_then_queue_faxes_exactly_the_previewed_pages_without_a_second_conversion(
    tmp_path: Path,
) -> None:
    calls: list[Path] = []
    env = Env(tmp_path, converter=counting_converter(calls))
    pdf = docfactory.text_pdf(tmp_path / "letter.pdf", pages=2)
    r = preview(env, pdf.read_bytes(), resolution="superfine", paper="letter")
    assert r.status_code == 201
    body = r.json()
    assert r.headers["location"] == f"/v1/previews/{body['id']}"
    assert body["count"] == 2 and (body["resolution"], body["paper"]) == ("superfine", "letter")
    assert {p["y_dpi"] for p in body["pages"]} == {391}
    assert env.client.get(f"/v1/previews/{body['id']}", headers=AUTH).json()["count"] == 2
    page = png(env.client.get(f"/v1/previews/{body['id']}/pages/2.png", params={"width": 200}, headers=AUTH))
    assert page.width == 200
    previewed = (env.spool / ".previews" / body["id"] / "fax.tif").read_bytes()
    assert env.store.list() == [] and env.wakes == 0 and len(calls) == 1

    r = env.client.post("/v1/jobs", data={"to": "sip:1002@127.0.0.1", "preview_id": body["id"]}, headers=AUTH)
    assert r.status_code == 201, r.text
    job = env.store.get(r.json()["id"])
    assert Path(job.document).read_bytes() == previewed and len(calls) == 1
    assert job.original is not None and Path(job.original).read_bytes() == pdf.read_bytes()
    assert Path(job.document).parent.parent == env.spool and env.wakes == 1
    # the preview is used up
    assert env.client.get(f"/v1/previews/{body['id']}", headers=AUTH).status_code == 404
    again = env.client.post(
        "/v1/jobs", data={"to": "sip:1@127.0.0.1", "preview_id": body["id"]}, headers=AUTH
    )
    assert again.status_code == 422 and again.json()["detail"].startswith("preview_id: ")
    assert len(env.store.list()) == 1


def test_preview_converts_in_the_spawned_converter_process(tmp_path: Path) -> None:
    converter = DocumentConverter(processes=1)
    try:
        env = Env(tmp_path, converter=converter)
        r = preview(env, docfactory.png(tmp_path / "p.png").read_bytes(), name="scan.png")
        assert r.status_code == 201 and r.json()["count"] == 1
        r = env.client.post(
            "/v1/jobs", data={"to": "sip:1@127.0.0.1", "preview_id": r.json()["id"]}, headers=AUTH
        )
        assert r.status_code == 201
        assert documents.detect_kind(env.store.get(r.json()["id"]).document) == "tiff"
    finally:
        converter.close()


@pytest.mark.parametrize(
    "make",
    [
        docfactory.corrupt_pdf,
        docfactory.zero_page_pdf,
        docfactory.random_bytes,
        docfactory.text_file,
        docfactory.empty_file,
        docfactory.corrupt_tiff,
    ],
)
def test_a_bad_document_preview_gets_the_submission_error_and_keeps_nothing(
    env: Env, tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    bad = make(tmp_path / "bad.bin")
    r = preview(env, bad.read_bytes())
    assert r.status_code == 422 and r.json()["error"] == "bad_document"
    assert r.json()["detail"].startswith("letter.pdf: ")
    assert str(env.spool) not in r.text
    submitted = env.submit(bad)
    assert submitted.json() == r.json()  # word for word the error submission gives
    assert [p for p in env.spool_files() if p.name != ".previews"] == []
    assert env.store.list() == []


def test_preview_expires_and_is_deleted(tmp_path: Path) -> None:
    now = [1_000_000.0]
    spool = tmp_path / "spool"
    env = Env(tmp_path, previews=Previews(spool / ".previews", ttl=900, clock=lambda: now[0]))
    body = preview(env, docfactory.text_pdf(tmp_path / "a.pdf").read_bytes()).json()
    directory = spool / ".previews" / body["id"]
    assert directory.is_dir()
    now[0] += 899
    assert env.client.get(f"/v1/previews/{body['id']}/pages/1.png", headers=AUTH).status_code == 200
    now[0] += 1
    assert env.client.get(f"/v1/previews/{body['id']}/pages/1.png", headers=AUTH).status_code == 404
    assert not directory.exists()
    # another preview sweeps the expired ones without being asked about them
    second = preview(env, docfactory.text_pdf(tmp_path / "b.pdf").read_bytes()).json()
    now[0] += 900
    third = preview(env, docfactory.text_pdf(tmp_path / "c.pdf").read_bytes()).json()
    assert sorted(p.name for p in (spool / ".previews").iterdir()) == [third["id"]]
    assert second["id"] != third["id"]
    r = env.client.post("/v1/jobs", data={"to": "sip:1@127.0.0.1", "preview_id": second["id"]}, headers=AUTH)
    assert r.status_code == 422 and env.store.list() == []


def test_preview_and_job_fields_must_agree(env: Env, tmp_path: Path) -> None:
    pdf = docfactory.text_pdf(tmp_path / "a.pdf")
    preview_id = preview(env, pdf.read_bytes(), resolution="standard").json()["id"]
    base = {"to": "sip:1@127.0.0.1", "preview_id": preview_id}
    r = env.client.post("/v1/jobs", data={**base, "resolution": "fine"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("resolution: the preview was converted")
    r = env.client.post(
        "/v1/jobs", data=base, files={"document": ("a.pdf", pdf.read_bytes())}, headers=AUTH
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("document: ")
    r = env.client.post("/v1/jobs", data={**base, "to": "not a number"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("to: ")
    assert env.store.list() == []
    # still there after the refusals, and queued with the matching resolution
    r = env.client.post("/v1/jobs", data={**base, "resolution": "standard"}, headers=AUTH)
    assert r.status_code == 201


def test_a_discarded_preview_is_gone(env: Env, tmp_path: Path) -> None:
    preview_id = preview(env, docfactory.text_pdf(tmp_path / "a.pdf").read_bytes()).json()["id"]
    assert env.client.get(f"/v1/previews/{preview_id}/pages/1.png", headers=AUTH).status_code == 200
    assert env.client.delete(f"/v1/previews/{preview_id}", headers=AUTH).status_code == 204
    assert not (env.spool / ".previews" / preview_id).exists()
    assert not (env.spool / "cache" / "pages" / f"preview-{preview_id}").exists()
    assert env.client.delete(f"/v1/previews/{preview_id}", headers=AUTH).status_code == 404
    assert env.client.get("/v1/previews/../../etc", headers=AUTH).status_code == 404


# -- read and delete ---------------------------------------------------------------------------------


def test_deleting_a_fax_removes_its_files_from_disk_and_it_is_gone_from_the_api(env: Env) -> None:
    fax = env.received_fax(pages=2)
    other = received(env, docfactory.fax_tiff(env.inbox / "other.tif"), 1)
    thumb = env.client.get(f"/v1/faxes/{fax.id}/pages/1.png", params={"width": 160}, headers=AUTH)
    assert thumb.status_code == 200
    on_disk = [Path(str(p)) for p in (fax.tiff_path, fax.pdf_path, fax.report_path)]
    cache = env.spool / "cache" / "pages" / fax.id
    assert all(p.is_file() for p in on_disk) and cache.is_dir()

    r = env.client.delete(f"/v1/faxes/{fax.id}", headers=AUTH)
    assert r.status_code == 204 and r.content == b""
    assert [p for p in on_disk if p.exists()] == [] and not cache.exists()
    assert sorted(p.name for p in env.inbox.iterdir()) == ["other.tif"]  # the other fax untouched
    for path in ("", "/pdf", "/tiff", "/report", "/pages", "/pages/1.png"):
        assert env.client.get(f"/v1/faxes/{fax.id}{path}", headers=AUTH).status_code == 404, path
    assert [f["id"] for f in env.client.get("/v1/faxes", headers=AUTH).json()["faxes"]] == [other]
    assert env.client.delete(f"/v1/faxes/{fax.id}", headers=AUTH).status_code == 404
    assert env.client.post(f"/v1/faxes/{fax.id}/read", headers=AUTH).status_code == 404
    assert env.store.get_inbound(fax.id).deleted_at is not None  # the row stays with its events
    assert [e.type for e in env.store.events_for(fax.id)] == ["terminal"]


def test_a_fax_being_received_cannot_be_deleted(env: Env) -> None:
    fax = env.store.record_inbound(call_id="c", caller="a", callee="b", device="line1")
    part = env.inbox / ".rx-part.tif.part"
    part.write_bytes(b"II*\x00")
    env.store.update_inbound(fax.id, pages=0, tiff_path=part)
    r = env.client.delete(f"/v1/faxes/{fax.id}", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert part.exists() and env.store.get_inbound(fax.id).deleted_at is None
    assert env.client.delete("/v1/faxes/01NOSUCHFAX", headers=AUTH).status_code == 404


def test_a_fax_is_marked_read_and_unread_and_listed_by_it(env: Env) -> None:
    first = received(env, docfactory.fax_tiff(env.inbox / "a.tif"), 1)
    second = received(env, docfactory.fax_tiff(env.inbox / "b.tif"), 1)
    assert env.client.get(f"/v1/faxes/{first}", headers=AUTH).json()["read"] is False
    r = env.client.post(f"/v1/faxes/{first}/read", headers=AUTH)
    assert r.status_code == 200 and r.json()["read"] is True and r.json()["read_at"] is not None

    def listed(**params: str) -> list[str]:
        return [f["id"] for f in env.client.get("/v1/faxes", params=params, headers=AUTH).json()["faxes"]]

    assert listed(read="true") == [first] and listed(read="false") == [second]
    assert sorted(listed()) == sorted([first, second])
    assert env.client.post(f"/v1/faxes/{first}/unread", headers=AUTH).json()["read"] is False
    assert sorted(listed(read="false")) == sorted([first, second])
    assert env.client.get("/v1/faxes", params={"read": "maybe"}, headers=AUTH).status_code == 422
    assert env.client.post("/v1/faxes/01NOSUCHFAX/read", headers=AUTH).status_code == 404


def test_faxes_and_jobs_are_searched_by_caller_csi_and_time(env: Env, tmp_path: Path) -> None:
    """The console's inbox search and outbound time filter: GET /v1/faxes?caller=&csi=&since=&until= and
    GET /v1/jobs?since=&until= (ISO 8601, UTC if naive, or Unix seconds; [since, until))."""
    t0 = 1_800_000_000.0
    made = []
    for n, (caller, csi) in enumerate([("sip:+4930@pbx", "+49 30"), ("sip:alice@example.org", "ACME")]):
        fax = env.store.record_inbound(call_id=f"c{n}", caller=caller, callee="2", device="line1",
                                       now=t0 + 3600 * n)  # fmt: skip
        env.store.update_inbound(fax.id, remote_csi=csi)
        made.append(fax.id)

    def faxes(**params: str) -> list[str]:
        r = env.client.get("/v1/faxes", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        return [f["id"] for f in r.json()["faxes"]]

    assert faxes(caller="ALICE") == [made[1]] and faxes(csi="+49") == [made[0]]
    assert faxes(since="2027-01-15T09:00:00") == [made[1]]  # t0 + 3600 is 2027-01-15T09:00:00 UTC
    assert faxes(until="2027-01-15T09:00:00Z") == [made[0]]
    assert faxes(since=str(t0), until=str(t0 + 1)) == [made[0]]
    assert faxes(caller="", since="") == made  # empty: no filter (as a console form sends it)
    bad = env.client.get("/v1/faxes", params={"since": "yesterday"}, headers=AUTH)
    assert bad.status_code == 422 and "since" in bad.json()["detail"]
    doc = tmp_path / "doc.tif"
    doc.write_bytes(b"II*\x00")
    jobs = [env.store.submit(doc, f"sip:{n}@127.0.0.1", now=t0 + 3600 * n).id for n in range(3)]

    def listed(**params: str) -> list[str]:
        r = env.client.get("/v1/jobs", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["jobs"]]

    assert listed(since="2027-01-15T09:00:00", until="2027-01-15T10:00:00") == [jobs[1]]
    assert listed(since=str(t0 + 1)) == jobs[1:]
    assert env.client.get("/v1/jobs", params={"until": "1e99"}, headers=AUTH).status_code == 422


# -- authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/faxes/{fax}/pages"),
        ("GET", "/v1/faxes/{fax}/pages/1.png"),
        ("GET", "/v1/jobs/{job}/pages"),
        ("GET", "/v1/jobs/{job}/pages/1.png"),
        ("POST", "/v1/previews"),
        ("GET", "/v1/previews/{preview}"),
        ("GET", "/v1/previews/{preview}/pages/1.png"),
        ("DELETE", "/v1/previews/{preview}"),
        ("POST", "/v1/faxes/{fax}/read"),
        ("POST", "/v1/faxes/{fax}/unread"),
        ("DELETE", "/v1/faxes/{fax}"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}])
def test_every_page_endpoint_needs_the_token(
    env: Env, tmp_path: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    pdf = docfactory.text_pdf(tmp_path / "a.pdf")
    ids = {
        "fax": received(env, docfactory.fax_tiff(env.inbox / "f.tif"), 1),
        "job": env.submit(pdf).json()["id"],
        "preview": preview(env, pdf.read_bytes()).json()["id"],
    }
    url = path.format(**ids)
    kw: dict[str, Any] = {}
    if url == "/v1/previews":
        kw["files"] = {"document": ("a.pdf", pdf.read_bytes())}
    r = env.client.request(method, url, headers=headers, **kw)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert len(list((env.spool / ".previews").iterdir())) == 1  # nothing converted, nothing deleted
    assert (env.inbox / "f.tif").is_file() and env.store.get_inbound(ids["fax"]).read_at is None
    assert env.client.request(method, url, headers=AUTH, **kw).status_code < 400
