"""`vfax simulate` as a user runs it: documents in, a received fax (TIFF+PDF) and a report out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from typer.testing import CliRunner

from tests import docfactory
from vfax.cli import EXIT_BAD_INPUT, EXIT_FAILED, app
from vfax.documents import read_tiff_pages, sample_document

runner = CliRunner()

KEYS = ("ok", "pages", "bit_rate", "ecm", "line_seconds", "cpu_seconds", "out_pdf", "out_tiff")


def run(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["simulate", *args])
    data = None
    if "--json" in args and result.stdout.strip().startswith("{"):
        data = json.loads(result.stdout)
    return result.exit_code, data, result.output


def test_sample_document_in_t38_lands_as_tiff_and_pdf(tmp_path: Path) -> None:
    code, data, _ = run(str(sample_document()), "--mode", "t38", "--out", str(tmp_path), "--json")
    assert code == 0
    assert data is not None and all(k in data for k in KEYS)
    assert data["ok"] and data["pages"] == 3 and data["ecm"] and data["bit_rate"] == 14400
    assert data["line_seconds"] > 30 and data["cpu_seconds"] > 0
    assert len(read_tiff_pages(data["out_tiff"])) == 3
    assert len(pdfium.PdfDocument(data["out_pdf"])) == 3
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["receiver"]["result"]["ok"] and report["udptl"]["ec_mode"] == "redundancy"
    assert [m["name"] for m in report["receiver"]["t30"]][:2] == ["CSI", "DIS"]


def test_g711_without_ecm_at_standard_resolution(tmp_path: Path) -> None:
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    code, data, _ = run(
        str(doc),
        "--mode",
        "g711",
        "--no-ecm",
        "--resolution",
        "standard",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0 and data is not None
    assert data["ok"] and data["pages"] == 1 and not data["ecm"] and data["media"] == "g711"
    assert data["resolution"] == "standard"


MAKERS: dict[str, Callable[[Path], Path]] = {
    "pdf": lambda d: docfactory.text_pdf(d / "doc.pdf", pages=1),
    "png": lambda d: docfactory.png(d / "doc.png"),
    "jpeg": lambda d: docfactory.jpeg(d / "doc.jpg"),
    "tiff": lambda d: docfactory.tiff(d / "doc.tif", pages=2),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_input_type_is_faxed(tmp_path: Path, kind: str) -> None:
    doc = MAKERS[kind](tmp_path)
    code, data, _ = run(str(doc), "--out", str(tmp_path / "out"), "--json")
    assert code == 0 and data is not None and data["ok"]
    assert data["pages"] == (2 if kind == "tiff" else 1)


BAD: dict[str, Callable[[Path], Path]] = {
    "text file": lambda d: docfactory.text_file(d / "notes.pdf"),
    "random bytes": lambda d: docfactory.random_bytes(d / "blob.pdf"),
    "empty": lambda d: docfactory.empty_file(d / "empty.pdf"),
    "corrupt pdf": lambda d: docfactory.corrupt_pdf(d / "bad.pdf"),
    "encrypted pdf": lambda d: docfactory.encrypted_pdf(d / "secret.pdf"),
    "zero pages": lambda d: docfactory.zero_page_pdf(d / "zero.pdf"),
    "corrupt tiff": lambda d: docfactory.corrupt_tiff(d / "bad.tif"),
    "decompression bomb": lambda d: docfactory.bomb_png(d / "bomb.png"),
    "missing file": lambda d: d / "does-not-exist.pdf",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_document_gives_clear_error_and_writes_nothing(tmp_path: Path, name: str) -> None:
    doc = BAD[name](tmp_path)
    out = tmp_path / "out"
    code, _, output = run(str(doc), "--out", str(out))
    assert code == EXIT_BAD_INPUT
    assert "error:" in output
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [["--loss", "1.5"], ["--mode", "v34"], ["--resolution", "ultra"], ["--paper", "a3"], ["--ec", "magic"]],
)
def test_bad_option_is_refused_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    code, _, output = run(str(sample_document()), "--out", str(out), *args)
    assert code == EXIT_BAD_INPUT, output
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_fax_exits_1_and_never_claims_success(tmp_path: Path) -> None:
    """Half the packets lost and no error recovery: the report must say so, pages kept if any."""
    code, data, _ = run(
        str(sample_document()),
        "--ec",
        "none",
        "--loss",
        "0.5",
        "--seed",
        "3",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == EXIT_FAILED
    assert data is not None and not data["ok"] and data["status"] == "failed"
    assert data["pages"] < 3 and data["reason"]
    if data["pages"]:
        assert len(read_tiff_pages(data["out_tiff"])) == data["pages"]
    else:
        assert data["out_tiff"] is None


def test_t38_default_error_recovery_survives_ten_percent_loss(tmp_path: Path) -> None:
    code, data, _ = run(
        str(sample_document()), "--loss", "0.1", "--seed", "7", "--out", str(tmp_path), "--json"
    )
    assert code == 0 and data is not None and data["ok"] and data["pages"] == 3
    assert data["links"]["udptl_answering"]["recovered_redundancy"] > 0


def test_same_seed_same_run(tmp_path: Path) -> None:
    runs = [
        run(
            str(sample_document()), "--loss", "0.2", "--seed", "11", "--out", str(tmp_path / str(i)), "--json"
        )[1]
        for i in range(2)
    ]
    assert runs[0] is not None and runs[1] is not None
    assert runs[0]["line_seconds"] == runs[1]["line_seconds"]
    assert runs[0]["links"] == runs[1]["links"]


def test_existing_fax_in_output_folder_is_never_overwritten(tmp_path: Path) -> None:
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    first = run(str(doc), "--out", str(tmp_path / "o"), "--json")[1]
    second = run(str(doc), "--out", str(tmp_path / "o"), "--json")[1]
    assert first is not None and second is not None
    assert first["out_tiff"] != second["out_tiff"]
    assert Path(first["out_tiff"]).exists() and Path(second["out_tiff"]).exists()
