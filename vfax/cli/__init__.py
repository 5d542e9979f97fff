"""The `vfax` command line: one command per thing a fax user wants to do."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from t38.engine import Media
from vfax import documents
from vfax.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    PageProgress,
    fail,
    parse_choice,
    print_json,
    print_report,
    setup_logging,
)
from vfax.documents import PaperSize, Resolution

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "app"]

app = typer.Typer(
    help="vfax: a virtual fax device for SIP networks (T.38 and G.711 passthrough).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-v, -vv).")
    ] = 0,
) -> None:
    setup_logging(verbose)


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
    from vfax.cli.simulate import NetworkModel, SimulationRequest, run_pair, simulate

    media = parse_choice("--mode", mode, {"t38": Media.T38, "g711": Media.AUDIO, "audio": Media.AUDIO})
    res = parse_choice("--resolution", resolution, {r.name.lower(): r for r in Resolution})
    size = parse_choice("--paper", paper, {p.name.lower(): p for p in PaperSize})
    ec_mode = None if ec is None else parse_choice("--ec", ec, {k: k for k in ("none", "redundancy", "fec")})
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
        from vfax.cli.loopback import run_pair_realtime

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


def _register_commands() -> None:
    """Commands that live in their own modules (imported here so `vfax --help` lists them all)."""
    from vfax.cli import fax, health, report, serve, service, sip

    app.command("send")(fax.send_command)
    app.command("receive")(fax.receive_command)
    app.command("demo")(fax.demo_command)
    app.command("register")(sip.register_command)
    app.command("serve")(serve.serve_command)
    app.command("submit")(service.submit_command)
    app.command("jobs")(service.jobs_command)
    app.command("status")(service.status_command)
    app.command("cancel")(service.cancel_command)
    app.command("faxes")(service.faxes_command)
    app.command("nodes")(service.nodes_command)
    app.command("health")(health.health_command)
    app.command("options")(sip.options_command)
    app.command("report")(report.report_command)


_register_commands()
