"""What every `vfax` command shares: consoles, exit codes, errors, JSON, progress and report tables."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from t38.engine import FaxEvent, FaxSession, Negotiated, PageDone
from vfax.process import EXIT_BAD_INPUT, EXIT_FAILED  # noqa: F401 (re-exported: every command's exit codes)

#: ``--dns`` of the commands that locate SIP servers by name (RFC 3263).
DnsOpt = Annotated[
    str | None,
    typer.Option(help="DNS server IP[:PORT] for NAPTR/SRV/A lookups of names (default: the system's)."),
]


err = Console(stderr=True)
out = Console()


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # spandsp warns about normal line events (e.g. a carrier it looked for); show them from -vv on.
    logging.getLogger("t38.spandsp.lib").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


class PageProgress:
    """A page progress bar fed by fax session events (phase B, each phase D)."""

    def __init__(self, total: int | None, enabled: bool, label: str = "fax") -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task(f"{label}: waiting for phase B", total=total)

    def set_total(self, pages: int) -> None:
        self.progress.update(self.task, total=pages)

    def __enter__(self) -> PageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, session: FaxSession, event: FaxEvent) -> None:
        if session.send_file is not None:
            return  # count the receiver's pages: the receiver's view is the truth
        if isinstance(event, Negotiated):
            self.progress.update(
                self.task, description=f"{event.bit_rate} bit/s, {'ECM' if event.ecm else 'no ECM'}"
            )
        elif isinstance(event, PageDone):
            self.progress.update(self.task, completed=event.page)


def print_report(report: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    status = "[green]OK[/]" if report["ok"] else f"[red]FAILED[/] ({report.get('reason', '')})"
    rows = [
        ("result", status),
        ("media", report.get("media", "")),
        ("pages", f"{report['pages']} of {report.get('pages_sent', report['pages'])}"),
    ]
    if report.get("bit_rate"):  # only what T.30 negotiated (DCS); a call that never got there has none
        rows += [("bit rate", f"{report['bit_rate']} bit/s"), ("ECM", "yes" if report.get("ecm") else "no")]
    else:
        rows.append(("bit rate", "not negotiated"))
    for key, label, fmt in (
        ("resolution", "resolution", "{}"),
        ("line_seconds", "line time", "{} s"),
        ("duration_seconds", "duration", "{} s"),
        ("cpu_seconds", "CPU time", "{} s"),
        ("speedup", "speed-up", "{}x real time"),
        ("out_tiff", "received TIFF", "{}"),
        ("out_pdf", "received PDF", "{}"),
        ("report", "report", "{}"),
    ):
        if report.get(key) is not None:
            rows.append((label, fmt.format(report[key])))
    for label, value in rows:
        table.add_row(label, str(value))
    out.print(table)


def parse_choice(option: str, value: str, choices: dict[str, Any]) -> Any:
    key = value.strip().lower()
    if key not in choices:
        fail(f"{option} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return choices[key]
