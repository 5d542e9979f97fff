"""`vfax report REPORT.json`: read a call report as a person would, in words or as a drawn HTML page.

A call report is the JSON that `send --report`, `receive` (beside each fax) and `serve` (in the inbox)
write. This command prints how the call ended in words, and with ``--html OUT.html`` writes a standalone
page (no script, no external asset) with the SIP ladder, the T.30 phases, the pages and the media
counters drawn (vfax.report_view), so a call can be looked at in a browser without the console.
Exit 0 when the report was read (whatever the fax's result), 2 when it cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vfax import storage
from vfax.cli.common import fail, out
from vfax.report_view import end_reason_words, render_call_report_page


def report_command(
    report: Annotated[Path, typer.Argument(help="A call report (JSON) written by send, receive or serve.")],
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write the report drawn as a standalone HTML page here."),
    ] = None,
) -> None:
    """Show how a call ended, in words; with --html, draw the whole report as a web page.

    The page shows the SIP ladder as a sequence diagram (the re-INVITE to T.38 marked), the T.30
    phases on a time line, a row per page (bit rate, ECM, bad rows), the RTP/UDPTL counters with what
    each means, and the end reason in words. Open it in any browser; it needs nothing else.
    """
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {report}: {exc.strerror or exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{report} is not a JSON call report: {exc}")
    if not isinstance(data, dict) or "sip" not in data or "end_reason" not in data:
        fail(f"{report} is JSON but not a call report (no 'sip' and 'end_reason')")
    out.print(end_reason_words(data), markup=False, highlight=False)
    if html is not None:
        try:
            with storage.atomic_path(html) as tmp:
                tmp.write_text(render_call_report_page(data, title=f"vfax call report: {report.name}"))
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror or exc}")
        out.print(f"written: {html}", markup=False, highlight=False)
