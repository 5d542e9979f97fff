"""Uploads are converted in a separate process: off the service's interpreter (its event loop clocks the
media of every call), and a document that crashes the converter costs a process, not the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory
from vfax import documents
from vfax.service.converter import DocumentConverter


def _pid(src: Path, dst: Path, **kw: Any) -> int:
    return os.getpid()


def _crash_on_bomb(src: Path, dst: Path, **kw: Any) -> documents.PreparedDocument:
    if b"%BOMB" in Path(src).read_bytes():  # a PDF comment: the document is otherwise fine
        Path(dst).write_bytes(b"half a page")
        os.abort()  # as a renderer crashing in C would
    return documents.prepare_fax_tiff(src, dst, **kw)


def test_conversion_runs_in_another_process_with_the_same_result(tmp_path: Path) -> None:
    pdf = docfactory.text_pdf(tmp_path / "letter.pdf", pages=2)
    converter = DocumentConverter(1)
    try:
        std = documents.Resolution.STANDARD
        done = converter.convert(pdf, tmp_path / "out.tif", resolution=std)
        here = documents.prepare_fax_tiff(pdf, tmp_path / "here.tif", resolution=std)
        assert done.pages == here.pages == 2 and done.page_heights == here.page_heights
        assert (tmp_path / "out.tif").read_bytes() == (tmp_path / "here.tif").read_bytes()
        with pytest.raises(documents.DocumentError):  # a bad document: the same error as in-process
            converter.convert(tmp_path / "missing.pdf", tmp_path / "x.tif")
    finally:
        converter.close()
    pids = DocumentConverter(1, fn=_pid)
    try:
        assert pids.convert(pdf, tmp_path / "p.tif") != os.getpid()
    finally:
        pids.close()
    assert DocumentConverter(0, fn=_pid).convert(pdf, tmp_path / "p.tif") == os.getpid()


def test_a_document_that_crashes_the_converter_is_refused_and_the_next_one_converts(tmp_path: Path) -> None:
    good = docfactory.text_pdf(tmp_path / "good.pdf", pages=1)
    bomb = tmp_path / "bomb.pdf"
    bomb.write_bytes(good.read_bytes() + b"\n%BOMB\n")
    converter = DocumentConverter(1, fn=_crash_on_bomb)
    try:
        with pytest.raises(documents.DocumentError, match="crashed the converter"):
            converter.convert(bomb, tmp_path / "bomb.tif")
        assert not (tmp_path / "bomb.tif").exists()  # nothing half-written is left
        assert converter.convert(good, tmp_path / "good.tif").pages == 1  # a fresh process took over
    finally:
        converter.close()
    with pytest.raises(ValueError, match="processes"):
        DocumentConverter(-1)


def test_the_api_refuses_an_upload_that_crashes_the_converter_and_queues_nothing(tmp_path: Path) -> None:
    from tests.test_api import AUTH, Env

    converter = DocumentConverter(1, fn=_crash_on_bomb)
    env = Env(tmp_path, converter=converter)
    good = docfactory.text_pdf(tmp_path / "good.pdf", pages=1).read_bytes()

    def post(data: bytes) -> Any:
        return env.client.post("/v1/jobs", files={"document": ("letter.pdf", data, "application/pdf")},
                               data={"to": "sip:1002@127.0.0.1"}, headers=AUTH)  # fmt: skip

    try:
        r = post(good + b"\n%BOMB\n")
        assert r.status_code == 422 and r.json()["error"] == "bad_document", r.text
        assert "crashed the converter" in r.json()["detail"] and "letter.pdf" in r.json()["detail"]
        assert env.store.list() == [] and [p for p in env.spool_files() if p.is_file()] == []
        assert post(good).status_code == 201  # the service goes on, with a fresh converter process
        assert len(env.store.list()) == 1
    finally:
        converter.close()
