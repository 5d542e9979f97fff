"""The asyncio ``UserAgent``: the application's API over the sans-I/O core (``sip.core``) and the sockets.

One ``UserAgent`` per device: one ``TransportSet`` (UDP, TCP, TLS when configured), one
``UserAgentCore``, one ``loop.call_at`` handle for the core's next timer, no thread per call. Each input
(datagram, stream message, timer) is fed to the core; its transmits go to the sockets and its events
resolve futures or run the application's handlers as tasks.

Outgoing: ``result = await ua.invite(uri, sdp)``; ``pending = ua.invite(...)`` also offers
``await pending.cancel()`` before the answer. Incoming: ``ua.on_invite = async def handler(incoming)``
where ``incoming`` offers ``ringing()``, ``accept(sdp)``, ``reject(status)``. In a call, ``CallSession``
offers ``reinvite(sdp)``, ``bye()`` and the hooks ``on_reinvite``, ``on_bye``, ``on_terminated``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from sip.auth import DigestClient
from sip.core import (
    Call,
    CallAnswered,
    CallConfirmed,
    CallFailed,
    CallProgress,
    CallState,
    CallTerminated,
    CoreConfig,
    Event,
    IncomingCall,
    OutgoingRequest,
    ReinviteReceived,
    ReinviteResult,
    RequestCompleted,
    UsageError,
    UserAgentCore,
)
from sip.dialog import Dialog
from sip.errors import SipParseError
from sip.locate import Locator, is_ip
from sip.message import Headers, Request, Response
from sip.transaction import Address
from sip.transport import TransportSet
from sip.uri import NameAddr, SipUri

__all__ = [
    "CallSession",
    "IncomingInvite",
    "InviteResult",
    "OutgoingInvite",
    "ReinviteOutcome",
    "UserAgent",
    "answered_by_peer",
]

log = logging.getLogger(__name__)

#: How long (in 10 ms ticks) a re-INVITE waits for the application to attach its handler to a new session.
REINVITE_HANDLER_WAIT_TICKS = 100

Credentials = DigestClient | tuple[str, str] | None


def answered_by_peer(response: Response) -> bool:
    """True when ``response`` came from the peer: the 408/503 the core makes up on a timeout or a
    transport error has no To tag, and every final response a UAS or proxy sends has one (§8.2.6.2).
    Any answer, a 401 or a 404 included, proves the peer is reachable."""
    if response.status not in (408, 503):
        return True
    try:
        return bool(response.to.tag)
    except SipParseError:  # ours are well formed
        return True


def _auth(credentials: Credentials) -> DigestClient | None:
    if credentials is None or isinstance(credentials, DigestClient):
        return credentials
    user, password = credentials
    return DigestClient(user, password)


def _headers(headers: Headers | dict[str, str] | Iterable[tuple[str, str]] | None) -> Headers | None:
    if headers is None or isinstance(headers, Headers):
        return headers
    items = headers.items() if isinstance(headers, dict) else headers
    return Headers(list(items))


@dataclass(slots=True)
class InviteResult:
    """The final outcome of an outgoing INVITE: a ``session`` when answered 2xx."""

    status: int
    reason: str
    response: Response | None
    session: CallSession | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def remote_sdp(self) -> bytes:
        """The 2xx's body, or the answer a reliable 18x carried when the 2xx has none (RFC 3262 §5)."""
        if self.response is None or not self.ok:
            return b""
        return self.response.body or (self.session.remote_sdp if self.session is not None else b"")

    @property
    def dialog(self) -> Dialog | None:
        return self.session.dialog if self.session else None


@dataclass(slots=True)
class ReinviteOutcome:
    """The final response to our re-INVITE; on 2xx the session already uses the new descriptions."""

    status: int
    reason: str
    remote_sdp: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


ReinviteHandler = Callable[[bytes], Awaitable[tuple[int, bytes]]]


class CallSession:
    """An INVITE session of the application (one dialog), in either direction."""

    def __init__(self, ua: UserAgent, call: Call) -> None:
        self.ua = ua
        self.call = call
        call.user_data = self
        #: ``async (remote_sdp) -> (status, sdp_answer)`` for a re-INVITE/UPDATE with a new offer; without
        #: it the offer is refused with 488 and the session stays as it was.
        self.on_reinvite: ReinviteHandler | None = None
        self.on_bye: Callable[[], Any] | None = None
        self.on_terminated: Callable[[str], Any] | None = None
        self.terminated: asyncio.Future[str] = ua.loop.create_future()
        self.confirmed: asyncio.Future[None] = ua.loop.create_future()
        self._reinvite: asyncio.Future[ReinviteOutcome] | None = None

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def dialog(self) -> Dialog | None:
        return self.call.dialog

    @property
    def state(self) -> CallState:
        return self.call.state

    @property
    def local_sdp(self) -> bytes:
        return self.call.local_sdp

    @property
    def remote_sdp(self) -> bytes:
        return self.call.remote_sdp

    @property
    def session_interval(self) -> int | None:
        return self.call.session_interval

    async def reinvite(
        self, sdp: bytes, *, content_type: str = "application/sdp", timeout: float | None = None
    ) -> ReinviteOutcome:
        """Send a new offer (§14.1); 491 glare is retried inside after the §14.1 random delay."""
        waited = 0.0
        while (self.call.reinvite_in is not None or self.call.reinvite_out is not None) and waited < 32.0:
            await asyncio.sleep(0.02)  # §14.1: one offer/answer exchange at a time; wait for the ACK
            waited += 0.02
        if self.call.terminated:
            return ReinviteOutcome(481, "Call Terminated", b"")
        fut: asyncio.Future[ReinviteOutcome] = self.ua.loop.create_future()
        self._reinvite = fut
        self.ua.core.reinvite(self.call, sdp, self.ua.now(), content_type=content_type)
        self.ua._pump()
        return await asyncio.wait_for(fut, timeout) if timeout else await fut

    async def bye(self) -> Response | None:
        """End the session (BYE, or CANCEL before the answer); returns the BYE's final response."""
        oreq = self.ua.core.bye(self.call, self.ua.now())
        fut = self.ua._track(oreq)
        self.ua._pump()
        return await fut if fut is not None else None

    async def wait_terminated(self, timeout: float | None = None) -> str:
        """Wait for the end of the session; returns the reason (``remote BYE``, ``session expired``...)."""
        return await asyncio.wait_for(asyncio.shield(self.terminated), timeout)

    def ladder(self) -> list[tuple[float, str, str]]:
        return self.ua.ladder(self.call_id)

    def __repr__(self) -> str:
        return f"<CallSession {self.call.role.value} {self.call.state.value} {self.call_id}>"


class IncomingInvite:
    """A new incoming INVITE handed to ``UserAgent.on_invite``; answer it once."""

    def __init__(self, ua: UserAgent, call: Call, request: Request, source: Address) -> None:
        self.ua = ua
        self.call = call
        self.request = request
        self.source = source
        self.session = CallSession(ua, call)

    @property
    def remote_sdp(self) -> bytes:
        return self.request.body

    @property
    def content_type(self) -> str | None:
        return self.request.media_type

    @property
    def from_(self) -> NameAddr:
        return self.request.from_

    @property
    def to(self) -> NameAddr:
        return self.request.to

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def answered(self) -> bool:
        return self.call.state is not CallState.INCOMING

    async def ringing(self, status: int = 180) -> None:
        self.ua.core.ringing(self.call, self.ua.now(), status)
        self.ua._pump()

    async def accept(self, sdp_answer: bytes, *, content_type: str = "application/sdp") -> CallSession:
        """Answer 200 with ``sdp_answer``; returns the session (``session.confirmed`` resolves on the ACK)."""
        self.ua.core.accept(self.call, sdp_answer, self.ua.now(), content_type=content_type)
        self.ua._pump()
        return self.session

    async def reject(
        self, status: int = 486, reason: str | None = None, *, headers: Headers | dict[str, str] | None = None
    ) -> None:
        self.ua.core.reject(self.call, status, self.ua.now(), reason, _headers(headers))
        self.ua._pump()


class OutgoingInvite:
    """A pending outgoing INVITE: ``await`` it for the ``InviteResult``; ``cancel()`` before the answer."""

    def __init__(self, ua: UserAgent, call: Call, on_progress: Callable[[Response], Any] | None) -> None:
        self.ua = ua
        self.call = call
        self.session = CallSession(ua, call)
        self.result: asyncio.Future[InviteResult] = ua.loop.create_future()
        self.provisional: list[Response] = []
        self.on_progress = on_progress

    @property
    def call_id(self) -> str:
        return self.call.call_id

    async def cancel(self) -> InviteResult:
        """§9.1 CANCEL; returns the final result (normally 487)."""
        self.ua.core.cancel(self.call, self.ua.now())
        self.ua._pump()
        return await asyncio.shield(self.result)

    def __await__(self) -> Generator[Any, None, InviteResult]:
        return asyncio.shield(self.result).__await__()


@dataclass
class _Pending:
    handle: asyncio.TimerHandle | None = None
    deadline: float | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class UserAgent:
    """One SIP user agent on asyncio: sockets, timers and the sans-I/O core."""

    def __init__(self, core: UserAgentCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.transports = TransportSet(self._on_datagram, self._on_message, self._on_error)
        self.on_invite: Callable[[IncomingInvite], Awaitable[None]] | None = None
        #: An incoming INVITE still unanswered after this many seconds gets 480.
        self.answer_timeout = 120.0
        #: RFC 3263 (NAPTR, SRV, A/AAAA) for names in request targets; made on first use from the system's
        #: resolv.conf unless set (``Locator(nameservers=...)``).
        self.locator: Locator | None = None
        #: Via/Contact name an address given by the user (``advertise_host``), not the bound one: a NAT
        #: rewrite from a registrar's answer is then not done (sip.registration).
        self.advertised = False
        self._timer = _Pending()
        self._closed = False

    @classmethod
    async def create(
        cls,
        local_host: str = "127.0.0.1",
        port: int = 0,
        transports: tuple[str, ...] = ("udp", "tcp"),
        *,
        contact_user: str = "vfax",
        config: CoreConfig | None = None,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        tls_port: int = 0,
        allow_invite_from: Iterable[str] | None = None,
        advertise_host: str | None = None,
        advertise_port: int | None = None,
        **overrides: Any,
    ) -> UserAgent:
        """Bind the sockets and start; ``overrides`` set ``CoreConfig`` fields (``session_expires=...``).

        ``advertise_host`` is the address written in Via and Contact (and, by vfax, in SDP): the public
        address of a host behind a NAT with forwarded ports, or the host's address when binding to a
        wildcard address (``0.0.0.0``, ``::``), which peers cannot send to. ``advertise_port`` replaces the
        bound port there (a NAT forwarding another public port).
        """
        config = config or CoreConfig()
        config.contact_user = contact_user
        if allow_invite_from is not None:
            config.invite_allow_list = frozenset(allow_invite_from)
        for name, value in overrides.items():
            if not hasattr(config, name):
                raise TypeError(f"unknown option {name!r}")
            setattr(config, name, value)
        if config.default_transport not in transports:
            config.default_transport = transports[0]
        ua = cls(UserAgentCore(config), asyncio.get_running_loop())
        await ua.transports.bind(
            local_host, port, transports, tls_server=tls_server, tls_client=tls_client, tls_port=tls_port
        )
        if advertise_host is None and local_host in ("0.0.0.0", "::", ""):
            log.warning(
                "bound to %r without advertise_host: Via and Contact will not be reachable", local_host
            )
        ua.advertised = advertise_host is not None
        ua.core.local_addresses = {
            name: (advertise_host or host, advertise_port or port)
            for name, (host, port) in ua.transports.local_addresses.items()
        }
        if tls_client is not None and "tls" not in ua.core.local_addresses:
            # A TLS client without a certificate of its own has no TLS listener: its requests go out over
            # connections it opens and answers come back on them; Via/Contact name the TCP (else UDP) port.
            stream = ua.core.local_addresses.get("tcp") or ua.core.local_addresses.get("udp")
            if stream is not None:
                ua.core.local_addresses["tls"] = stream
        return ua

    # -- properties ---------------------------------------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, port) of the first transport (UDP when there is one)."""
        addrs = self.transports.local_addresses
        return addrs.get("udp") or next(iter(addrs.values()))

    @property
    def media_host(self) -> str:
        """The address to write in SDP: the advertised one if given, else the one the sockets are bound to."""
        if self.advertised:
            return next(iter(self.core.local_addresses.values()))[0]
        return self.local_address[0]

    def set_public_address(self, transport: str, host: str, port: int) -> None:
        """Write ``host:port`` in the Via and Contact of ``transport`` from now on: the address a NAT maps us
        to, as a registrar reported it (RFC 3581 ``received``/``rport``; see sip.registration)."""
        if transport not in self.core.local_addresses:
            raise ValueError(f"no local {transport} transport")
        self.core.local_addresses[transport] = (host, port)

    def contact_uri(self, transport: str = "udp") -> SipUri:
        return self.core.contact(transport).uri

    def now(self) -> float:
        return self.loop.time()

    def ladder(self, call_id: str) -> list[tuple[float, str, str]]:
        """(time, ``in``/``out``, first line) of each message of the Call-ID, for the call report.

        Times are on the clock of ``now()`` (the event loop's), so ``t - ua.now()`` is an age in seconds.
        """
        return self.core.ladder(call_id)

    def set_unavailable(self, unavailable: bool, *, retry_after: int | None = None) -> None:
        """Take no new calls (OPTIONS and new INVITEs get 503, see ``UserAgentCore.set_unavailable``) or
        take them again; calls in progress go on."""
        self.core.set_unavailable(unavailable, retry_after=retry_after)

    @property
    def unavailable(self) -> bool:
        return self.core.unavailable

    # -- outgoing -------------------------------------------------------------------------------------

    async def locate(
        self, target: str | SipUri, *, proxy: str | SipUri | None = None, transport: str | None = None
    ) -> list[Address] | None:
        """RFC 3263: the targets the next hop (``proxy``, the configured outbound proxy, else ``target``)
        resolves to, for ``invite(targets=...)``; None for an IP literal (the core needs no DNS for it).

        Raises ``sip.locate.LocateError`` naming the host when nothing resolves.
        """
        proxy = proxy if proxy is not None else self.core.config.outbound_proxy
        hop = proxy or target
        uri = SipUri.parse(hop) if isinstance(hop, str) else hop
        if is_ip(uri.params.get("maddr") or uri.host_ip):
            return None
        if transport and uri.transport is None:
            uri = uri.copy()
            uri.params["transport"] = transport
        if self.locator is None:
            self.locator = Locator()
        ours = self.core.local_addresses
        default = self.core.config.default_transport
        transports = [default, *(t for t in ours if t != default)] if default in ours else list(ours)
        ipv6 = ":" in self.local_address[0]
        targets = await self.locator.locate(uri, transports, ipv6=ipv6)
        for transport_name, ip, port in targets:
            if transport_name == "tls":  # RFC 5922 §4: the certificate must name the URI's domain
                self.transports.tls_names[(ip, port)] = uri.host
        return targets

    def invite(
        self,
        target: str | SipUri,
        sdp_offer: bytes,
        *,
        proxy: str | SipUri | None = None,
        credentials: Credentials = None,
        headers: Headers | dict[str, str] | None = None,
        from_: str | NameAddr | None = None,
        content_type: str = "application/sdp",
        transport: str | None = None,
        timeout: float | None = None,
        on_progress: Callable[[Response], Any] | None = None,
        targets: list[Address] | None = None,
    ) -> OutgoingInvite:
        """Call ``target``; ``await`` the returned object for the ``InviteResult``.

        ``timeout`` cancels the INVITE when no final answer came in time (the result is then 487 or 408).
        ``targets`` (from ``locate``) are tried in turn when one times out or answers 503 (RFC 3263 §4.3).
        """
        self._check_open()
        call = self.core.invite(
            target, sdp_offer, self.now(), content_type=content_type, from_=from_, proxy=proxy,
            auth=_auth(credentials), headers=_headers(headers), transport=transport, targets=targets,
        )  # fmt: skip
        pending = OutgoingInvite(self, call, on_progress)
        call.user_data = pending
        if timeout is not None:
            self.loop.call_later(timeout, self._invite_timeout, call)
        self._pump()
        return pending

    def _invite_timeout(self, call: Call) -> None:
        if call.state is CallState.CALLING:
            log.info("INVITE %s not answered in time: cancelling", call.call_id)
            self.core.cancel(call, self.now())
            self._pump()
            pending = call.user_data
            if not call.cancel_sent and isinstance(pending, OutgoingInvite) and not pending.result.done():
                # §9.1: no provisional yet, so no CANCEL may be sent; it goes out if one arrives later (and
                # a late 2xx is ACKed and ended with BYE). The application does not wait for that.
                assert call.invite is not None
                resp = Response.for_request(call.invite, 408, "Request Timeout (no answer)")
                pending.result.set_result(InviteResult(408, resp.reason, resp, None))

    async def request(
        self,
        method: str,
        uri: str | SipUri,
        *,
        proxy: str | SipUri | None = None,
        credentials: Credentials = None,
        headers: Headers | dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        from_: str | NameAddr | None = None,
        to: str | NameAddr | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        transport: str | None = None,
    ) -> Response:
        """Send an out-of-dialog request; return its final response (408 on timeout, 503 unreachable).

        A name in the next hop is resolved by RFC 3263 (``locate``), its targets tried in turn."""
        targets = await self.locate(uri, proxy=proxy, transport=transport)
        oreq = self.start_request(
            method, uri, proxy=proxy, credentials=credentials, headers=headers, body=body,
            content_type=content_type, from_=from_, to=to, call_id=call_id, cseq=cseq, transport=transport,
            targets=targets,
        )  # fmt: skip
        return await oreq.user_data

    def start_request(
        self,
        method: str,
        uri: str | SipUri,
        *,
        proxy: str | SipUri | None = None,
        credentials: Credentials = None,
        headers: Headers | dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        from_: str | NameAddr | None = None,
        to: str | NameAddr | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        transport: str | None = None,
        targets: list[Address] | None = None,
    ) -> OutgoingRequest:
        """Like ``request`` but returns the ``OutgoingRequest``; its ``user_data`` is the response future."""
        self._check_open()
        oreq = self.core.request(
            method, uri, self.now(), from_=from_, to=to, proxy=proxy, call_id=call_id, cseq=cseq,
            headers=_headers(headers), body=body, content_type=content_type, auth=_auth(credentials),
            transport=transport, targets=targets,
        )  # fmt: skip
        self._track(oreq)
        self._pump()
        return oreq

    async def options(self, uri: str | SipUri, **kwargs: Any) -> Response:
        """Ping a peer (§11); with ``credentials`` a 401/407 is answered once (new CSeq, Authorization)."""
        return await self.request("OPTIONS", uri, **kwargs)

    def send_keepalive(self, dest: Address) -> None:
        """RFC 5626 CRLF keep-alive towards ``dest``."""
        self.transports.send_keepalive(dest)

    def _track(self, oreq: OutgoingRequest | None) -> asyncio.Future[Response] | None:
        if oreq is None:
            return None
        fut: asyncio.Future[Response] = self.loop.create_future()
        oreq.user_data = fut
        return fut

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("user agent is closed")

    # -- the pump ------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: Address) -> None:
        self.core.receive_datagram(data, source, self.now())
        self._pump()

    def _on_message(self, msg: Request | Response, source: Address) -> None:
        self.core.receive_message(msg, source, self.now())
        self._pump()

    def _on_error(self, dest: Address) -> None:
        reason = self.transports.error_reasons.pop(dest, None)
        self.core.transport_error(dest, self.now(), reason=reason)
        self._pump()

    def _on_timer(self) -> None:
        self._timer.handle = None
        self._timer.deadline = None
        self.core.handle_timers(self.now())
        self._pump()

    def _pump(self) -> None:
        """Move the core's output to the sockets and the application, then re-arm the timer."""
        core = self.core
        for _ in range(100):
            transmits = core.transmits()
            for data, dest in transmits:
                self.transports.send(data, dest)
            events = core.events()
            for event in events:
                try:
                    self._dispatch(event)
                except Exception:
                    log.exception("handling %s failed", type(event).__name__)
            if not transmits and not events:
                break
        deadline = core.next_deadline()
        t = self._timer
        if deadline != t.deadline and not self._closed:
            if t.handle is not None:
                t.handle.cancel()
            t.deadline = deadline
            t.handle = self.loop.call_at(deadline, self._on_timer) if deadline is not None else None

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._timer.tasks.add(task)
        task.add_done_callback(self._timer.tasks.discard)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, RequestCompleted):
            fut = event.request.user_data
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_result(event.response)
        elif isinstance(event, IncomingCall):
            incoming = IncomingInvite(self, event.call, event.request, event.source)
            self._spawn(self._run_invite_handler(incoming))
        elif isinstance(event, CallProgress):
            pending = event.call.user_data
            if isinstance(pending, OutgoingInvite):
                pending.provisional.append(event.response)
                if pending.on_progress is not None:
                    _call_soon(self, pending.on_progress, event.response)
        elif isinstance(event, CallAnswered | CallFailed):
            pending = event.call.user_data
            if isinstance(pending, OutgoingInvite):
                ok = isinstance(event, CallAnswered)
                event.call.user_data = pending.session if ok else None
                resp = event.response
                result = InviteResult(resp.status, resp.reason, resp, pending.session if ok else None)
                if not pending.result.done():
                    pending.result.set_result(result)
                if ok and not pending.session.confirmed.done():
                    pending.session.confirmed.set_result(None)
        elif isinstance(event, CallConfirmed):
            session = event.call.user_data
            if isinstance(session, CallSession) and not session.confirmed.done():
                session.confirmed.set_result(None)
        elif isinstance(event, ReinviteReceived):
            session = event.call.user_data
            self._spawn(self._run_reinvite_handler(event.call, session, event.request))
        elif isinstance(event, ReinviteResult):
            session = event.call.user_data
            if isinstance(session, CallSession) and session._reinvite is not None:
                fut, session._reinvite = session._reinvite, None
                r = event.response
                if not fut.done():
                    fut.set_result(ReinviteOutcome(r.status, r.reason, r.body if r.status < 300 else b""))
        elif isinstance(event, CallTerminated):
            obj = event.call.user_data
            session = obj.session if isinstance(obj, OutgoingInvite) else obj
            if isinstance(session, CallSession):
                if session._reinvite is not None and not session._reinvite.done():
                    session._reinvite.set_result(ReinviteOutcome(481, "Call Terminated", b""))
                if not session.terminated.done():
                    session.terminated.set_result(event.reason)
                if event.by_remote and event.reason == "remote BYE" and session.on_bye is not None:
                    _call_soon(self, session.on_bye)
                if session.on_terminated is not None:
                    _call_soon(self, session.on_terminated, event.reason)

    async def _run_invite_handler(self, incoming: IncomingInvite) -> None:
        handler = self.on_invite
        if handler is None:
            await incoming.reject(480, "No Handler")
            return
        self.loop.call_later(self.answer_timeout, self._unanswered, incoming)
        try:
            await handler(incoming)
        except Exception:
            log.exception("on_invite handler failed for %s", incoming.call_id)
            if not incoming.answered:
                await incoming.reject(500)

    def _unanswered(self, incoming: IncomingInvite) -> None:
        if not incoming.answered and not self._closed:
            log.info("INVITE %s unanswered for %.0f s: 480", incoming.call_id, self.answer_timeout)
            self.core.reject(incoming.call, 480, self.now())
            self._pump()

    async def _run_reinvite_handler(self, call: Call, session: Any, request: Request) -> None:
        status, answer = 488, b""
        try:
            # A peer may re-INVITE right after our ACK, before the task that placed the call has run on
            # from invite() and attached its handler: give it a moment rather than refuse with 488.
            for _ in range(REINVITE_HANDLER_WAIT_TICKS):
                if not isinstance(session, CallSession) or session.on_reinvite is not None or call.terminated:
                    break
                await asyncio.sleep(0.01)
            if isinstance(session, CallSession) and session.on_reinvite is not None:
                status, answer = await session.on_reinvite(request.body)
        except Exception:
            log.exception("on_reinvite handler failed for %s", call.call_id)
            status, answer = 500, b""
        if call.terminated or call.reinvite_in_request is not request:
            return
        try:
            self.core.answer_reinvite(call, status, self.now(), answer)
        except UsageError as exc:
            log.info("cannot answer re-INVITE on %s: %s", call.call_id, exc)
        self._pump()

    # -- shutdown --------------------------------------------------------------------------------------

    async def close(self, *, hangup: bool = True, grace: float = 0.5) -> None:
        """End every call (BYE/CANCEL), wait up to ``grace`` seconds for the answers, close the sockets."""
        if self._closed:
            return
        if hangup:
            byes: list[asyncio.Future[Response]] = []
            for call in list(self.core.calls.values()) + list(self.core.pending_uac.values()):
                if call.terminated:
                    continue
                fut = self._track(self.core.bye(call, self.now()))
                if fut is not None:
                    byes.append(fut)
            self._pump()
            if byes:
                await asyncio.wait(byes, timeout=grace)
        self._closed = True
        if self._timer.handle is not None:
            self._timer.handle.cancel()
        for task in list(self._timer.tasks):
            task.cancel()
        await self.transports.close()

    async def __aenter__(self) -> UserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _call_soon(ua: UserAgent, fn: Callable[..., Any], *args: Any) -> None:
    """Run an application hook; a coroutine hook becomes a task."""
    try:
        result = fn(*args)
    except Exception:
        log.exception("application hook %r failed", fn)
        return
    if inspect.isawaitable(result):
        ua._spawn(result)
