"""`vfax loopback`: T.38 between two UDPTL endpoints over real sockets on 127.0.0.1, in real time."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests import docfactory
from vfax.cli import EXIT_BAD_INPUT, app
from vfax.documents import read_tiff_pages

runner = CliRunner()


def test_one_page_survives_ten_percent_loss_over_real_sockets(tmp_path: Path) -> None:
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    result = runner.invoke(
        app, ["loopback", str(doc), "--loss", "0.1", "--seed", "2", "--out", str(tmp_path / "o"), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["pages"] == 1 and data["media"] == "t38"
    assert data["duration_seconds"] > 5  # a real fax takes real time
    relay = data["links"]["relay"]
    assert relay["a"]["dropped"] > 0  # the relay really lost packets ...
    assert data["links"]["udptl_answering"]["recovered_redundancy"] > 0  # ... and UDPTL recovered them
    assert len(read_tiff_pages(data["out_tiff"])) == 1


def test_g711_is_refused_with_a_reason(tmp_path: Path) -> None:
    result = runner.invoke(app, ["loopback", "--mode", "g711", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "T.38 only" in result.output
