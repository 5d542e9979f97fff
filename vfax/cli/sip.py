"""SIP commands of the ``vfax`` CLI: ``vfax register`` (try a SIP account) and ``vfax options`` (ping a peer).

Both start a short-lived user agent, do one thing, print the outcome (a line, or JSON with ``--json``) and
exit 0 on success or 1 with the SIP status and reason. They are wired in ``vfax/cli/__init__.py`` with
``app.command("register")(register_command)`` and ``app.command("options")(options_command)``.

``vfax options`` tells two things apart that a bare status code mixes up: whether the peer answered at
all (``reachable``: any response from it, a 401 included) and whether it accepted us (``authorized``).
A PBX such as Asterisk challenges OPTIONS from its devices; with ``--user``/``--password`` the challenge is
answered once (a new request with a new CSeq and the Authorization header) and the final status reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from typing import Annotated, Any

import typer

from sip.errors import SipError
from sip.locate import LocateError, Locator, is_ip
from sip.registration import Registration, normalize_registrar
from sip.uri import SipUri
from sip.useragent import UserAgent, answered_by_peer
from vfax.call.line import parse_nameserver
from vfax.call.tls import TlsSettings, client_context
from vfax.cli.common import DnsOpt
from vfax.cli.tls_options import TlsCaOpt, TlsCertOpt, TlsKeyOpt, TlsVerifyOpt, tls_settings

__all__ = ["options_command", "register_command"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _local_host_for(host: str, port: int) -> str:
    """The local address the kernel would use towards ``host`` (a connected UDP socket sends nothing)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return "127.0.0.1"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(addr)
            return str(probe.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"


async def _local_toward(uri: SipUri, transport: str, port: int, nameserver: tuple[str, int] | None) -> str:
    """The local address towards ``uri``'s host; a name is located first (with ``nameserver`` if given,
    so that a test's names never reach the system's resolver)."""
    host = uri.host_ip
    if not is_ip(host):
        try:
            targets = await Locator([nameserver] if nameserver else None).locate(uri, [transport])
        except LocateError:
            return "127.0.0.1"  # the request itself will fail, naming the host
        host, port = targets[0][1], targets[0][2]
    return _local_host_for(host, port)


def _nameserver(dns: str | None) -> tuple[str, int] | None:
    try:
        return parse_nameserver(dns) if dns else None
    except ValueError as exc:
        _bad_input(f"--dns {exc}")
        raise AssertionError("unreachable") from None


def _emit(data: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        typer.echo(line)


def _bad_input(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


async def _register(
    server: str,
    user: str,
    password: str,
    transport: str,
    expires: int,
    domain: str | None,
    bind: str | None,
    proxy: str | None = None,
    tls: TlsSettings | None = None,
    nameserver: tuple[str, int] | None = None,
) -> dict[str, Any]:
    registrar = normalize_registrar(server, transport)
    outbound = normalize_registrar(proxy) if proxy else None
    hop = outbound or registrar
    default_port = 5061 if transport == "tls" or hop.scheme == "sips" else 5060
    local = bind or await _local_toward(hop, transport, hop.port or default_port, nameserver)
    # the proxy's own transport (sip:sbc;transport=tcp) needs that socket too
    transports = tuple(dict.fromkeys([transport, (outbound.transport if outbound else None) or transport]))
    if "tls" in transports:  # a client only: the TLS connection is ours; Contact names its TCP port
        transports = tuple(dict.fromkeys(["tcp" if t == "tls" else t for t in transports]))
        context = client_context(tls or TlsSettings(), "register")
        ua = await UserAgent.create(local, 0, transports, contact_user=user, tls_client=context)
    else:
        ua = await UserAgent.create(local, 0, transports, contact_user=user)
    if nameserver is not None:
        ua.locator = Locator([nameserver])
    try:
        reg = Registration(
            ua, registrar, user, password, expires=expires, domain=domain, transport=transport,
            proxy=str(outbound) if outbound else None,
        )  # fmt: skip
        result = await reg.register_once()
        data: dict[str, Any] = {
            "status": result.status,
            "reason": result.reason,
            "registered": result.ok,
            "expires": result.expires,
            "contact": result.contact,
            "rtt_ms": round(result.rtt_ms, 1),
            "registrar": str(registrar),
            "proxy": str(outbound) if outbound else None,
            "user": user,
        }
        if result.ok:
            data["unregistered"] = (await reg.unregister()).ok
        return data
    finally:
        await ua.close()


def register_command(
    server: Annotated[str, typer.Option("--server", help="Registrar as HOST[:PORT] or a sip: URI.")],
    user: Annotated[str, typer.Option("--user", help="SIP user name (also the digest user name).")],
    password: Annotated[str, typer.Option("--password", help="SIP password for digest authentication.")],
    transport: Annotated[str, typer.Option("--transport", help="udp, tcp or tls.")] = "udp",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    expires: Annotated[
        int, typer.Option("--expires", help="Requested registration interval, seconds.")
    ] = 300,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Domain of the address of record (default: the server host)."),
    ] = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Local IP address to use.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after this many seconds.")] = 40.0,
    proxy: Annotated[
        str | None,
        typer.Option(
            "--proxy",
            help="Outbound proxy, HOST[:PORT] or a sip: URI (;transport=udp/tcp): the REGISTER goes "
            "there with Route: <proxy;lr>, its Request-URI still the registrar.",
        ),
    ] = None,
    tls_ca: TlsCaOpt = None,
    tls_verify: TlsVerifyOpt = True,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    dns: DnsOpt = None,
) -> None:
    """Register a SIP account, print status, expiry, contact and round-trip time, then unregister.

    Over TLS (--transport tls, or a sips: server) the registrar's certificate is verified against --tls-ca
    and must name the server's host; --tls-cert/--tls-key present a client certificate."""
    transport = transport.lower()
    if server.lower().startswith("sips:") and transport == "udp":
        transport = "tls"
    if transport not in ("udp", "tcp", "tls"):
        _bad_input(f"unsupported transport {transport!r} (use udp, tcp or tls)")
    try:
        tls = tls_settings(tls_ca, tls_verify, tls_cert, tls_key)
    except ValueError as exc:
        _bad_input(str(exc))
        return
    nameserver = _nameserver(dns)
    if proxy is not None:
        try:
            proxy_transport = normalize_registrar(proxy).transport
        except SipError as exc:
            _bad_input(f"--proxy must be HOST[:PORT] or a SIP URI, not {proxy!r}: {exc}")
            return
        if proxy_transport not in (None, "udp", "tcp"):
            _bad_input(f"--proxy: unsupported transport {proxy_transport!r} (use udp or tcp)")
    try:
        data = asyncio.run(
            asyncio.wait_for(
                _register(server, user, password, transport, expires, domain, bind, proxy, tls, nameserver),
                timeout,
            )
        )
    except TimeoutError:
        data = {"status": 408, "reason": "Request Timeout", "registered": False, "user": user}
    except (SipError, ValueError, OSError) as exc:
        _bad_input(str(exc))
        return
    if data.get("registered"):
        line = (
            f"registered {user} at {data['registrar']}: {data['status']} {data['reason']}, "
            f"expires {data['expires']} s, contact {data['contact']}, rtt {data['rtt_ms']} ms"
        )
    else:
        line = f"registration of {user} failed: SIP {data['status']} {data['reason']}"
    _emit(data, json_out, line)
    if not data.get("registered"):
        raise typer.Exit(EXIT_FAILED)


#: Final statuses that mean "you are not allowed", as opposed to "no such thing here" (404, 405...).
_NOT_AUTHORIZED = (401, 403, 407)


def _authorized(status: int, reachable: bool) -> bool | None:
    """True for 2xx, False for a refusal of who we are (401/403/407), None when it says nothing about it."""
    if not reachable:
        return None
    if 200 <= status < 300:
        return True
    return False if status in _NOT_AUTHORIZED else None


async def _options(
    uri: SipUri,
    transport: str | None,
    bind: str | None,
    user: str | None,
    password: str | None,
    tls: TlsSettings | None = None,
    nameserver: tuple[str, int] | None = None,
) -> dict[str, Any]:
    tr = transport or uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    local = bind or await _local_toward(uri, tr, uri.port or (5061 if tr == "tls" else 5060), nameserver)
    if tr == "tls":  # a client only: the TLS connection is ours, the answer comes back on it
        ua = await UserAgent.create(
            local, 0, ("tcp",), contact_user=user or "vfax",
            tls_client=client_context(tls or TlsSettings(), "options"),
        )  # fmt: skip
    else:
        ua = await UserAgent.create(local, 0, (tr,), contact_user=user or "vfax")
    if nameserver is not None:
        ua.locator = Locator([nameserver])
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        credentials = (user, password) if user and password is not None else None
        # the PBX finds the account by the From user (Asterisk's identify_by=username, Kamailio's $fU)
        from_ = f"<sip:{user}@{uri.host}>" if user else None
        targets = await ua.locate(uri, transport=transport)  # RFC 3263 for a name; None for an address
        oreq = ua.start_request(
            "OPTIONS", uri, transport=tr, credentials=credentials, from_=from_, targets=targets
        )
        resp = await oreq.user_data
        rtt = (loop.time() - started) * 1000.0
        reachable = answered_by_peer(resp)
        return {
            "uri": str(uri),
            "status": resp.status,
            "reason": resp.reason,
            "reachable": reachable,
            "authorized": _authorized(resp.status, reachable),
            "challenged": oreq.attempts > 0,
            "rtt_ms": round(rtt, 1),
            "allow": resp.allow,
            "supported": resp.supported,
            "server": resp.headers.get("Server") or resp.headers.get("User-Agent"),
        }
    finally:
        with contextlib.suppress(Exception):
            await ua.close()


def _options_line(data: dict[str, Any], user: str | None) -> str:
    uri, status, reason = data["uri"], data["status"], data["reason"]
    if not data.get("reachable"):
        return f"{uri}: not reachable (SIP {status} {reason}: no answer from the peer)"
    answered = f"{status} {reason} in {data['rtt_ms']} ms"
    if data.get("server"):
        answered += f" ({data['server']})"
    if 200 <= status < 300:
        how = f", digest answered as {user}" if data.get("challenged") else ""
        return f"{uri}: reachable, {answered}{how}"
    if data.get("authorized") is False:
        hint = "credentials refused" if user else "give --user and --password"
        return f"{uri}: reachable but not authorized: SIP {answered} ({hint})"
    return f"{uri}: reachable, but SIP {answered}"


def options_command(
    uri: Annotated[str, typer.Argument(help="The peer to ping, e.g. sip:pbx.example.net:5060.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    transport: Annotated[str | None, typer.Option("--transport", help="udp or tcp.")] = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Local IP address to use.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after this many seconds.")] = 40.0,
    user: Annotated[
        str | None, typer.Option("--user", help="SIP user: the From user and the digest user name.")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="VFAX_SIP_PASSWORD", help="SIP password, to answer a 401/407."),
    ] = None,
    tls_ca: TlsCaOpt = None,
    tls_verify: TlsVerifyOpt = True,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    dns: DnsOpt = None,
) -> None:
    """Send a SIP OPTIONS ping; print the status, the round-trip time and whether the peer is reachable.

    A peer that challenges OPTIONS (Asterisk does) is answered with --user/--password. Exit 0 for a 2xx
    answer; 1 otherwise, the output saying whether the peer answered at all (reachable) and whether it
    accepted us (authorized; a 401/403/407 is reachable but not authorized); 2 for unusable input.
    """
    try:
        target = SipUri.parse(uri if uri.lower().startswith(("sip:", "sips:")) else f"sip:{uri}")
    except SipError as exc:
        _bad_input(f"bad SIP URI {uri!r}: {exc}")
        return
    if transport is not None and transport.lower() not in ("udp", "tcp", "tls"):
        _bad_input(f"unsupported transport {transport!r} (use udp, tcp or tls)")
    if user is not None and password is None:
        _bad_input("--user needs --password (or VFAX_SIP_PASSWORD) to answer a challenge")
    tr = transport and transport.lower()
    try:
        tls = tls_settings(tls_ca, tls_verify, tls_cert, tls_key)
    except ValueError as exc:
        _bad_input(str(exc))
        return
    nameserver = _nameserver(dns)
    try:
        options = _options(target, tr, bind, user, password, tls, nameserver)
        data = asyncio.run(asyncio.wait_for(options, timeout))
    except TimeoutError:
        data = {"uri": str(target), "status": 408, "reason": "Request Timeout", "reachable": False,
                "authorized": None, "challenged": False}  # fmt: skip
    except (SipError, ValueError, OSError) as exc:
        _bad_input(str(exc))
        return
    ok = 200 <= data["status"] < 300
    _emit(data, json_out, _options_line(data, user))
    if not ok:
        raise typer.Exit(EXIT_FAILED)
