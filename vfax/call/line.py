"""A fax line: one SIP identity that places and answers fax calls.

A line owns a SIP user agent (its own sockets), an optional registration to a registrar/PBX, and a
channel limit (an INVITE beyond it gets 486 Busy Here). Incoming calls are received into an inbox
unless the owner (the device of vfax.call.device) takes them itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sip.errors import SipError
from sip.locate import LocateError, Locator
from sip.registration import Registration, RegistrationResult, normalize_registrar
from sip.uri import SipUri
from sip.useragent import IncomingInvite, UserAgent
from t38.engine import FaxEvent
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


class BadDestination(ValueError):
    """A destination that cannot be dialled (the user's input, not the network's fault)."""


class DnsUnavailable(RuntimeError):
    """DNS did not answer for the destination's name (the network's fault; a later try may work)."""


def dial_uri(to: str, server: str | None, line: str = "the line") -> str:
    """``to`` as a SIP URI: an extension alone goes to the line's server (``sip:2000@pbx``).
    Raises BadDestination for anything that cannot be dialled."""
    to = to.strip()
    if to.lower().startswith(("sip:", "sips:")):
        try:
            SipUri.parse(to)
        except SipError as exc:
            raise BadDestination(f"destination {to!r} is not a valid SIP URI: {exc}") from None
        return to
    if not to or any(c in to for c in ' <>@;:"\r\n'):
        raise BadDestination(f"destination {to!r} is neither a SIP URI nor an extension")
    if not server:
        raise BadDestination(f"destination {to!r} is not a SIP URI and {line} has no server")
    registrar = normalize_registrar(server)
    host = f"{registrar.host}:{registrar.port}" if registrar.port else registrar.host
    return f"sip:{to}@{host}"


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


def _uses_tls(config: LineConfig) -> bool:
    """TLS settings given, a TLS listener, or a registrar reached over TLS (``sips:``/``transport=tls``)."""
    server = (config.server or "").lower()
    return (
        config.tls != TlsSettings()
        or "tls" in config.transports
        or server.startswith("sips:")
        or "transport=tls" in server
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
        )
        if config.nameservers:
            ua.locator = Locator(config.nameservers)
        line = cls(config, ua)
        return line

    async def register(self) -> RegistrationResult:
        """Register to the configured server and keep the binding fresh (raises nothing: see result)."""
        c = self.config
        if not (c.server and c.user and c.password is not None):
            raise ValueError("registration needs server, user and password")
        self.registration = Registration(
            self.ua, c.server, c.user, c.password, expires=c.register_expires,
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
    ) -> CallOutcome:
        """Send a prepared TIFF-F to ``to``; through the registrar when the line has one."""
        if len(self.active) >= self.config.channels:
            raise RuntimeError(f"all {self.config.channels} channels of {self.config.name} are busy")
        to = self.target_uri(to)
        c = self.config
        credentials = (c.user, c.password) if c.user and c.password is not None else None
        proxy = str(normalize_registrar(c.server)) if c.server else None
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
            return await call.place(to, proxy=proxy, credentials=credentials, targets=targets)
        finally:
            self.active.discard(call)

    def target_uri(self, to: str) -> str:
        return dial_uri(to, self.config.server, self.config.name)

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
