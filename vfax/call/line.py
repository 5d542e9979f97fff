"""A fax line: one SIP identity that places and answers fax calls.

A line owns a SIP user agent (its own sockets), an optional registration to a registrar/PBX, and a
channel limit (an INVITE beyond it gets 486 Busy Here). Incoming calls are received into an inbox
unless the owner (the device of vfax.call.device) takes them itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sip.identity import CallerIdentity
from sip.locate import LocateError, Locator
from sip.registration import Registration, RegistrationResult, normalize_registrar
from sip.useragent import IncomingInvite, UserAgent
from t38.engine import FaxEvent
from vfax.call.dialing import BadDestination, DialPlan, dial_uri
from vfax.call.fax_call import CallOptions, CallOutcome, FaxCall
from vfax.call.tls import TlsConfigError, TlsSettings, client_context, server_context
from vfax.inbox import Inbox, PlacedFax

log = logging.getLogger("vfax.line")

_PLACER: concurrent.futures.ThreadPoolExecutor | None = None


def _placer() -> concurrent.futures.ThreadPoolExecutor:
    """One thread places received faxes (TIFF commit, PDF, report), one fax after the other.

    The conversion is Python holding the GIL for milliseconds; with asyncio's default pool, calls
    ending together (bench/calls.py: 200 per process) had six threads converting at once and the media
    clock's thread got the GIL a sixth of the time: ~1 s of skipped ticks for the calls still running.
    One thread leaves the loop at least every other GIL turn; the faxes are safe in their part files
    meanwhile."""
    global _PLACER
    if _PLACER is None:
        _PLACER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfax-inbox")
    return _PLACER



#: Keep-alive interval of a registered line (vfax.toml devices' default, and `vfax receive --server`):
#: OPTIONS to the registrar this often notices a dead registrar within seconds, not at the next refresh.
DEFAULT_KEEPALIVE_SECONDS = 30.0

#: Retry-After of the 503 a draining line answers (RFC 3261 §21.5.4: without it a client must take the 503
#: as a 500). Kamailio's dispatcher ignores it and probes every few seconds anyway; a client that honours
#: it keeps away from this node for a minute, about what an upgrade takes, while other nodes take its calls.
DRAIN_RETRY_AFTER_SECONDS = 60


class DnsUnavailable(RuntimeError):
    """DNS did not answer for the destination's name (the network's fault; a later try may work)."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[V6]:PORT`` of a DNS server (port 53 by default); ValueError saying why."""
    host, port = parse_advertise(text, what="a DNS server")
    return host, 53 if port is None else port


def parse_advertise(text: str, what: str = "") -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` → (host, port or None); the host must be an IP address (it
    goes into SDP, where a name would need the peer to resolve it). Raises ValueError saying why."""
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"must be an IP address, IP:PORT or [IPv6]:PORT, not {text!r}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host = text
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"must be an IP address (optionally with :PORT), not {text!r}") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{host} cannot be {what or 'advertised'}: nothing can be sent to it")
    if port is None:
        return str(ip), None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1..65535, not {port!r}")
    return str(ip), int(port)


@dataclass
class LineConfig:
    name: str = "line"
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    transports: tuple[str, ...] = ("udp", "tcp")
    server: str | None = None  # registrar/PBX, HOST[:PORT] or a SIP URI
    user: str | None = None
    password: str | None = None
    register_expires: int = 3600
    #: Seconds between OPTIONS keep-alives to the registrar while registered (0: none). A registrar that
    #: does not answer one makes the line unregistered at once (sip.registration).
    keepalive_interval: float = 0.0
    channels: int = 4
    allow_invite_from: tuple[str, ...] | None = None  # None: anyone; with a server, its address is added
    inbox: Path | None = None
    call: CallOptions = field(default_factory=CallOptions)
    #: DNS servers (ip, port) for RFC 3263 lookups of names in --to/server; empty: the system's.
    nameservers: tuple[tuple[str, int], ...] = ()
    #: SIP over TLS (vfax.call.tls): the peer's certificate is verified unless ``verify=False``.
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: Our public address behind a NAT with forwarded ports (HOST, or HOST and PORT): written in Via,
    #: Contact and SDP instead of the bound address; then no Contact rewriting from the registrar's answer.
    advertise: tuple[str, int | None] | None = None
    #: Outbound proxy (RFC 3261 §8.1.2), HOST[:PORT] or a SIP URI: every out-of-dialog request of the line
    #: (INVITE, REGISTER, keep-alive OPTIONS) goes there with a ``Route: <proxy;lr>``, the Request-URI
    #: unchanged; a name is located by RFC 3263. None: requests go to the server (or the destination).
    outbound_proxy: str | None = None
    #: From display name/user and P-Asserted-Identity of our calls (a send may override them).
    caller: CallerIdentity = field(default_factory=CallerIdentity)
    #: How telephone numbers in a destination are dialled (``+`` replaced, ``;user=phone``).
    dial: DialPlan = field(default_factory=DialPlan)

    @property
    def proxy_uri(self) -> str | None:
        """The outbound proxy as a SIP URI (``sip:host:port;transport=tcp``), or None."""
        return str(normalize_registrar(self.outbound_proxy)) if self.outbound_proxy else None


def _uses_tls(config: LineConfig) -> bool:
    """TLS settings given, a TLS listener, or a registrar reached over TLS (``sips:``/``transport=tls``)."""
    server = (config.server or "").lower()
    return (
        config.tls != TlsSettings()
        or "tls" in config.transports
        or server.startswith("sips:")
        or "transport=tls" in server
    )


def _merge(line: CallerIdentity, send: CallerIdentity | None) -> CallerIdentity:
    """The caller identity of one send: its own fields, the line's where it gives none."""
    if send is None:
        return line
    return CallerIdentity(
        name=send.name if send.name is not None else line.name,
        user=send.user if send.user is not None else line.user,
        asserted=send.asserted if send.asserted is not None else line.asserted,
    )


@dataclass
class Reception:
    outcome: CallOutcome
    placed: PlacedFax | None


EventCallback = Callable[[FaxCall, FaxEvent], None]


class FaxLine:
    def __init__(self, config: LineConfig, ua: UserAgent) -> None:
        self.config = config
        self.ua = ua
        self.registration: Registration | None = None
        self.inbox = Inbox(config.inbox) if config.inbox else None
        self.active: set[FaxCall] = set()
        self.last_call: FaxCall | None = None  # the most recent call (tests and diagnostics)
        self.unavailable = False  # draining: new calls are refused (set_unavailable)
        self.receptions: asyncio.Queue[Reception] = asyncio.Queue()
        #: Takes an offered call instead of the inbox; must return once the call is over.
        self.on_incoming: Callable[[IncomingInvite], Awaitable[None]] | None = None
        self.on_event: EventCallback | None = None
        self.on_progress: Callable[[FaxCall, str], None] | None = None
        #: See FaxCall.route_media (tests and benchmarks put an impairment relay in the media path).
        self.route_media: Callable[[str, tuple[str, int]], tuple[str, int]] | None = None
        ua.on_invite = self._incoming

    @classmethod
    async def open(cls, config: LineConfig) -> FaxLine:
        allow = config.allow_invite_from
        tls_client = client_context(config.tls, config.name) if _uses_tls(config) else None
        tls_server = server_context(config.tls) if "tls" in config.transports else None
        if "tls" in config.transports and tls_server is None:
            raise TlsConfigError("tls_cert", "listening on TLS needs a certificate (tls_cert)")
        ua = await UserAgent.create(
            config.listen_host,
            config.listen_port,
            config.transports,
            contact_user=config.user or "vfax",
            allow_invite_from=allow,
            tls_client=tls_client,
            tls_server=tls_server,
            advertise_host=config.advertise[0] if config.advertise else None,
            advertise_port=config.advertise[1] if config.advertise else None,
        )
        if config.nameservers:
            ua.locator = Locator(config.nameservers)
        if config.outbound_proxy:  # the core's default next hop for out-of-dialog requests
            ua.core.config.outbound_proxy = config.proxy_uri
        line = cls(config, ua)
        return line

    async def register(self) -> RegistrationResult:
        """Register to the configured server and keep the binding fresh (raises nothing: see result)."""
        c = self.config
        if not (c.server and c.user and c.password is not None):
            raise ValueError("registration needs server, user and password")
        self.registration = Registration(
            self.ua, c.server, c.user, c.password, expires=c.register_expires, proxy=c.proxy_uri,
            keepalive_interval=c.keepalive_interval or None, keepalive="options",
        )  # fmt: skip
        return await self.registration.start()

    async def close(self) -> None:
        for call in list(self.active):
            await call.abort("line closing")
        if self.registration is not None:
            try:
                await asyncio.wait_for(self.registration.stop(), 5.0)
            except Exception:
                log.warning("%s: unregister failed", self.config.name)
        await self.ua.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.ua.local_address

    @property
    def uri(self) -> str:
        host, port = self.address
        user = self.config.user or "vfax"
        return f"sip:{user}@{host}:{port}"

    # --- sending --------------------------------------------------------------------------------------
    async def send(
        self,
        tiff: Path,
        to: str,
        *,
        options: CallOptions | None = None,
        name: str = "send",
        on_call: Callable[[FaxCall], None] | None = None,
        caller: CallerIdentity | None = None,
    ) -> CallOutcome:
        """Send a prepared TIFF-F to ``to``; through the outbound proxy, else the registrar, when the
        line has one. ``caller`` replaces the line's caller identity (its unset fields keep the line's)."""
        if len(self.active) >= self.config.channels:
            raise RuntimeError(f"all {self.config.channels} channels of {self.config.name} are busy")
        to = self.target_uri(to)
        c = self.config
        credentials = (c.user, c.password) if c.user and c.password is not None else None
        proxy = c.proxy_uri or (str(normalize_registrar(c.server)) if c.server else None)
        identity = _merge(c.caller, caller)
        from_ = identity.from_address(c.user or "vfax", self._from_host())
        try:  # RFC 3263: NAPTR, SRV, A/AAAA of the next hop; the INVITE tries each target in turn
            targets = await self.ua.locate(to, proxy=proxy)
        except LocateError as exc:
            if exc.not_found:
                raise BadDestination(str(exc)) from None
            raise DnsUnavailable(str(exc)) from None
        call = FaxCall(self.ua, options or self.config.call, send_file=tiff, name=name)
        self._prepare(call)
        if on_call is not None:
            on_call(call)
        self.active.add(call)
        try:
            return await call.place(
                to, proxy=proxy, credentials=credentials, targets=targets,
                from_uri=str(from_) if from_ is not None else None, headers=identity.headers(),
            )  # fmt: skip
        finally:
            self.active.discard(call)

    def target_uri(self, to: str) -> str:
        """``to`` as the Request-URI: numbers and extensions go to the server's (else the proxy's) domain."""
        c = self.config
        return dial_uri(to, c.server or c.outbound_proxy, c.name, c.dial)

    def _from_host(self) -> str:
        """The host of our From: the server's domain (the account's), else our own address."""
        if self.config.server:
            return normalize_registrar(self.config.server).host
        host = self.ua.local_address[0]
        return f"[{host}]" if ":" in host else host

    def _prepare(self, call: FaxCall) -> None:
        call.on_event = self.on_event
        call.on_progress = self.on_progress
        if call.options.symmetric_media is None:  # towards a registrar/PBX the peer may be behind a NAT
            call.symmetric_media = self.config.server is not None
        if self.route_media is not None:
            call.route_media = self.route_media
        self.last_call = call

    # --- receiving ------------------------------------------------------------------------------------
    def set_unavailable(self, unavailable: bool) -> None:
        """A draining node's line: OPTIONS and new INVITEs are answered 503 with Retry-After by the SIP core
        (a dispatcher probing with OPTIONS takes the node out of rotation, and tries the next node with an
        INVITE sent meanwhile); calls in progress go on, outgoing calls can still be placed."""
        self.unavailable = unavailable
        self.ua.set_unavailable(unavailable, retry_after=DRAIN_RETRY_AFTER_SECONDS)

    async def _incoming(self, incoming: IncomingInvite) -> None:
        if self.unavailable:  # the INVITE was handed over just before the line became unavailable
            await incoming.reject(503, headers={"Retry-After": str(DRAIN_RETRY_AFTER_SECONDS)})
            return
        if len(self.active) >= self.config.channels:
            await incoming.reject(486, "Busy Here")
            return
        if self.on_incoming is not None:
            await self.on_incoming(incoming)
            return
        if self.inbox is None:
            await incoming.reject(480, "Temporarily Unavailable")
            return
        reception = await self.receive(incoming, self.inbox)
        await self.receptions.put(reception)

    async def receive(
        self,
        incoming: IncomingInvite,
        inbox: Inbox,
        options: CallOptions | None = None,
        *,
        on_call: Callable[[FaxCall], None] | None = None,
        part: Path | None = None,
    ) -> Reception:
        """Answer ``incoming``, receive into ``inbox``, and place the result there."""
        part = part or inbox.new_part_file()
        call = FaxCall(self.ua, options or self.config.call, receive_file=part, name="receive")
        self._prepare(call)
        if on_call is not None:
            on_call(call)
        self.active.add(call)
        try:
            outcome = await call.answer(incoming)
        finally:
            self.active.discard(call)
        pages = outcome.result.pages if outcome.result else 0
        placed = None
        if pages > 0 or outcome.result is not None or outcome.answered:
            # every answered call leaves its report, even one where no fax engine ever ran (t38=only
            # refused, the peer gone before T.30); an INVITE refused outright (a scanner's) leaves a log line
            # fsyncs and the PDF take milliseconds: off the event loop, or every call's media stalls
            placed = await asyncio.get_running_loop().run_in_executor(
                _placer(), inbox.place, part, outcome.report, pages, outcome.ok
            )
        else:
            part.unlink(missing_ok=True)
        return Reception(outcome, placed)
