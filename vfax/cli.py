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


# Options shared by the commands that fax a document between two local ends.
ModeOpt = Annotated[str, typer.Option(help="Wire format: t38 (UDPTL) or g711 (audio passthrough).")]
EcmOpt = Annotated[bool, typer.Option("--ecm/--no-ecm", help="Error correction mode (T.30 Annex A).")]
ResolutionOpt = Annotated[str, typer.Option(help="standard, fine or superfine.")]
PaperOpt = Annotated[str, typer.Option(help="a4, letter or legal.")]
LossOpt = Annotated[float, typer.Option(help="Packet loss probability, 0..1 (e.g. 0.05).")]
BurstLossOpt = Annotated[float, typer.Option(help="Share of packets lost in bursts, 0..1.")]
BurstLenOpt = Annotated[float, typer.Option(help="Mean loss burst length in packets.")]
JitterOpt = Annotated[float, typer.Option("--jitter-ms", help="Network jitter, ms.")]
ReorderOpt = Annotated[float, typer.Option(help="Reordering probability, 0..1.")]
DuplicateOpt = Annotated[float, typer.Option(help="Duplication probability, 0..1.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the network model (same seed, same losses).")]
EcOpt = Annotated[
    str | None, typer.Option(help="T.38 UDPTL error recovery: none, redundancy or fec (default: negotiated).")
]
EcDepthOpt = Annotated[
    int | None, typer.Option(help="Redundancy depth for image data (or FEC entries).", min=0, max=16)
]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the received TIFF, PDF and report.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _fax_between_two_ends(
    *,
    command: str,
    document: Path,
    mode: str,
    ecm: bool,
    resolution: str,
    paper: str,
    network_args: dict[str, Any],
    ec: str | None,
    ec_depth: int | None,
    out_dir: Path,
    as_json: bool,
    realtime: bool,
) -> None:
    """Shared body of `simulate` and `loopback`: validate, fax, report, exit code."""
    from vfax.simulate import NetworkModel, SimulationRequest, run_pair, simulate

    media = _parse_choice("--mode", mode, {"t38": Media.T38, "g711": Media.AUDIO, "audio": Media.AUDIO})
    res = _parse_choice("--resolution", resolution, {r.name.lower(): r for r in Resolution})
    size = _parse_choice("--paper", paper, {p.name.lower(): p for p in PaperSize})
    ec_mode = None if ec is None else _parse_choice("--ec", ec, {k: k for k in ("none", "redundancy", "fec")})
    if realtime and media is not Media.T38:
        fail("loopback runs T.38 only for now (G.711 over RTP comes with the SIP call path)")
    network = NetworkModel(**network_args)
    try:
        network.validate()
    except ValueError as exc:
        fail(str(exc))
    req = SimulationRequest(
        document=document,
        out_dir=out_dir,
        media=media,
        ecm=ecm,
        resolution=res,
        paper=size,
        network=network,
        ec=ec_mode,
        ec_depth=ec_depth,
    )
    runner = run_pair
    if realtime:
        from vfax.loopback import run_pair_realtime

        runner = run_pair_realtime
    try:
        with PageProgress(None, enabled=not as_json, label=f"{command} {mode}") as progress:
            report = simulate(req, on_event=progress.on_event, on_prepared=progress.set_total, runner=runner)
    except documents.DocumentError as exc:
        fail(str(exc))
    if realtime:  # line time is wall time here; a speed-up over real time means nothing
        report.pop("speedup", None)
        report["duration_seconds"] = report.pop("line_seconds")
    if as_json:
        print_json(report)
    else:
        clock = "real time, 127.0.0.1" if realtime else "virtual time"
        print_report(report, f"vfax {command} ({mode}, {clock})")
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def simulate(
    document: Annotated[Path, typer.Argument(help="PDF, PNG, JPEG or TIFF to fax.")],
    mode: ModeOpt = "t38",
    ecm: EcmOpt = True,
    resolution: ResolutionOpt = "fine",
    paper: PaperOpt = "a4",
    loss: LossOpt = 0.0,
    burst_loss: BurstLossOpt = 0.0,
    burst_len: BurstLenOpt = 3.0,
    jitter_ms: JitterOpt = 0.0,
    reorder: ReorderOpt = 0.0,
    duplicate: DuplicateOpt = 0.0,
    seed: SeedOpt = 1,
    ec: EcOpt = None,
    ec_depth: EcDepthOpt = None,
    out_dir: OutOpt = Path("out"),
    as_json: JsonOpt = False,
) -> None:
    """Fax DOCUMENT through two spandsp engines back to back, in virtual time (no network).

    Shows what a real call would do, hundreds of times faster than real time; exits 1 when the
    receiver's T.30 result is not a complete success.
    """
    _fax_between_two_ends(
        command="simulate",
        document=document,
        mode=mode,
        ecm=ecm,
        resolution=resolution,
        paper=paper,
        network_args=dict(
            loss=loss,
            burst_loss=burst_loss,
            burst_len=burst_len,
            jitter_ms=jitter_ms,
            reorder=reorder,
            duplicate=duplicate,
            seed=seed,
        ),
        ec=ec,
        ec_depth=ec_depth,
        out_dir=out_dir,
        as_json=as_json,
        realtime=False,
    )


@app.command()
def loopback(
    document: Annotated[
        Path | None, typer.Argument(help="PDF, PNG, JPEG or TIFF to fax (default: the bundled sample).")
    ] = None,
    mode: ModeOpt = "t38",
    ecm: EcmOpt = True,
    resolution: ResolutionOpt = "fine",
    paper: PaperOpt = "a4",
    loss: LossOpt = 0.0,
    burst_loss: BurstLossOpt = 0.0,
    burst_len: BurstLenOpt = 3.0,
    jitter_ms: JitterOpt = 0.0,
    reorder: ReorderOpt = 0.0,
    duplicate: DuplicateOpt = 0.0,
    seed: SeedOpt = 1,
    ec: EcOpt = None,
    ec_depth: EcDepthOpt = None,
    out_dir: OutOpt = Path("out"),
    as_json: JsonOpt = False,
) -> None:
    """Fax DOCUMENT between two T.38 endpoints over real UDP sockets on 127.0.0.1, in real time.

    The datagrams cross an impairment relay (seeded loss, bursts, jitter, reordering, duplication);
    the fax takes as long as it would on a network. Reports like `vfax simulate`.
    """
    _fax_between_two_ends(
        command="loopback",
        document=document or documents.sample_document(),
        mode=mode,
        ecm=ecm,
        resolution=resolution,
        paper=paper,
        network_args=dict(
            loss=loss,
            burst_loss=burst_loss,
            burst_len=burst_len,
            jitter_ms=jitter_ms,
            reorder=reorder,
            duplicate=duplicate,
            seed=seed,
        ),
        ec=ec,
        ec_depth=ec_depth,
        out_dir=out_dir,
        as_json=as_json,
        realtime=True,
    )


def _parse_choice(option: str, value: str, choices: dict[str, Any]) -> Any:
    key = value.strip().lower()
    if key not in choices:
        fail(f"{option} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return choices[key]


if __name__ == "__main__":
    app()
