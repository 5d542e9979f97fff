"""The `vfax` command line: one command per thing a fax user wants to do."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from t38.engine import FaxEvent, FaxSession, Media, Negotiated, PageDone
from vfax import documents
from vfax.documents import PaperSize, Resolution

app = typer.Typer(
    help="vfax: a virtual fax device for SIP networks (T.38 and G.711 passthrough).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

EXIT_FAILED = 1  # the fax (or call) did not succeed
EXIT_BAD_INPUT = 2  # the user's input was unusable; nothing was done


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # spandsp warns about normal line events (e.g. a carrier it looked for); show them from -vv on.
    logging.getLogger("t38.spandsp.lib").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)


@app.callback()
def main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-v, -vv).")
    ] = 0,
) -> None:
    setup_logging(verbose)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
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
        ("bit rate", f"{report.get('bit_rate', 0)} bit/s"),
        ("ECM", "yes" if report.get("ecm") else "no"),
    ]
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


@app.command()
def simulate(
    document: Annotated[Path, typer.Argument(help="PDF, PNG, JPEG or TIFF to fax.")],
    mode: Annotated[str, typer.Option(help="Wire format: t38 (UDPTL) or g711 (audio passthrough).")] = "t38",
    ecm: Annotated[bool, typer.Option("--ecm/--no-ecm", help="Error correction mode (T.30 Annex A).")] = True,
    resolution: Annotated[str, typer.Option(help="standard, fine or superfine.")] = "fine",
    paper: Annotated[str, typer.Option(help="a4, letter or legal.")] = "a4",
    loss: Annotated[float, typer.Option(help="Packet loss probability, 0..1 (e.g. 0.05).")] = 0.0,
    burst_loss: Annotated[float, typer.Option(help="Share of packets lost in bursts, 0..1.")] = 0.0,
    burst_len: Annotated[float, typer.Option(help="Mean loss burst length in packets.")] = 3.0,
    jitter_ms: Annotated[float, typer.Option("--jitter-ms", help="Network jitter, ms.")] = 0.0,
    reorder: Annotated[float, typer.Option(help="Reordering probability, 0..1.")] = 0.0,
    duplicate: Annotated[float, typer.Option(help="Duplication probability, 0..1.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the network model (same seed, same run).")] = 1,
    ec: Annotated[
        str | None,
        typer.Option(help="T.38 UDPTL error recovery: none, redundancy or fec (default: negotiated)."),
    ] = None,
    ec_depth: Annotated[
        int | None, typer.Option(help="Redundancy depth for image data (or FEC entries).", min=0, max=16)
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the received TIFF, PDF and report.")
    ] = Path("out"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Fax DOCUMENT through two spandsp engines back to back, in virtual time (no network).

    Shows what a real call would do, hundreds of times faster than real time; exits 1 when the
    receiver's T.30 result is not a complete success.
    """
    from vfax.simulate import NetworkModel, SimulationRequest
    from vfax.simulate import simulate as run_simulation

    media = _parse_choice("--mode", mode, {"t38": Media.T38, "g711": Media.AUDIO, "audio": Media.AUDIO})
    res = _parse_choice("--resolution", resolution, {r.name.lower(): r for r in Resolution})
    size = _parse_choice("--paper", paper, {p.name.lower(): p for p in PaperSize})
    network = NetworkModel(
        loss=loss,
        burst_loss=burst_loss,
        burst_len=burst_len,
        jitter_ms=jitter_ms,
        reorder=reorder,
        duplicate=duplicate,
        seed=seed,
    )
    try:
        network.validate()
    except ValueError as exc:
        fail(str(exc))
    if ec is not None:
        ec = _parse_choice("--ec", ec, {"none": "none", "redundancy": "redundancy", "fec": "fec"})
    req = SimulationRequest(
        document=document,
        out_dir=out_dir,
        media=media,
        ecm=ecm,
        resolution=res,
        paper=size,
        network=network,
        ec=ec,
        ec_depth=ec_depth,
    )  # type: ignore[arg-type]
    try:
        with PageProgress(None, enabled=not as_json, label=f"simulate {mode}") as progress:
            report = run_simulation(req, on_event=progress.on_event, on_prepared=progress.set_total)
    except documents.DocumentError as exc:
        fail(str(exc))
    if as_json:
        print_json(report)
    else:
        print_report(report, f"vfax simulate ({mode}, virtual time)")
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


def _parse_choice(option: str, value: str, choices: dict[str, Any]) -> Any:
    key = value.strip().lower()
    if key not in choices:
        fail(f"{option} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return choices[key]


if __name__ == "__main__":
    app()
