"""The call report drawn (vfax.report_view): reports of real calls rendered as HTML with inline SVG.

One module fixture runs three real calls at once over loopback sockets: a fax on G.711, a fax switched
to T.38 by the receiver's re-INVITE (its caller name and TSI carry HTML), and a call to a line that
answers 486. Each test renders the reports those calls wrote and checks what an operator would see: an
arrow per SIP message, the T.38 re-INVITE and its answer marked, the T.30 messages on the time line, a
row per page, the counters, the end reason in words, and network values shown as text. The rendered
pages are written into the test's tmp directory for a reviewer to open.
"""

from __future__ import annotations

import asyncio
import copy
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sip.identity import CallerIdentity
from tests.test_calls import fax_once, page
from vfax.call.fax_call import CallOptions
from vfax.call.line import FaxLine, LineConfig
from vfax.call.media import T38Policy
from vfax.cli import app
from vfax.report_view import end_reason_words, ladder_steps, render_call_report, render_call_report_page

EVIL_NAME = "<script>alert(1)</script>"
EVIL_TSI = "<b>555</b>"  # a TSI is 20 ASCII characters at most, HTML fits


class Parsed(HTMLParser):
    """Start tags with their attributes and the text of an HTML fragment (as a browser would see it)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, *classes: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and set(classes) <= set(a.get("class", "").split())]

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("report_view")
    tiff = page(tmp)

    async def busy() -> Any:
        rx = await FaxLine.open(LineConfig(name="rx-busy", inbox=tmp / "inbox-busy", channels=0))
        tx = await FaxLine.open(LineConfig(name="tx-busy"))
        try:
            return await tx.send(tiff, rx.uri)
        finally:
            await tx.close()
            await rx.close()

    async def calls() -> Any:
        return await asyncio.gather(
            fax_once(tmp, tiff, CallOptions(t38=T38Policy.OFF), CallOptions(t38=T38Policy.OFF), name="g711"),
            fax_once(
                tmp,
                tiff,
                CallOptions(t38=T38Policy.AUTO, ident=EVIL_TSI),
                CallOptions(t38=T38Policy.AUTO),
                name="t38",
                tx_extra={"caller": CallerIdentity(name=EVIL_NAME)},
            ),
            busy(),
        )

    g711, t38, refused = asyncio.run(asyncio.wait_for(calls(), 120))
    assert g711[0].ok and t38[0].ok and t38[0].media == "t38" and not refused.ok
    out = {
        "g711-send": g711[0].report,
        "g711-receive": g711[1].outcome.report,
        "t38-send": t38[0].report,
        "t38-receive": t38[1].outcome.report,
        "busy-send": refused.report,
    }
    for name, report in out.items():  # for a reviewer: open these in a browser
        (tmp / f"{name}.json").write_text(json.dumps(report, indent=1))
        (tmp / f"{name}.html").write_text(render_call_report_page(report, title=name))
    return out


def sent_messages(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report["sip"]["ladder"] if s["dir"] in ("in", "out")]


@pytest.mark.parametrize("name", ["g711-send", "g711-receive", "t38-send", "t38-receive", "busy-send"])
def test_ladder_has_one_arrow_and_one_table_row_per_sip_message(
    reports: dict[str, dict[str, Any]], name: str
) -> None:
    report = reports[name]
    html = Parsed(render_call_report(report))
    arrows = html.having("g", "step", "arrow")
    assert len(arrows) == len(sent_messages(report)) > 0
    assert [int(a["data-step"]) for a in arrows] == list(range(len(arrows)))
    rows = [a for t, a in html.tags if t == "tr"]
    ladder_rows = len(report["sip"]["ladder"])
    assert len(rows) >= ladder_rows + 1  # the text alternative: header + one row per message
    # both parties are named: this end and the other end's URI
    assert "this end (vfax)" in html.all_text and report["remote"] in html.all_text
    # accessible drawings: an image role with a title and a description, scaling by viewBox
    svgs = html.having("svg")
    assert svgs and all(s["role"] == "img" and s["viewbox"].startswith("0 0 ") for s in svgs)
    assert len(html.having("title")) >= len(svgs) and len(html.having("desc")) == len(svgs)


def test_t38_reinvite_and_its_answer_are_marked_on_both_ends(reports: dict[str, dict[str, Any]]) -> None:
    for name, direction in (("t38-receive", "out"), ("t38-send", "in")):
        report = reports[name]
        html = Parsed(render_call_report(report))
        marked = html.having("g", "arrow", "t38")
        ladder = report["sip"]["ladder"]
        lines = [ladder[int(a["data-step"])] for a in marked]
        assert len(marked) == 2, lines  # the re-INVITE and its 200
        assert lines[0]["line"].startswith("INVITE ") and lines[0]["dir"] == direction
        assert "reinvite" in marked[0]["class"].split()
        assert lines[1]["line"].startswith("SIP/2.0 200") and lines[1]["dir"] != direction
        # the first INVITE (the call, on G.711) is not marked
        first = next(s for s in ladder_steps(report) if s.method == "INVITE")
        assert "t38" not in first.tags and first.note == "the call"
    # on G.711 throughout nothing is marked T.38
    for name in ("g711-send", "g711-receive"):
        assert not Parsed(render_call_report(reports[name])).having("g", "arrow", "t38")


@pytest.mark.parametrize("name", ["g711-send", "t38-receive"])
def test_t30_timeline_pages_and_counters_of_a_fax(reports: dict[str, dict[str, Any]], name: str) -> None:
    report = reports[name]
    html = Parsed(render_call_report(report))
    # every T.30 message is on the time line, on the call's clock: the engine's start is in the report
    assert len(html.having("g", "msg")) == len(report["t30"]) > 0
    assert {"DIS", "DCS", "CFR", "MCF", "DCN"} <= {m["name"] for m in report["t30"]}
    start = report["t30_started_at"]
    ladder = report["sip"]["ladder"]
    ack = next(s["t"] for s in ladder if s["line"].startswith("ACK "))
    bye = next(s["t"] for s in ladder if s["line"].startswith("BYE "))
    dis = next(m["at"] for m in report["t30"] if m["name"] == "DIS")
    assert ack - 0.5 <= start <= start + dis <= bye
    assert html.having("g", "band", "training") and len(html.having("g", "band", "page")) == 1
    # one row per page with its bit rate and ECM
    page_rows = html.having("tr", "page")
    assert len(page_rows) == len(report["pages"]) == 1
    rate = report["pages"][0]["bit_rate"]
    assert f"{rate} bit/s" in html.all_text and rate > 0
    # the counters of the stream that carried the fax, each with its meaning
    text = html.all_text
    if report["media"]["final"] == "t38":
        assert "UDPTL (T.38) counters" in text and "recovered_redundancy" in text
        assert "loss that did no harm" in text
    else:
        assert "RTP (G.711 PCMU) counters" in text and "received.late" in text
        assert "came too late to be played" in text
    words = end_reason_words(report)
    assert words.startswith("The fax was " + ("sent" if report["direction"] == "send" else "received"))
    assert "1 page" in words and words in text


def test_refused_call_says_busy_in_words_and_draws_the_486(reports: dict[str, dict[str, Any]]) -> None:
    report = reports["busy-send"]
    html = Parsed(render_call_report(report))
    assert end_reason_words(report) == "The call was not connected (SIP 486). The line was busy."
    assert "The line was busy." in html.all_text and "Fax failed" in html.all_text
    failed = html.having("g", "arrow", "failed")
    assert [report["sip"]["ladder"][int(a["data-step"])]["line"] for a in failed] == ["SIP/2.0 486 Busy Here"]
    assert "No T.30 message was exchanged" in html.all_text and not html.having("svg", "timeline")


def test_values_from_the_network_are_shown_as_text(reports: dict[str, dict[str, Any]]) -> None:
    """The caller's display name and TSI came through a real call; a reason phrase, a ladder line and a
    file name are put in by hand (our own lines cannot send such a phrase)."""
    report = copy.deepcopy(reports["t38-receive"])
    assert report["caller"]["name"] == EVIL_NAME and report["result"]["remote_ident"] == EVIL_TSI
    report["sip"]["ladder"][-1]["line"] = 'SIP/2.0 200 <img src=x onerror="alert(2)">'
    report["end_reason"] = "remote hangup (<i>gone</i>)"
    report["files"] = {"tiff": "/in/<b>fax</b>.tif", "pdf": None}
    report["media"]["events"].append({"at": 1.0, "event": "<svg onload=alert(3)>"})
    for text in (render_call_report(report), render_call_report_page(report, title="<title>x")):
        html = Parsed(text)
        tags = {t for t, _ in html.tags}
        assert not tags & {"script", "b", "i", "img"}, tags
        assert not any(k.startswith("on") for _, a in html.tags for k in a)
        for shown in (EVIL_NAME, EVIL_TSI, "<i>gone</i>", "/in/<b>fax</b>.tif", "onerror"):
            assert shown in html.all_text, shown


def test_failover_prack_and_a_second_attempt_are_drawn(reports: dict[str, dict[str, Any]]) -> None:
    """Ladder shapes our loopback lines do not produce (a failover, 100rel, a 488 then audio): put into
    the busy call's real report by hand, with the keys FaxCall writes."""
    report = copy.deepcopy(reports["busy-send"])
    report["policy"], report["end_reason"] = "direct", "SIP 480 Temporarily Unavailable"
    report["sip"]["final_status"], report["sip"]["reason"] = 480, "Temporarily Unavailable"
    report["sip"]["attempts"] = [
        {"call_id": "a@h", "status": 488, "reason": "Not Acceptable Here"},
        {"call_id": "b@h", "status": 480, "reason": "Temporarily Unavailable"},
    ]
    report["sip"]["ladder"] = [
        {"t": 0.0, "dir": "out", "line": "INVITE sip:1@pbx SIP/2.0", "attempt": 1},
        {"t": 0.5, "dir": "failover", "line": "503 from udp 10.0.0.1; next udp 10.0.0.2", "attempt": 1},
        {"t": 0.5, "dir": "out", "line": "INVITE sip:1@pbx SIP/2.0", "attempt": 1},
        {"t": 0.6, "dir": "in", "line": "SIP/2.0 488 Not Acceptable Here", "attempt": 1},
        {"t": 0.6, "dir": "out", "line": "ACK sip:1@pbx SIP/2.0", "attempt": 1},
        {"t": 0.7, "dir": "out", "line": "INVITE sip:1@pbx SIP/2.0", "attempt": 2},
        {"t": 0.8, "dir": "in", "line": "SIP/2.0 183 Session Progress", "attempt": 2},
        {"t": 0.8, "dir": "out", "line": "PRACK sip:1@10.0.0.2 SIP/2.0", "attempt": 2},
        {"t": 0.9, "dir": "in", "line": "SIP/2.0 200 OK", "attempt": 2},
        {"t": 5.0, "dir": "in", "line": "SIP/2.0 480 Temporarily Unavailable", "attempt": 2},
        {"t": 5.0, "dir": "out", "line": "ACK sip:1@pbx SIP/2.0", "attempt": 2},
    ]  # fmt: skip
    html = Parsed(render_call_report(report))
    assert len(html.having("g", "step", "failover")) == 1 and len(html.having("g", "step", "arrow")) == 10
    assert "attempt 2: a new INVITE (new Call-ID)" in html.all_text
    assert len(html.having("g", "arrow", "prack")) == 1
    steps = ladder_steps(report)
    assert "t38" in steps[0].tags and steps[0].note == "the call, offering T.38 at once"  # direct
    assert steps[2].note == "the same request, to the next address"
    assert steps[3].note.startswith("refuses T.38")
    assert steps[8].note == "answers PRACK" and steps[9].note.startswith("answers INVITE")
    assert [s.index for s in steps if "failed" in s.tags] == [3, 9]
    assert end_reason_words(report).startswith("The call was not connected (SIP 480).")
    assert len(html.having("ol", "attempts")) == 1


def test_vfax_report_writes_a_standalone_page(reports: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    src = tmp_path / "call.json"
    src.write_text(json.dumps(reports["busy-send"]))
    out = tmp_path / "call.html"
    result = CliRunner().invoke(app, ["report", str(src), "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert "The line was busy." in result.output
    page_text = out.read_text()
    assert page_text.startswith("<!doctype html>") and 'name="viewport"' in page_text
    assert "<script" not in page_text and "http" not in page_text.split("<body>")[0]  # nothing fetched
    # unusable input: exit 2, nothing written
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a report"}')
    out2 = tmp_path / "bad.html"
    result = CliRunner().invoke(app, ["report", str(bad), "--html", str(out2)])
    assert result.exit_code == 2 and not out2.exists()


def test_a_fax_that_failed_after_a_page_says_why_and_what_was_kept(
    reports: dict[str, dict[str, Any]],
) -> None:
    """The receiver's real report with the ending of a sender that hung up after page 1 (T.30 code 49)."""
    report = copy.deepcopy(reports["g711-receive"])
    report["end_reason"] = "remote hangup (BYE)"
    report["result"].update(ok=False, code=49, text="Call dropped prematurely")
    words = end_reason_words(report)
    assert words == (
        "The other side hung up before the fax was finished. The fax failed: the call dropped "
        "prematurely; 1 page was received before that and kept."
    )
    html = Parsed(render_call_report(report))
    assert "Fax failed" in html.all_text and words in html.all_text
