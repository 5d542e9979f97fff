"""`vfax send`, `vfax receive` and `vfax demo`: real fax calls over SIP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from sip.errors import SipError
from sip.identity import CallerIdentity, IdentityError
from sip.registration import normalize_registrar
from t38.engine import FaxEvent, Negotiated, PageDone
from vfax import documents
from vfax.call.dialing import DialPlan, normalize_number
from vfax.call.fax_call import CallOptions, CallOutcome, FaxCall
from vfax.call.line import (
    DEFAULT_KEEPALIVE_SECONDS,
    BadDestination,
    DnsUnavailable,
    FaxLine,
    LineConfig,
    Reception,
    dial_uri,
    parse_advertise,
    parse_nameserver,
)
from vfax.call.media import T38Policy
from vfax.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    DnsOpt,
    PageProgress,
    err,
    fail,
    out,
    print_json,
    print_report,
)
from vfax.cli.tls_options import TlsCaOpt, TlsCertOpt, TlsKeyOpt, TlsVerifyOpt, tls_settings
from vfax.documents import Resolution
from vfax.status import FaxStatus

T38Opt = Annotated[str, typer.Option("--t38", help="T.38 policy: auto, off, only or direct.")]
ServerOpt = Annotated[str | None, typer.Option(help="Registrar/PBX to register to, HOST[:PORT].")]
UserOpt = Annotated[str | None, typer.Option(help="SIP user (extension) for the registrar.")]
PasswordOpt = Annotated[
    str | None, typer.Option(help="SIP password for the registrar.", envvar="VFAX_SIP_PASSWORD")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SymmetricOpt = Annotated[
    bool | None,
    typer.Option(
        "--symmetric-media/--no-symmetric-media",
        help="Send RTP/UDPTL to where the peer's media really comes from (a peer behind a NAT), learned "
        "like Asterisk's strictrtp; media from elsewhere is then dropped. Default: on with --server, "
        "off without.",
        show_default=False,
    ),
]
SendServerOpt = Annotated[
    str | None, typer.Option(help="PBX/proxy to call through, HOST[:PORT] (see --register).")
]
ProxyOpt = Annotated[
    str | None,
    typer.Option(
        "--proxy",
        help="Outbound proxy, HOST[:PORT] or a SIP URI (sip:sbc.example;transport=tcp): every request "
        "outside a call goes there with Route: <proxy;lr>, the Request-URI unchanged.",
    ),
]
RegisterOpt = Annotated[
    bool,
    typer.Option(
        "--register",
        help="REGISTER at --server before the call and unregister after it. Not needed to call: the "
        "INVITE answers the PBX's digest challenge with --user/--password.",
    ),
]


def _host_port(value: str, option: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    host = host.strip("[]")
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        fail(f"{option} must be HOST:PORT with a port 0..65535, not {value!r}")
    return host or "127.0.0.1", number


def _policy(value: str) -> T38Policy:
    try:
        return T38Policy.parse(value)
    except ValueError as exc:
        fail(str(exc))
        raise


def outcome_json(outcome: CallOutcome, report_path: Path | None = None) -> dict[str, Any]:
    r = outcome.result
    return {
        "ok": outcome.ok,
        "status": status_text(outcome),
        "reason": outcome.end_reason,
        "pages": r.pages if r else 0,
        # what phase B negotiated, or null: never our own maximum dressed up as a result
        "bit_rate": r.bit_rate if r and r.bit_rate else None,
        "ecm": r.ecm if r and r.bit_rate else None,
        "media": outcome.media,
        "duration_seconds": outcome.duration_seconds,
        "sip_status": outcome.sip_status,
        "remote_ident": r.remote_ident if r else "",
        "t30": {"code": r.code, "text": r.text} if r else None,
        "call_id": outcome.report.get("call_id"),
        "caller": outcome.report.get("caller"),  # receiving: From, P-Asserted-Identity, Via, Record-Route
        "report": str(report_path) if report_path else None,
    }


def status_text(outcome: CallOutcome) -> str:
    """The FAX_DEV_STATUS name of how the call ended (vfax.status has the mapping table)."""
    return outcome.status.string_id


def _print_outcome(title: str, data: dict[str, Any]) -> None:
    print_report(data, title)


class _CallProgress:
    """Page progress of one call, fed by the engine's events (confirmed pages for a sender)."""

    def __init__(self, progress: PageProgress, sending: bool) -> None:
        self.progress = progress
        self.sending = sending

    def __call__(self, call: FaxCall, event: FaxEvent) -> None:
        p = self.progress.progress
        if isinstance(event, Negotiated):
            p.update(self.progress.task, description=f"{call.session.media.value if call.session else ''} "
                     f"{event.bit_rate} bit/s {'ECM' if event.ecm else 'no ECM'}")  # fmt: skip
        elif isinstance(event, PageDone):
            p.update(self.progress.task, completed=event.page)


AdvertiseOpt = Annotated[
    str | None,
    typer.Option(help="Behind a NAT that forwards our ports: the public IP or IP:PORT to write in Via,"
                 " Contact and SDP. Without it a registered line learns it from the registrar."),
]


def _advertise(value: str | None) -> tuple[str, int | None] | None:
    if value is None:
        return None
    try:
        return parse_advertise(value)
    except ValueError as exc:
        raise _SendInputError(f"--advertise {exc}") from None


def send_command(
    document: Annotated[Path, typer.Argument(help="PDF, PNG, JPEG or TIFF to fax.")],
    to: Annotated[str, typer.Option(help="Destination, sip:USER@HOST[:PORT] (or USER with --server).")],
    t38: T38Opt = "auto",
    ecm: Annotated[bool, typer.Option("--ecm/--no-ecm", help="Error correction mode.")] = True,
    resolution: Annotated[str, typer.Option(help="standard, fine or superfine.")] = "fine",
    ident: Annotated[str, typer.Option(help="Our fax number (TSI), up to 20 characters.")] = "",
    header: Annotated[str | None, typer.Option(help="Page header text printed on each page.")] = None,
    server: SendServerOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    register: RegisterOpt = False,
    listen: Annotated[
        str, typer.Option(help="Local SIP address, HOST[:PORT] (port 0: any).")
    ] = "127.0.0.1:0",
    report: Annotated[Path | None, typer.Option(help="Write the call report (JSON) here.")] = None,
    as_json: JsonOpt = False,
    dns: DnsOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_verify: TlsVerifyOpt = True,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    advertise: AdvertiseOpt = None,
    proxy: ProxyOpt = None,
    from_name: Annotated[
        str | None, typer.Option("--from-name", help="Display name in From (and P-Asserted-Identity).")
    ] = None,
    from_user: Annotated[
        str | None, typer.Option("--from-user", help="User part of From, e.g. our number +4930123456.")
    ] = None,
    asserted_identity: Annotated[
        str | None,
        typer.Option("--asserted-identity", help="P-Asserted-Identity (RFC 3325): sip: URI or tel:+NUMBER."),
    ] = None,
    dial_prefix: Annotated[
        str | None,
        typer.Option(help="What replaces the + of a number in --to: 00, \"\" (none) or + (default: +)."),
    ] = None,
    user_phone: Annotated[
        bool, typer.Option("--user-phone", help="Add ;user=phone to the Request-URI of a number in --to.")
    ] = False,
    symmetric_media: SymmetricOpt = None,
) -> None:
    """Fax DOCUMENT to a SIP destination, in T.38 or G.711; exits 1 unless every page was confirmed.

    With --server the call goes through that PBX, answering its 401/407 with --user/--password; it
    registers only with --register. With --proxy every request goes to that outbound proxy (a SIP trunk's
    SBC). --to may be a SIP URI, an extension or a telephone number (+49 30 123-456 is sent as
    +4930123456, or as --dial-prefix says).

    With --json every outcome, a failure before the call included, is one JSON object on stdout (ok=false
    and the reason); exit 1 for a failed fax, call or registration, 2 for unusable input.
    """
    try:
        policy = T38Policy.parse(t38)
        res = _send_choice("--resolution", resolution, {r.name.lower(): r for r in Resolution})
        host, port = _send_host_port(listen)
        nameservers = (_dns_server(dns),) if dns else ()
        tls = tls_settings(tls_ca, tls_verify, tls_cert, tls_key)
        public = _advertise(advertise)
        if (user or password) and not (server or proxy):
            raise _SendInputError("--user and --password go with --server (or --proxy)")
        if register and not (server and user and password is not None):
            raise _SendInputError("--register needs --server, --user and --password")
        if not to.lower().startswith(("sip:", "sips:")) and not (server or proxy):
            raise _SendInputError("--to must be a SIP URI (sip:USER@HOST[:PORT]) when no --server is given")
        _check_proxy(proxy)
        plan = _dial_plan(dial_prefix, user_phone)
        caller = _caller(from_name, from_user, asserted_identity)
        try:
            target = dial_uri(to, server or proxy, "--server", plan)
        except BadDestination as exc:
            raise _SendInputError(f"--to: {exc}") from None
        options = CallOptions(
            t38=policy, ecm=ecm, ident=ident, page_header=header, symmetric_media=symmetric_media
        )
        options.fax_config()
    except ValueError as exc:  # _SendInputError, T38Policy.parse, the fax options
        _send_failed(str(exc), as_json, EXIT_BAD_INPUT)
    with tempfile.TemporaryDirectory(prefix="vfax-send-") as work:
        try:
            prepared = documents.prepare_fax_tiff(document, Path(work) / "send.tif", resolution=res)
        except documents.DocumentError as exc:
            _send_failed(str(exc), as_json, EXIT_BAD_INPUT)
        config = LineConfig(
            name="send", listen_host=host, listen_port=port, server=server, user=user, password=password,
            call=options, nameservers=nameservers, tls=tls, advertise=public, outbound_proxy=proxy,
            caller=caller, dial=plan,
        )  # fmt: skip
        with PageProgress(prepared.pages, enabled=not as_json, label="send") as progress:
            on_event = _CallProgress(progress, True)
            outcome = asyncio.run(_send(config, prepared.path, target, on_event, register))
    if isinstance(outcome, _SendFailure):
        _send_failed(outcome.reason, as_json, outcome.exit_code, outcome.status, outcome.sip_status)
    report_path = None
    if report is not None:
        from vfax import storage

        report_path = storage.write_json(report, outcome.report)
    data = outcome_json(outcome, report_path)
    if as_json:
        print_json(data)
    else:
        _print_outcome("vfax send", data)
    if not outcome.ok:
        raise typer.Exit(EXIT_FAILED)


class _SendInputError(ValueError):
    """Unusable input to `vfax send` (exit 2)."""


@dataclass
class _SendFailure:
    """Why `vfax send` stopped before a call existed (nothing to put in a call report)."""

    reason: str
    exit_code: int = EXIT_FAILED
    status: str = FaxStatus.FS_LINE_UNAVAILABLE.string_id
    sip_status: int | None = None


def _send_choice(option: str, value: str, choices: dict[str, Any]) -> Any:
    key = value.strip().lower()
    if key not in choices:
        raise _SendInputError(f"{option} must be one of {', '.join(sorted(choices))}, not {value!r}")
    return choices[key]


def _send_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _SendInputError(f"--listen must be HOST:PORT with a port 0..65535, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _port_free(host: str, port: int) -> bool:
    """Whether ``port`` is free on ``host`` for both UDP and TCP (what a SIP listener binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _check_proxy(proxy: str | None) -> None:
    if proxy is None:
        return
    try:
        normalize_registrar(proxy)
    except SipError as exc:
        raise _SendInputError(f"--proxy must be HOST[:PORT] or a SIP URI, not {proxy!r}: {exc}") from None


def _dial_plan(prefix: str | None, user_phone: bool) -> DialPlan:
    try:
        return DialPlan(prefix=prefix, user_phone=user_phone)
    except ValueError as exc:
        raise _SendInputError(f"--dial-prefix: {exc}") from None


_CALLER_OPTIONS = {"name": "--from-name", "user": "--from-user", "asserted": "--asserted-identity"}


def _caller(name: str | None, user: str | None, asserted: str | None) -> CallerIdentity:
    """The caller identity of the options; a number typed with separators is sent without them."""
    try:
        number = normalize_number(user) if user is not None else None
        return CallerIdentity(name, number or user, asserted)
    except IdentityError as exc:
        raise _SendInputError(f"{_CALLER_OPTIONS[exc.field]}: {exc}") from None
    except BadDestination as exc:
        raise _SendInputError(f"--from-user: {exc}") from None


def _dns_server(value: str) -> tuple[str, int]:
    """``IP[:PORT]`` (``[v6]:PORT``) of the --dns server; port 53 by default."""
    try:
        return parse_nameserver(value)
    except ValueError as exc:
        raise _SendInputError(f"--dns {exc}") from None


def _send_failed(
    reason: str, as_json: bool, code: int, status: str | None = None, sip_status: int | None = None
) -> NoReturn:
    """End `vfax send` before (or without) a call: the reason on stderr, and with --json one object."""
    if as_json:
        status = status or FaxStatus.FS_FATAL_ERROR.string_id
        print_json({"ok": False, "status": status, "reason": reason, "sip_status": sip_status, "pages": 0,
                    "media": None, "call_id": None, "report": None})  # fmt: skip
    fail(reason, code)


async def _send(
    config: LineConfig, tiff: Path, target: str, on_event: Any, register: bool
) -> CallOutcome | _SendFailure:
    """Open the line, register only when asked, place the call; a failure before the call is returned."""
    try:
        line = await FaxLine.open(config)
    except OSError as exc:
        where = f"{config.listen_host}:{config.listen_port}"
        return _SendFailure(f"cannot listen on {where}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    try:
        if register:
            reg = await line.register()
            if not reg.ok:
                return _SendFailure(
                    f"registration at {config.server} failed: SIP {reg.status} {reg.reason}".strip(),
                    sip_status=reg.status,
                )
        line.on_event = on_event
        try:
            return await line.send(tiff, target)
        except BadDestination as exc:
            return _SendFailure(str(exc), EXIT_BAD_INPUT, FaxStatus.FS_BAD_ADDRESS.string_id)
        except DnsUnavailable as exc:
            return _SendFailure(str(exc))
    finally:
        await line.close()


def receive_command(
    inbox: Annotated[Path, typer.Option(help="Folder where received faxes land (TIFF, PDF, report).")],
    listen: Annotated[
        str | None,
        typer.Option(help="Local SIP address, HOST:PORT (default 127.0.0.1:5060; with --server, a free port"
                     " when 5060 is taken, since the registrar learns it)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the first call: 0 if it delivered a fax, 1 if not.")
    ] = False,
    t38: T38Opt = "auto",
    ident: Annotated[str, typer.Option(help="Our fax number (CSID), up to 20 characters.")] = "",
    channels: Annotated[int, typer.Option(help="Simultaneous calls; more get 486 Busy Here.", min=1)] = 4,
    server: ServerOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    keepalive: Annotated[
        float,
        typer.Option(help="With --server: seconds between OPTIONS keep-alives to the registrar (0: none).",
                     min=0, max=3600),
    ] = DEFAULT_KEEPALIVE_SECONDS,
    as_json: JsonOpt = False,
    tls_ca: TlsCaOpt = None,
    tls_verify: TlsVerifyOpt = True,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    advertise: AdvertiseOpt = None,
    dns: DnsOpt = None,
    proxy: ProxyOpt = None,
    symmetric_media: SymmetricOpt = None,
) -> None:
    """Answer fax calls and write each fax atomically into INBOX (TIFF, PDF and the call report).

    With --server the line registers there (through --proxy when given); each report names the caller
    (From, P-Asserted-Identity) and the proxies the INVITE came through."""
    policy = _policy(t38)
    host, port = _host_port(listen or "127.0.0.1:5060", "--listen", 5060)
    if listen is None and server and not _port_free(host, port):
        err.print(f"vfax receive: port {port} on {host} is taken: listening on a free port (we register it)")
        port = 0
    try:
        public = _advertise(advertise)
        nameservers = (_dns_server(dns),) if dns else ()
    except ValueError as exc:
        fail(str(exc))
    if (user or password) and not server:
        fail("--user and --password go with --server")
    try:
        _check_proxy(proxy)
    except ValueError as exc:
        fail(str(exc))
    if 0 < keepalive < 1:
        fail(f"--keepalive must be 0 (off) or at least 1 second, not {keepalive:g}")
    try:
        options = CallOptions(t38=policy, ident=ident, symmetric_media=symmetric_media)
        options.fax_config()
        tls = tls_settings(tls_ca, tls_verify, tls_cert, tls_key)
    except ValueError as exc:
        fail(str(exc))
    # with a certificate we listen on TLS too (a free port; the Contact we register names it)
    transports = ("udp", "tcp", "tls") if tls.cert is not None else ("udp", "tcp")
    config = LineConfig(
        name="receive", listen_host=host, listen_port=port, server=server, user=user, password=password,
        channels=channels, inbox=inbox, call=options, keepalive_interval=keepalive, tls=tls,
        transports=transports, advertise=public, nameservers=nameservers, outbound_proxy=proxy,
    )  # fmt: skip
    try:
        code = asyncio.run(_receive(config, once, as_json))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return
    raise typer.Exit(code)


async def _receive(config: LineConfig, once: bool, as_json: bool) -> int:
    line = await FaxLine.open(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if config.server:
            reg = await line.register()
            if not reg.ok:
                err.print(f"[bold red]error:[/] registration failed: {reg.status} {reg.reason}")
                return EXIT_FAILED
        host, port = line.address
        if not as_json:
            err.print(f"vfax receive: listening on {host}:{port} ({line.uri}), inbox {config.inbox}")
            public = line.registration.public_address if line.registration else None
            if public is not None:
                err.print(f"vfax receive: behind a NAT: registered as {public[0]}:{public[1]},"
                          " as the registrar sees us")  # fmt: skip
        code = 0
        while not stop.is_set():
            getter = asyncio.ensure_future(line.receptions.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            stopper.cancel()
            reception: Reception = getter.result()
            data = outcome_json(reception.outcome, reception.placed.report if reception.placed else None)
            if reception.placed:
                data |= {"out_tiff": str(reception.placed.tiff) if reception.placed.tiff else None,
                         "out_pdf": str(reception.placed.pdf) if reception.placed.pdf else None}  # fmt: skip
            if as_json:
                print_json(data)
            else:
                _print_outcome(f"vfax receive: call from {reception.outcome.report.get('remote', '?')}", data)
            if once:  # the first call, whatever became of it (no fax engine may ever have run)
                code = 0 if reception.outcome.ok else EXIT_FAILED
                break
        return code
    finally:
        await line.close()


def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo inbox.")] = Path("out/demo"),
    as_json: JsonOpt = False,
) -> None:
    """Two vfax devices on 127.0.0.1 in one process: the bundled sample sent in T.38, then in G.711.

    Real SIP calls, real media, real time (about 2½ minutes per fax); both reports are printed with the
    paths of the received PDFs.
    """
    with tempfile.TemporaryDirectory(prefix="vfax-demo-") as work:
        try:
            prepared = documents.prepare_fax_tiff(documents.sample_document(), Path(work) / "send.tif")
        except documents.DocumentError as exc:
            fail(str(exc))
        results = asyncio.run(_demo(prepared.path, prepared.pages, out_dir, as_json))
    if as_json:
        print_json(results)
    if not all(r["ok"] for r in results):
        raise typer.Exit(EXIT_FAILED)


async def _demo(tiff: Path, pages: int, out_dir: Path, as_json: bool) -> list[dict[str, Any]]:
    results = []
    for label, policy in (("T.38", T38Policy.AUTO), ("G.711", T38Policy.OFF)):
        receiver = await FaxLine.open(
            LineConfig(
                name="receiver", inbox=out_dir / "inbox", call=CallOptions(t38=policy, ident="VFAX DEMO RX")
            )
        )
        sender = await FaxLine.open(
            LineConfig(name="sender", call=CallOptions(t38=policy, ident="VFAX DEMO TX"))
        )
        try:
            with PageProgress(pages, enabled=not as_json, label=f"demo {label}") as progress:
                sender.on_event = _CallProgress(progress, True)
                sent = await sender.send(tiff, receiver.uri)
                reception = await asyncio.wait_for(receiver.receptions.get(), 30)
        finally:
            await sender.close()
            await receiver.close()
        data = outcome_json(reception.outcome, reception.placed.report if reception.placed else None)
        data |= {
            "fax": label,
            "sender": outcome_json(sent),
            "out_pdf": str(reception.placed.pdf) if reception.placed and reception.placed.pdf else None,
            "out_tiff": str(reception.placed.tiff) if reception.placed and reception.placed.tiff else None,
        }
        results.append(data)
        if not as_json:
            _print_outcome(f"vfax demo: {label} fax, as the receiver saw it", data)
    if not as_json:
        out.print("Received PDFs: " + ", ".join(str(r["out_pdf"]) for r in results))
    return results
