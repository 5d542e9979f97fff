"""The SIP user-agent core (RFC 3261 §8, §12-§15), sans-I/O: bytes and timer fires in, bytes and events out.

``UserAgentCore`` owns the transaction layer (``sip.transaction``), the dialogs (``sip.dialog``) and the
INVITE sessions (``Call``). The edge feeds it with ``receive_datagram``/``receive_message`` and
``handle_timers(now)``, drains ``transmits()`` (bytes and destination) and ``events()`` (what the
application must know), and re-arms one timer at ``next_deadline()``. It does everything a user agent
must do on its own:

* answers what it can without the application: OPTIONS (§11.2), 501 with Allow for a method it does
  not know and 405 for a SIP method it does not serve (§8.2.1, §21.5.2), 420 with Unsupported for a
  Require it does not know (§8.2.2.3), 400 with the fault as reason phrase for a request that fails
  ``validate_request`` (§8.2) or even ``parse_message`` when its request line and top Via can still be
  read (RFC 4475 §3.1.2), 415 with Accept to an INVITE/UPDATE body that is not SDP and 406 when the
  request's Accept excludes SDP (§8.2.3, §21.4.7), 481 for a request of an unknown dialog (§12.2.2), 403
  for an INVITE from a source outside the allow-list, 487 after CANCEL (§9.2), and 503 to OPTIONS and
  new INVITEs while the application has said it takes no new calls (``set_unavailable``);
* sends the ACK for a 2xx and re-sends it for each 2xx retransmission (§13.2.2.4), retransmits its own 2xx
  until the ACK arrives and gives up with a BYE after 64*T1 (§13.3.1.4);
* retries a request challenged with 401/407 (§22.2, RFC 7616) and an INVITE answered 422 (RFC 4028 §7.4);
* resolves re-INVITE glare: 491 when an INVITE of ours is pending, 500 with Retry-After when one of the
  peer's is, and a retry after the random delay of §14.1 when we get a 491;
* serves RFC 3262 100rel with ``sip.reliable``: PRACKs a reliable 18x to our INVITE, and sends its own
  18x reliably (RSeq, retransmitted until the PRACK, 5xx after 64*T1) when an INVITE requires 100rel;
* runs session timers (RFC 4028) as refresher (re-INVITE with the same SDP, or UPDATE) and as refreshee
  (BYE when the session expires); a refresh that repeats the last offer is answered here with the last
  answer, so media is never disturbed.

The session description is carried opaquely (bytes plus Content-Type): the application decides what to
offer and answer. The events it returns and the per-session records (``Call``, ``OutgoingRequest``) are in
``sip.calls``; they are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sip.auth import AuthVerdict, DigestClient
from sip.calls import (
    Call,
    CallAnswered,
    CallConfirmed,
    CallFailed,
    CallProgress,
    CallRole,
    CallState,
    CallTerminated,
    Event,
    IncomingCall,
    OutgoingRequest,
    ReinviteReceived,
    ReinviteResult,
    RequestCompleted,
)
from sip.dialog import Dialog, DialogState
from sip.errors import InvalidRequest, SipError, SipParseError
from sip.message import (
    CSEQ_MISMATCH,
    Headers,
    Request,
    Response,
    UnparsedRequest,
    parse_message,
    salvage_request,
    validate_request,
    validate_response,
)
from sip.reliable import (
    Arrival,
    ReliableReceiver,
    ReliableSender,
    format_rack,
    is_reliable_provisional,
    parse_rack,
    parse_rseq,
    requires_100rel,
)
from sip.timers import TimerHandle, TimerQueue, TimerValues
from sip.transaction import (
    Address,
    ClientTransaction,
    InviteClientTransaction,
    ServerTransaction,
    State,
    TransactionLayer,
    is_reliable,
)
from sip.uri import NameAddr, SipUri, Via, new_branch, new_call_id, new_tag

__all__ = [
    "ALLOWED_METHODS",
    "Call",
    "CallAnswered",
    "CallConfirmed",
    "CallFailed",
    "CallProgress",
    "CallRole",
    "CallState",
    "CallTerminated",
    "CoreConfig",
    "Event",
    "IncomingCall",
    "OutgoingRequest",
    "ReinviteReceived",
    "ReinviteResult",
    "RequestCompleted",
    "UsageError",
    "UserAgentCore",
    "destination_for",
]

log = logging.getLogger(__name__)

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "PRACK")
#: SIP methods we know but do not serve (405, §21.4.6); any other method is not implemented (501, §21.5.2).
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO", "PUBLISH"}
)
#: The body types we take in an INVITE/UPDATE and send in answers (Accept of a 415, §21.4.16).
ACCEPTED_BODIES = ("application/sdp",)
SUPPORTED_EXTENSIONS = ("timer", "100rel")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
MAX_AUTH_ATTEMPTS = 3
MAX_GLARE_RETRIES = 4
#: RFC 3261 §18.1.1: with the MTU unknown, a larger request goes over a congestion-controlled transport.
LARGE_REQUEST = 1300


class UsageError(SipError, RuntimeError):
    """The application called the core in a way the protocol state does not allow (our fault)."""


@dataclass(slots=True)
class CoreConfig:
    """Every knob of the UA core, with its default."""

    contact_user: str = "vfax"
    user_agent: str = "vfax"
    timers: TimerValues = field(default_factory=TimerValues)
    default_transport: str = "udp"
    #: An outgoing INVITE without a final answer after this many seconds is cancelled (0: never).
    invite_timeout: float = 180.0
    #: Where out-of-dialog requests go (with a ``Route: <proxy;lr>``) unless a call names its own proxy.
    outbound_proxy: str | None = None
    #: Source IPs allowed to send an initial INVITE; None lets anyone in (others get 403).
    invite_allow_list: frozenset[str] | None = None
    #: RFC 4028: the interval we ask for (0 turns session timers off) and the smallest we accept.
    session_expires: int = 1800
    min_se: int = 90
    #: The ``refresher`` we ask for in an initial INVITE (``uac``, ``uas``) or None to let the UAS choose.
    session_refresher: str | None = None
    #: How we refresh a session as refresher: ``INVITE`` (same SDP) or ``UPDATE`` (no body) when allowed.
    refresh_method: str = "INVITE"
    #: ``uniform(a, b)``; tests pass a seeded one.
    random_uniform: Callable[[float, float], float] = random.uniform
    #: How many Call-IDs keep their message ladder for call reports.
    ladder_calls: int = 4096
    #: Messages kept per Call-ID (a flood on one Call-ID must not grow memory without end).
    ladder_length: int = 1000
    #: Malformed datagrams are logged once per this many seconds, with the count since the last line.
    malformed_log_interval: float = 10.0
    #: ``Supported: 100rel`` in our INVITEs (RFC 3262): a UAS may then send its 18x reliably and we PRACK
    #: them. A peer that *requires* 100rel is served whatever this says.
    offer_100rel: bool = True


def destination_for(uri: SipUri, default_transport: str = "udp") -> Address:
    """Where to send a request for ``uri`` (RFC 3263 §4 without DNS: transport param, sips, default port)."""
    transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
    if transport not in DEFAULT_PORTS:
        transport = default_transport
    return (transport, uri.host_ip, uri.port or DEFAULT_PORTS[transport])


def _parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``1800;refresher=uac`` → (1800, "uac") (RFC 4028 §4); None when absent or malformed."""
    if not value:
        return None
    head, _, rest = value.partition(";")
    head = head.strip()
    if not head.isdigit() or not head.isascii() or len(head) > 9:
        return None
    refresher = None
    for part in rest.split(";"):
        name, _, val = part.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(head), refresher


def _int_header(msg: Request | Response, name: str) -> int | None:
    value = msg.headers.get(name)
    if value is None:
        return None
    head = value.split(";", 1)[0].strip()
    return int(head) if head.isdigit() and head.isascii() and len(head) <= 9 else None


# ---------------------------------------------------------------------------------------------- core


class UserAgentCore:
    """The sans-I/O user agent: see the module docstring for what it does by itself."""

    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.timers = TimerQueue()
        self.layer = TransactionLayer(self._send_txn, self.timers, self.config.timers)
        #: transport name → (host, port) that goes into Via and Contact; set by the edge after binding.
        self.local_addresses: dict[str, tuple[str, int]] = {}
        self.calls: dict[tuple[str, str, str], Call] = {}  # dialog id → call
        self.pending_uac: dict[tuple[str, str], Call] = {}  # (Call-ID, local tag) → call without dialog yet
        self.ladders: OrderedDict[str, list[tuple[float, str, str]]] = OrderedDict()
        self._transmits: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self.stats = {"received": 0, "dropped": 0, "bad_requests": 0, "sent": 0}
        self._failing_dest: Address | None = None
        self._failing_reason: str | None = None
        self._uas_invites: dict[tuple[str, str, int], Call] = {}  # §8.2.2.2 merged-request detection
        self.unavailable = False  # set_unavailable
        self._retry_after: int | None = None
        self._malformed_log_at = float("-inf")  # when the next malformed datagram may be logged
        self._malformed_unlogged = 0

    # -- edge interface ------------------------------------------------------------------------------

    def transmits(self) -> list[tuple[bytes, Address]]:
        """The datagrams/stream writes to perform, in order; the list is handed over and cleared."""
        out, self._transmits = self._transmits, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timers(self, now: float) -> None:
        self._now = now
        try:
            self.timers.fire(now)
        except Exception:  # a bug must not stop the clock for every other call
            log.exception("SIP timer callback failed")

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """One UDP datagram (RFC 3261 §18.3).

        A request that does not parse but whose request line and top Via can be read gets a stateless
        400 naming the fault (RFC 4475 §3.1.2); other garbage is dropped. Both are logged at most once
        per ``malformed_log_interval``, so a scanner cannot flood the log.
        """
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 §3.5.1) or padding
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self._now = now
            broken = salvage_request(data, str(exc))
            if broken is None or broken.method == "ACK":
                self.stats["dropped"] += 1
                self._report_malformed(source, f"dropped: {exc}", now)
                return
            self.stats["bad_requests"] += 1
            self._report_malformed(source, f"{broken.method} answered 400: {exc}", now)
            try:
                self._respond_stateless(broken, source, 400, _reason_phrase(str(exc)), now)
            except Exception:  # never let an answer to garbage stop the edge
                log.exception("SIP core failed answering a malformed request from %s:%s", *source[1:])
            return
        self.receive_message(msg, source, now)

    def _report_malformed(self, source: Address, what: str, now: float) -> None:
        log.debug("malformed datagram from %s:%s: %s", source[1], source[2], what)
        if now < self._malformed_log_at:
            self._malformed_unlogged += 1
            return
        more = self._malformed_unlogged
        log.info(
            "malformed datagram from %s:%s %s%s", source[1], source[2], what,
            f" ({more} more malformed datagrams since the last report)" if more else "",
        )  # fmt: skip
        self._malformed_unlogged = 0
        self._malformed_log_at = now + self.config.malformed_log_interval

    def receive_message(self, msg: Request | Response, source: Address, now: float) -> None:
        """One parsed message (from a datagram or a ``StreamFramer``); never raises for peer input."""
        self.stats["received"] += 1
        self._now = now
        try:
            self._trace_in(msg, source, now)
            if isinstance(msg, Response):
                self._receive_response(msg, source, now)
            else:
                self._receive_request(msg, source, now)
        except (SipParseError, InvalidRequest) as exc:
            self.stats["dropped"] += 1
            log.debug("dropping message from %s:%s: %s", source[1], source[2], exc)
        except Exception:
            self.stats["dropped"] += 1
            log.exception("SIP core failed on a message from %s:%s", source[1], source[2])

    def transport_error(self, dest: Address, now: float, reason: str | None = None) -> None:
        """The edge could not reach ``dest`` (connection refused or broken): fail what was bound to it.

        ``reason`` (e.g. a refused TLS certificate) becomes the reason phrase of the 503 made up for it."""
        self._now = now
        self._failing_dest = dest
        self._failing_reason = reason
        try:
            self.layer.transport_error(dest, now)
        finally:
            self._failing_dest = None
            self._failing_reason = None

    def ladder(self, call_id: str) -> list[tuple[float, str, str]]:
        """(time, ``in``/``out``, first line) of every message of a Call-ID, for the call report."""
        return list(self.ladders.get(call_id, ()))

    def set_unavailable(self, unavailable: bool, *, retry_after: int | None = None) -> None:
        """Take no new calls (a node being drained) or take them again.

        While unavailable, OPTIONS outside a dialog and new INVITEs get 503 Service Unavailable (§21.5.4),
        with ``Retry-After: retry_after`` seconds when given (without it a client must treat the 503 as a
        500): a load balancer probing with OPTIONS takes this UA out of rotation and one that forwards an
        INVITE here tries the next destination. Dialogs in progress are served as before.
        """
        if retry_after is not None and not 0 <= retry_after < 2**32:
            raise UsageError(f"Retry-After {retry_after} is not a delta-seconds value")
        self.unavailable = unavailable
        self._retry_after = retry_after if unavailable else None

    def _respond_unavailable(self, stxn: ServerTransaction, now: float, to_tag: str | None = None) -> None:
        h = Headers([("Retry-After", str(self._retry_after))]) if self._retry_after is not None else None
        self._respond(stxn, 503, now=now, to_tag=to_tag, headers=h)

    # -- building blocks -----------------------------------------------------------------------------

    def _local(self, transport: str) -> tuple[str, int]:
        addr = self.local_addresses.get(transport)
        if addr is None:
            raise UsageError(f"no local {transport} transport")
        return addr

    @staticmethod
    def _hostport(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def new_via(self, transport: str) -> Via:
        host, port = self._local(transport)
        hostv = f"[{host}]" if ":" in host else host
        return Via(
            transport=transport.upper(), host=hostv, port=port, params={"branch": new_branch(), "rport": None}
        )

    def contact(self, transport: str, user: str | None = None) -> NameAddr:
        host, port = self._local(transport)
        hostv = f"[{host}]" if ":" in host else host
        params = {"transport": transport} if transport != "udp" else {}
        u = user if user is not None else self.config.contact_user
        return NameAddr(SipUri(scheme="sip", user=u or None, host=hostv, port=port, params=params))

    def _trace(self, call_id: str, now: float, direction: str, first_line: str) -> None:
        ladder = self.ladders.get(call_id)
        if ladder is None:
            ladder = self.ladders[call_id] = []
            while len(self.ladders) > self.config.ladder_calls:
                self.ladders.popitem(last=False)
        if len(ladder) < self.config.ladder_length:
            ladder.append((now, direction, first_line[:200]))

    def _trace_in(self, msg: Request | Response, source: Address, now: float) -> None:
        call_id = msg.headers.get("Call-ID") or "-"
        first = msg.start_line
        log.info("SIP <- %s %s:%s %s Call-ID %s", source[0], source[1], source[2], first, call_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SIP <- %s\n%s", source, bytes(msg).decode("utf-8", "replace"))
        self._trace(call_id, now, "in", first)

    def _transmit(
        self, msg: Request | Response, dest: Address, retransmission: bool = False, now: float = 0.0
    ) -> None:
        data = bytes(msg)
        self._transmits.append((data, dest))
        self.stats["sent"] += 1
        call_id = msg.headers.get("Call-ID") or "-"
        first = msg.start_line
        log.info(
            "SIP -> %s %s:%s %s Call-ID %s%s", dest[0], dest[1], dest[2], first, call_id,
            " (retransmission)" if retransmission else "",
        )  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SIP -> %s\n%s", dest, data.decode("utf-8", "replace"))
        self._trace(call_id, self._now if now == 0.0 else now, "out", first)

    _now = 0.0

    def _send_txn(self, msg: Request | Response, dest: Address, retransmission: bool) -> None:
        self._transmit(msg, dest, retransmission)

    def _common_headers(self, h: Headers, is_request: bool) -> None:
        h.add("User-Agent" if is_request else "Server", self.config.user_agent)

    def _build_request(
        self,
        method: str,
        uri: SipUri,
        *,
        transport: str,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int,
        route: list[str] | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        contact: bool = True,
    ) -> Request:
        h = Headers()
        h.add("Via", str(self.new_via(transport)))
        h.add("Max-Forwards", "70")
        for r in route or ():
            h.add("Route", r)
        h.add("From", str(from_))
        h.add("To", str(to))
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact and not (headers is not None and "Contact" in headers):
            h.add("Contact", str(self.contact(transport)))
        self._common_headers(h, True)
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        if body:
            h.set("Content-Type", content_type or "application/sdp")
        return Request(method=method, uri=uri, headers=h, body=body)

    def _start(self, oreq: OutgoingRequest, now: float) -> None:
        self._now = now
        oreq.txn = self.layer.start_client(oreq.request, oreq.dest, oreq, now)

    def _resend(self, oreq: OutgoingRequest, now: float, *, new_cseq: int | None = None) -> None:
        """Send ``oreq`` again as a new transaction: new branch, CSeq + 1 (§22.2, §14.1)."""
        old = oreq.request
        req = Request(method=old.method, uri=old.uri, headers=old.headers.copy(), body=old.body)
        via = Via.parse(req.headers.values("Via")[0])
        via.params["branch"] = new_branch()
        via.params.pop("received", None)
        req.headers.remove_first("Via")
        req.headers.prepend("Via", str(via))
        cseq = new_cseq if new_cseq is not None else old.cseq[0] + 1
        req.headers.set("CSeq", f"{cseq} {req.method}")
        if oreq.auth is not None:
            oreq.auth.authorize(req)
        oreq.request = req
        if oreq.call is not None and oreq.call.dialog is not None and oreq.purpose != "invite":
            oreq.call.dialog.local_seq = max(oreq.call.dialog.local_seq, cseq)
        self._start(oreq, now)

    def _respond(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        now: float,
        to_tag: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        contact_transport: str | None = None,
    ) -> Response:
        resp = Response.for_request(txn.request, status, reason, to_tag=to_tag)
        h = resp.headers
        if txn.request.method == "INVITE" and 100 < status < 300:
            for value in txn.request.headers.get_all("Record-Route"):  # §12.1.1: copied into the response
                h.add("Record-Route", value)
        if contact_transport is not None:
            h.add("Contact", str(self.contact(contact_transport)))
        method = txn.request.method
        if status in (405, 501) or (method in ("INVITE", "OPTIONS", "UPDATE") and 200 <= status < 300):
            h.add("Allow", ", ".join(ALLOWED_METHODS))
        if txn.request.method in ("INVITE", "OPTIONS", "UPDATE") and status >= 200:
            h.add("Supported", ", ".join(SUPPORTED_EXTENSIONS))
        if txn.request.method == "OPTIONS" and status < 300:
            h.add("Accept", "application/sdp")
        self._common_headers(h, False)
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        if body:
            h.set("Content-Type", content_type or "application/sdp")
            resp.body = body
        self._now = now
        try:
            txn.respond(resp, now)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        return resp

    def _respond_stateless(
        self, req: Request | UnparsedRequest, source: Address, status: int, reason: str, now: float
    ) -> None:
        """§8.2.6 without a transaction: for requests too broken to match one."""
        if req.method == "ACK":
            return
        resp = Response.for_request(req, status, reason, to_tag=new_tag())
        self._common_headers(resp.headers, False)
        self._transmit(resp, source, now=now)

    def _schedule(
        self, delay: float, callback: Callable[[float], None], name: str, now: float
    ) -> TimerHandle:
        return self.timers.schedule(now + delay, callback, name)

    # -- TransactionUser for server transactions ------------------------------------------------------

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:  # pragma: no cover
        pass

    def on_timeout(self, txn: ClientTransaction | ServerTransaction, now: float) -> None:
        log.debug("server transaction %s timed out (no ACK)", txn)

    def on_terminated(self, txn: ClientTransaction | ServerTransaction) -> None:
        pass

    # -- outgoing requests outside INVITE sessions ---------------------------------------------------

    def request(
        self,
        method: str,
        uri: SipUri | str,
        now: float,
        *,
        from_: NameAddr | str | None = None,
        to: NameAddr | str | None = None,
        proxy: SipUri | str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        headers: Headers | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        auth: DigestClient | None = None,
        transport: str | None = None,
        targets: list[Address] | None = None,
    ) -> OutgoingRequest:
        """Send an out-of-dialog request (OPTIONS, REGISTER, ...); ``RequestCompleted`` reports the final.

        ``proxy`` is an outbound proxy: the request goes there with a ``Route: <proxy;lr>`` (§8.1.2).
        ``targets`` are where the edge resolved the next hop to (RFC 3263), tried in order (§4.3).
        """
        self._now = now
        if method in ("INVITE", "ACK", "CANCEL", "BYE"):
            raise UsageError(f"use invite()/bye()/cancel() for {method}")
        target = SipUri.parse(uri) if isinstance(uri, str) else uri
        proxy = proxy if proxy is not None else self.config.outbound_proxy
        proxy_uri = SipUri.parse(proxy) if isinstance(proxy, str) else proxy
        hop = proxy_uri or target
        dest = targets[0] if targets else destination_for(hop, transport or self.config.default_transport)
        tr = dest[0]
        from_na = NameAddr.parse(from_) if isinstance(from_, str) else from_
        if from_na is None:
            host, _ = self._local(tr)
            from_na = NameAddr(
                SipUri(user=self.config.contact_user, host=f"[{host}]" if ":" in host else host)
            )
        from_na = from_na.copy()
        from_na.tag = from_na.tag or new_tag()
        to_na = NameAddr.parse(to) if isinstance(to, str) else (to or NameAddr(target.copy()))
        route = [f"<{_lr(proxy_uri)}>"] if proxy_uri is not None else None
        req = self._build_request(
            method, target, transport=tr, from_=from_na, to=to_na, call_id=call_id or new_call_id(),
            cseq=cseq, route=route, headers=headers, body=body, content_type=content_type,
            contact=method in ("REGISTER", "OPTIONS", "SUBSCRIBE"),
        )  # fmt: skip
        req, dest = self._large_over_tcp(req, dest, hop)
        if auth is not None:
            auth.authorize(req)
        oreq = OutgoingRequest(self, req, dest, auth=auth)
        oreq.alternates = list(targets[1:]) if targets else []
        self._start(oreq, now)
        return oreq

    # -- INVITE as UAC --------------------------------------------------------------------------------

    def invite(
        self,
        target: SipUri | str,
        body: bytes,
        now: float,
        *,
        content_type: str = "application/sdp",
        from_: NameAddr | str | None = None,
        to: NameAddr | str | None = None,
        proxy: SipUri | str | None = None,
        auth: DigestClient | None = None,
        headers: Headers | None = None,
        transport: str | None = None,
        targets: list[Address] | None = None,
    ) -> Call:
        """Start an outgoing call (§13.2.1); events: CallProgress*, then CallAnswered or CallFailed.

        ``targets`` are where the edge resolved the next hop to (RFC 3263), tried in order (§4.3)."""
        self._now = now
        target_uri = SipUri.parse(target) if isinstance(target, str) else target
        proxy = proxy if proxy is not None else self.config.outbound_proxy
        proxy_uri = SipUri.parse(proxy) if isinstance(proxy, str) else proxy
        dest = targets[0] if targets else destination_for(
            proxy_uri or target_uri, transport or self.config.default_transport
        )
        tr = dest[0]
        host, _ = self._local(tr)
        call = Call(CallRole.UAC, new_call_id(host if ":" not in host else None), tr)
        call.local_tag = new_tag()
        call.local_sdp = body
        call.local_content_type = content_type
        call.auth = auth
        call.remote = dest
        from_na = NameAddr.parse(from_) if isinstance(from_, str) else from_
        if from_na is None:
            hostv = f"[{host}]" if ":" in host else host
            from_na = NameAddr(SipUri(user=self.config.contact_user, host=hostv))
        from_na = from_na.copy()
        from_na.tag = call.local_tag
        to_na = NameAddr.parse(to) if isinstance(to, str) else (to or NameAddr(target_uri.copy()))
        h = Headers()
        h.add("Allow", ", ".join(ALLOWED_METHODS))
        h.add("Supported", "timer, 100rel" if self.config.offer_100rel else "timer")
        if self.config.session_expires:
            refresher = self.config.session_refresher
            se = (
                f"{self.config.session_expires};refresher={refresher}"
                if refresher
                else str(self.config.session_expires)
            )
            h.add("Session-Expires", se)
            h.add("Min-SE", str(self.config.min_se))
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        route = [f"<{_lr(proxy_uri)}>"] if proxy_uri is not None else None
        req = self._build_request(
            "INVITE", target_uri, transport=tr, from_=from_na, to=to_na, call_id=call.call_id, cseq=1,
            route=route, headers=h, body=body, content_type=content_type,
        )  # fmt: skip
        req, dest = self._large_over_tcp(req, dest, proxy_uri or target_uri)
        call.transport = dest[0]
        if auth is not None:
            auth.authorize(req)
        call.invite = req
        oreq = OutgoingRequest(self, req, dest, auth=auth, call=call, purpose="invite")
        oreq.alternates = list(targets[1:]) if targets else []
        call.invite_out = oreq
        self.pending_uac[(call.call_id, call.local_tag)] = call
        self._start(oreq, now)
        if self.config.invite_timeout:
            call.invite_timer = self._schedule(
                self.config.invite_timeout, lambda t: self._invite_expired(call, t), "invite", now
            )
        return call

    def _large_over_tcp(self, req: Request, dest: Address, hop: SipUri) -> tuple[Request, Address]:
        """§18.1.1: a request over 1300 bytes goes over TCP when the URI does not insist on UDP."""
        if dest[0] != "udp" or hop.transport is not None or "tcp" not in self.local_addresses:
            return req, dest
        if len(bytes(req)) <= LARGE_REQUEST:
            return req, dest
        req.headers.remove_first("Via")
        req.headers.prepend("Via", str(self.new_via("tcp")))
        if "Contact" in req.headers:
            req.headers.set("Contact", str(self.contact("tcp")))
        return req, ("tcp", dest[1], dest[2])

    def cancel(self, call: Call, now: float) -> None:
        """§9.1: cancel our pending INVITE (sent once a provisional has arrived, as §9.1 asks)."""
        self._now = now
        if call.role is not CallRole.UAC or call.state is not CallState.CALLING:
            return
        call.cancel_requested = True
        oreq = call.invite_out
        if oreq is not None and oreq.txn is not None and oreq.txn.state is State.PROCEEDING:
            self._send_cancel(call, now)

    def _send_cancel(self, call: Call, now: float) -> None:
        oreq = call.invite_out
        if oreq is None or not isinstance(oreq.txn, InviteClientTransaction) or call.cancel_sent:
            return
        call.cancel_sent = True
        cancel = OutgoingRequest(self, oreq.txn.cancel_request(), oreq.dest, call=call, purpose="cancel")
        self._start(cancel, now)

    # -- responses ------------------------------------------------------------------------------------

    def _receive_response(self, resp: Response, source: Address, now: float) -> None:
        validate_response(resp)
        self._now = now
        txn = self.layer.match_response(resp)
        if txn is None:
            self._stray_response(resp, now)
            return
        txn.receive(resp, now)

    def _stray_response(self, resp: Response, now: float) -> None:
        """A 2xx to an INVITE whose transaction is gone: ACK it again if it is ours (§13.2.2.4)."""
        if resp.cseq[1] == "INVITE" and 200 <= resp.status < 300:
            call = self.calls.get((resp.call_id, resp.from_.tag or "", resp.to.tag or ""))
            if call is not None and call.dialog is not None:
                ack = call.acks.get(resp.cseq[0])
                if ack is not None:
                    self._transmit(ack, self._dialog_dest(call), True, now)
                    return
        log.debug("dropping response %s that matches no transaction", resp.start_line)
        self.stats["dropped"] += 1

    def _on_response(
        self,
        oreq: OutgoingRequest,
        txn: ClientTransaction,
        resp: Response,
        now: float,
        synthetic: bool = False,
    ) -> None:
        self._now = now
        status = resp.status
        if status >= 200 and oreq.purpose not in ("invite", "reinvite", "refresh") and oreq.final is not None:
            return
        if oreq.alternates and self._fail_over(oreq, resp, synthetic, now):
            return
        if (
            status in (401, 407)
            and oreq.auth is not None
            and oreq.attempts < MAX_AUTH_ATTEMPTS
            and not synthetic
        ):
            verdict = oreq.auth.handle_challenge(oreq.request, resp)
            if verdict in (AuthVerdict.RETRY, AuthVerdict.STALE):
                oreq.attempts += 1
                self._resend(oreq, now)
                return
        call = oreq.call
        purpose = oreq.purpose
        if purpose == "invite" and call is not None:
            self._invite_response(call, oreq, resp, now)
            return
        if purpose in ("reinvite", "refresh") and call is not None:
            self._reinvite_response(call, oreq, resp, now)
            return
        if status >= 200:
            oreq.final = resp
            if purpose != "cancel":
                self._events.append(RequestCompleted(oreq, resp))
            if call is not None and status in (408, 481) and purpose not in ("bye", "cancel", "prack"):
                self._terminate(
                    call, f"{status} to {oreq.request.method}", by_remote=True, now=now, send_bye=False
                )

    def _fail_over(self, oreq: OutgoingRequest, resp: Response, synthetic: bool, now: float) -> bool:
        """RFC 3263 §4.3: a target that timed out, could not be reached or answered 503 is left for the
        next one, with the same request in a new transaction (new branch). Not once a dialog is early."""
        if resp.status != 503 and not (synthetic and resp.status == 408):
            return False
        call = oreq.call
        if oreq.purpose not in ("request", "invite") or (
            call is not None
            and (call.state is not CallState.CALLING or call.dialog is not None or call.cancel_requested)
        ):
            return False
        failed, dest = oreq.dest, oreq.alternates.pop(0)
        note = f"{resp.status} {resp.reason} from {failed[0]} {self._hostport(*failed[1:])}"
        note += f"; next {dest[0]} {self._hostport(*dest[1:])} (RFC 3263 §4.3)"
        log.info("%s %s: %s", oreq.request.method, oreq.request.call_id, note)
        self._trace(oreq.request.call_id, now, "failover", note)
        oreq.dest = dest
        if dest[0] != failed[0]:  # the next target is on another transport: Via and Contact follow
            old = oreq.request
            req = Request(method=old.method, uri=old.uri, headers=old.headers.copy(), body=old.body)
            req.headers.remove_first("Via")
            req.headers.prepend("Via", str(self.new_via(dest[0])))
            if "Contact" in req.headers:
                contact = NameAddr.parse(req.headers.get("Contact") or "")
                contact.uri = self.contact(dest[0], contact.uri.user).uri
                req.headers.set("Contact", str(contact))
            oreq.request = req
        self._resend(oreq, now, new_cseq=oreq.request.cseq[0])
        if call is not None:
            call.invite, call.remote, call.transport = oreq.request, dest, dest[0]
        return True

    def _invite_response(self, call: Call, oreq: OutgoingRequest, resp: Response, now: float) -> None:
        status = resp.status
        if call.state is CallState.TERMINATED and not (200 <= status < 300):
            return
        if status < 200:
            if status == 100:
                return
            if call.cancel_requested:
                self._send_cancel(call, now)
            if resp.to.tag and call.dialog is None:
                try:
                    dialog = Dialog.from_uac(oreq.request, resp)
                except SipParseError:
                    dialog = None
                if dialog is not None:
                    call.dialog = dialog
                    self.calls[dialog.id] = call
            if is_reliable_provisional(resp) and not self._prack(call, oreq, resp, now):
                return
            if call.state is CallState.CALLING:
                self._events.append(CallProgress(call, resp))
            return
        if status < 300:
            self._invite_2xx(call, oreq, resp, now)
            return
        if status == 422 and oreq.attempts < MAX_AUTH_ATTEMPTS and call.state is CallState.CALLING:
            min_se = _int_header(resp, "Min-SE")
            if min_se:
                oreq.attempts += 1
                oreq.request.headers.set("Session-Expires", str(min_se))
                oreq.request.headers.set("Min-SE", str(min_se))
                self._resend(oreq, now)
                call.invite = oreq.request
                return
        if call.state is not CallState.CALLING:
            return
        oreq.final = resp
        self._fail_call(call, resp)

    def _fail_call(self, call: Call, resp: Response) -> None:
        call.state = CallState.TERMINATED
        call.terminate_reason = f"{resp.status} {resp.reason}"
        if call.invite_timer is not None:
            call.invite_timer.cancel()
            call.invite_timer = None
        self._forget(call)
        self._events.append(CallFailed(call, resp))

    def _invite_expired(self, call: Call, now: float) -> None:
        """No final answer in ``invite_timeout`` s: CANCEL; if even that gets nowhere, give up with 408."""
        call.invite_timer = None
        if call.state is not CallState.CALLING:
            return
        if not call.cancel_requested:
            log.info("INVITE %s unanswered for %.0f s: cancelling", call.call_id, self.config.invite_timeout)
            self.cancel(call, now)
            call.invite_timer = self._schedule(
                64 * self.config.timers.t1, lambda t: self._invite_expired(call, t), "invite", now
            )
            return
        assert call.invite is not None
        self._fail_call(call, Response.for_request(call.invite, 408, "Request Timeout (no answer to CANCEL)"))

    def _invite_2xx(self, call: Call, oreq: OutgoingRequest, resp: Response, now: float) -> None:
        cseq = resp.cseq[0]
        remote_tag = resp.to.tag or ""
        if call.dialog is not None and call.dialog.state is DialogState.CONFIRMED:
            if remote_tag == call.dialog.remote_tag:
                ack = call.acks.get(cseq)
                if ack is not None:  # retransmitted 2xx: ACK again (§13.2.2.4)
                    self._transmit(ack, self._dialog_dest(call), True, now)
                return
            self._ack_and_bye_stray_fork(oreq, resp, now)
            return
        try:
            if call.dialog is not None and call.dialog.remote_tag == remote_tag:
                call.dialog.confirm(resp)
            else:
                if call.dialog is not None:
                    self.calls.pop(call.dialog.id, None)
                call.dialog = Dialog.from_uac(oreq.request, resp)
                early = call.reliable_in.dialogs.get(remote_tag) if call.reliable_in is not None else None
                seq = early.local_seq if early is not None else 0  # PRACKs already sent in that fork
                call.dialog.local_seq = max(call.dialog.local_seq, oreq.request.cseq[0], seq)
        except SipParseError as exc:
            log.info("2xx to INVITE without usable Contact/To tag: %s", exc)
            call.dialog = None
            if call.state is CallState.CALLING:
                self._fail_call(
                    call, Response.for_request(oreq.request, 502, "Invalid 2xx (no Contact or To tag)")
                )
            return
        dialog = call.dialog
        self.calls[dialog.id] = call
        self.pending_uac.pop((call.call_id, call.local_tag), None)
        if call.invite_timer is not None:
            call.invite_timer.cancel()
            call.invite_timer = None
        oreq.final = resp
        call.invite = oreq.request
        if resp.body or call.reliable_in is None:  # the answer may have come in a reliable 18x (RFC 3262 §5)
            call.remote_sdp = resp.body
            call.remote_content_type = resp.media_type
        call.peer_allows = resp.allow
        ack = dialog.create_ack(cseq, self.new_via(call.transport))
        self._common_headers(ack.headers, True)
        call.acks[cseq] = ack
        self._transmit(ack, self._dialog_dest(call), False, now)
        call.state = CallState.CONFIRMED
        self._session_timer_from_response(call, resp, now)
        self._events.append(CallAnswered(call, resp))
        if call.cancel_requested:
            self._terminate(call, "cancelled after answer", by_remote=False, now=now)

    def _ack_and_bye_stray_fork(self, oreq: OutgoingRequest, resp: Response, now: float) -> None:
        """§13.2.2.4: a 2xx from a second fork: acknowledge it, then end that dialog with a BYE."""
        try:
            dialog = Dialog.from_uac(oreq.request, resp)
        except SipParseError:
            return
        tr = oreq.dest[0]
        dest = destination_for(dialog.next_hop(), tr)
        self._transmit(dialog.create_ack(resp.cseq[0], self.new_via(tr)), dest, False, now)
        bye = dialog.create_request("BYE", self.new_via(tr), None)
        self._start(OutgoingRequest(self, bye, dest, purpose="bye"), now)

    def _prack(self, call: Call, oreq: OutgoingRequest, resp: Response, now: float) -> bool:
        """RFC 3262 §4: PRACK a reliable 18x in its early dialog; False when it must not be processed.

        A retransmission (RSeq already seen in that dialog) is not PRACKed again: the PRACK's own
        transaction retransmits. One whose RSeq skips a number is neither PRACKed nor processed.
        """
        tag = resp.to.tag or ""
        rseq = parse_rseq(resp.headers.get("RSeq"))
        receiver = call.reliable_in = call.reliable_in or ReliableReceiver()
        dialog = call.dialog if call.dialog is not None and call.dialog.remote_tag == tag else None
        if dialog is None:
            dialog = receiver.dialogs.get(tag)
        if dialog is None:
            try:
                dialog = receiver.dialogs[tag] = Dialog.from_uac(oreq.request, resp)
            except SipParseError as exc:  # no To tag or Contact: no early dialog to PRACK in
                log.info("reliable %s on %s cannot be PRACKed: %s", resp.status, call.call_id, exc)
                return True
        assert rseq is not None
        arrival = receiver.arrival(tag, rseq)
        if arrival is not Arrival.NEW:
            log.debug("reliable %s RSeq %s on %s: %s", resp.status, rseq, call.call_id, arrival.value)
            return False
        h = Headers([("RAck", format_rack(rseq, resp.cseq[0], resp.cseq[1]))])
        self._common_headers(h, True)
        prack = dialog.create_request("PRACK", self.new_via(call.transport), None, headers=h)
        if call.auth is not None:
            call.auth.authorize(prack)
        dest = destination_for(dialog.next_hop(), call.transport)
        self._start(OutgoingRequest(self, prack, dest, auth=call.auth, call=call, purpose="prack"), now)
        if resp.body:  # an answer (or offer) in a reliable 18x counts (§5)
            call.remote_sdp = resp.body
            call.remote_content_type = resp.media_type
        return True

    def _dialog_dest(self, call: Call) -> Address:
        assert call.dialog is not None
        return destination_for(call.dialog.next_hop(), call.transport)

    # -- requests -------------------------------------------------------------------------------------

    def _receive_request(self, req: Request, source: Address, now: float) -> None:
        self._now = now
        try:
            validate_request(req)
        except InvalidRequest as exc:
            self.stats["bad_requests"] += 1
            log.debug("invalid %s from %s:%s: %s", req.method, source[1], source[2], exc.reason)
            status, reason = exc.status, exc.reason
            if _not_implemented(req.method) and exc.reason == CSEQ_MISMATCH:
                status, reason = 501, "Not Implemented"  # RFC 4475 §3.1.2.18 prefers it to 400
            self._respond_stateless(req, source, status, reason, now)
            return
        if req.uri.scheme == "tel":
            self._respond_stateless(req, source, 416, "Unsupported URI Scheme", now)
            return
        top = req.via
        top.stamp_source(source[1], source[2])
        req.headers.remove_first("Via")
        req.headers.prepend("Via", str(top))
        txn = self.layer.match_request(req, top)
        if req.method == "ACK":
            if txn is not None and not txn.receive_retransmission(req, now):
                return
            self._receive_ack(req, now)
            return
        if txn is not None:
            txn.receive_retransmission(req, now)
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, source, now)
            return
        stxn = self.layer.start_server(req, source, self, now)
        try:
            self._dispatch_request(req, stxn, source, now)
        except SipParseError as exc:
            if not stxn.final_sent:
                self._respond(stxn, 400, f"Malformed Request ({str(exc)[:60]})", now=now)
        except Exception:
            log.exception("SIP core failed on %s", req.start_line)
            if not stxn.final_sent:
                self._respond(stxn, 500, now=now)

    def _dispatch_request(self, req: Request, stxn: ServerTransaction, source: Address, now: float) -> None:
        method = req.method
        if method not in ALLOWED_METHODS:
            self._respond(stxn, 501 if _not_implemented(method) else 405, now=now)
            return
        unsupported = [ext for ext in req.require if ext.lower() not in SUPPORTED_EXTENSIONS]
        if unsupported:
            h = Headers([("Unsupported", ", ".join(unsupported))])
            self._respond(stxn, 420, now=now, headers=h)
            return
        to_tag = req.to.tag
        if to_tag:
            call = self.calls.get((req.call_id, to_tag, req.from_.tag or ""))
            if call is None or call.dialog is None or call.terminated:
                if method == "OPTIONS" and self.unavailable:
                    self._respond_unavailable(stxn, now)
                elif method == "OPTIONS":
                    self._respond(stxn, 200, now=now)
                else:
                    self._respond(stxn, 481, now=now)
                return
            try:
                call.dialog.check_request(req)
            except InvalidRequest as exc:
                self._respond(stxn, exc.status, exc.reason, now=now)
                return
            if not self._refuse_content(req, stxn, now):
                self._in_dialog_request(call, req, stxn, now)
            return
        if method in ("INVITE", "OPTIONS") and self.unavailable:
            self._respond_unavailable(stxn, now, to_tag=new_tag() if method == "INVITE" else None)
        elif method == "INVITE" and self._refuse_content(req, stxn, now, to_tag=new_tag()):
            return
        elif method == "INVITE":
            self._new_incoming_call(req, stxn, source, now)
        elif method == "OPTIONS":
            self._respond(stxn, 200, now=now)
        else:
            self._respond(stxn, 481, now=now)

    def _refuse_content(
        self, req: Request, stxn: ServerTransaction, now: float, to_tag: str | None = None
    ) -> bool:
        """§8.2.3: 415 for an INVITE/UPDATE body we cannot read, 406 when we may not answer in SDP.

        The body is an offer we must understand (415 with Accept, and Accept-Encoding for an encoding we
        lack); the answer or offer we send back is SDP, so an Accept that excludes it gets 406 (§21.4.7,
        RFC 4475 §3.3.15). A body-less UPDATE (a session refresh) is answered without a body: no check.
        True when the request was refused.
        """
        if req.method not in ("INVITE", "UPDATE") or (req.method == "UPDATE" and not req.body):
            return False
        if req.body:
            encoding = [e.lower() for e in req.headers.values("Content-Encoding")]
            if req.media_type not in ACCEPTED_BODIES or any(e != "identity" for e in encoding):
                h = Headers([("Accept", ", ".join(ACCEPTED_BODIES)), ("Accept-Encoding", "identity")])
                self._respond(stxn, 415, now=now, to_tag=to_tag, headers=h)
                return True
        accept = [a.split(";", 1)[0].strip(" \t").lower() for a in req.headers.values("Accept")]
        if accept and not any(a in ("*/*", "application/*", *ACCEPTED_BODIES) for a in accept):
            h = Headers([("Accept", ", ".join(ACCEPTED_BODIES))])
            self._respond(stxn, 406, now=now, to_tag=to_tag, headers=h)
            return True
        return False

    def _in_dialog_request(self, call: Call, req: Request, stxn: ServerTransaction, now: float) -> None:
        method = req.method
        if method == "BYE":
            self._respond(stxn, 200, now=now)
            self._terminate(call, "remote BYE", by_remote=True, now=now, send_bye=False)
        elif method == "OPTIONS":
            self._respond(stxn, 200, now=now)
        elif method in ("INVITE", "UPDATE"):
            self._receive_reinvite(call, req, stxn, now)
        elif method == "PRACK":
            self._receive_prack(call, req, stxn, now)
        else:
            self._respond(stxn, 405, now=now)

    # -- INVITE as UAS --------------------------------------------------------------------------------

    def _new_incoming_call(self, req: Request, stxn: ServerTransaction, source: Address, now: float) -> None:
        merge_key = (req.call_id, req.from_.tag or "", req.cseq[0])
        other = self._uas_invites.get(merge_key)
        if other is not None and other.server_txn is not None and other.server_txn.key != stxn.key:
            self._respond(stxn, 482, "Loop Detected", now=now, to_tag=new_tag())  # §8.2.2.2 merged request
            return
        allow = self.config.invite_allow_list
        if allow is not None and source[1] not in allow:
            log.info("INVITE from %s refused: not in the allow-list", source[1])
            self._respond(stxn, 403, now=now, to_tag=new_tag())
            return
        self._respond(stxn, 100, now=now)
        call = Call(CallRole.UAS, req.call_id, source[0])
        call.local_tag = new_tag()
        call.invite = req
        call.server_txn = stxn
        call.remote = source
        call.remote_sdp = req.body
        call.remote_content_type = req.media_type
        call.peer_allows = req.allow
        try:
            call.dialog = Dialog.from_uas(req, call.local_tag)
        except (InvalidRequest, SipParseError) as exc:
            reason = exc.reason if isinstance(exc, InvalidRequest) else "Bad Contact"
            self._respond(stxn, 400, reason, now=now, to_tag=call.local_tag)
            return
        st = self._session_timer_for_request(call, req)
        if isinstance(st, Headers):
            self._respond(stxn, 422, now=now, to_tag=call.local_tag, headers=st)
            return
        self.calls[call.dialog.id] = call
        self._uas_invites[merge_key] = call
        if requires_100rel(req):  # RFC 3262 §3: our 18x go reliably (only when required: the simplest choice)

            def retransmit(resp: Response, t: float) -> None:
                if stxn.state is State.PROCEEDING:
                    self._transmit(resp, stxn.dest, True, t)

            call.reliable_out = ReliableSender(
                self.timers, self.config.timers.t1, req.cseq[0], int(self.config.random_uniform(1, 2**30)),
                retransmit=None if is_reliable(stxn.dest) else retransmit,
                give_up=lambda t: self._no_prack(call, t),
            )  # fmt: skip
        self._events.append(IncomingCall(call, req, source))

    def ringing(
        self, call: Call, now: float, status: int = 180, body: bytes = b"", content_type: str | None = None
    ) -> None:
        """Send a provisional response (with our To tag and Contact) to the INVITE of ``call``."""
        if call.state is not CallState.INCOMING or call.server_txn is None:
            raise UsageError(f"cannot send {status} in call state {call.state.value}")
        if not 100 < status < 200:
            raise UsageError(f"{status} is not a provisional status")
        rel = call.reliable_out
        if rel is not None and not rel.can_send_now():
            rel.wait(status, body, content_type)  # RFC 3262 §3: after the PRACK of the one in flight
            return
        resp = self._respond(
            call.server_txn, status, now=now, to_tag=call.local_tag, body=body, content_type=content_type,
            contact_transport=call.transport, headers=rel.headers() if rel is not None else None,
        )  # fmt: skip
        if rel is not None:
            rel.sent_response(resp, now)

    def _receive_prack(self, call: Call, req: Request, stxn: ServerTransaction, now: float) -> None:
        """RFC 3262 §3: 200 to a PRACK whose RAck matches an unacknowledged reliable 18x, else 481."""
        rel = call.reliable_out
        rack = parse_rack(req.headers.get("RAck"))
        if rel is None or rack is None or not rel.acknowledge(rack):
            self._respond(stxn, 481, now=now)
            return
        self._respond(stxn, 200, now=now)
        if req.body:  # the answer to an offer we made in a reliable 18x (§5)
            call.remote_sdp = req.body
            call.remote_content_type = req.media_type
        if call.state is not CallState.INCOMING:
            return
        if rel.held_answer is not None and not rel.must_hold_2xx():
            body, content_type = rel.held_answer
            rel.held_answer = None
            self.accept(call, body, now, content_type=content_type)
            return
        waiting = rel.next_waiting()
        if waiting is not None:
            self.ringing(call, now, waiting.status, waiting.body, waiting.content_type)

    def _no_prack(self, call: Call, now: float) -> None:
        """RFC 3262 §3: a reliable 18x unacknowledged for 64*T1: answer the INVITE 5xx, end the call."""
        if call.state is not CallState.INCOMING or call.server_txn is None:
            return
        log.info("no PRACK for a reliable provisional response in call %s: 500", call.call_id)
        self._respond(call.server_txn, 500, "No PRACK", now=now, to_tag=call.local_tag)
        self._terminate(call, "no PRACK", by_remote=False, now=now, send_bye=False)

    def accept(self, call: Call, body: bytes, now: float, *, content_type: str = "application/sdp") -> None:
        """Answer the INVITE with 200 (§13.3.1.4); retransmitted until the ACK (``CallConfirmed``)."""
        if call.state is not CallState.INCOMING or call.server_txn is None or call.dialog is None:
            raise UsageError(f"cannot accept a call in state {call.state.value}")
        rel = call.reliable_out
        if rel is not None and rel.must_hold_2xx():  # RFC 3262 §3: the 2xx waits for the PRACK
            if rel.held_answer is not None:
                raise UsageError("the call is already accepted (the 2xx waits for a PRACK)")
            rel.held_answer = (body, content_type)
            return
        if rel is not None:
            rel.final()
        call.local_sdp = body
        call.local_content_type = content_type
        h = self._session_timer_headers(call, call.invite)
        resp = self._respond(
            call.server_txn, 200, now=now, to_tag=call.local_tag, body=body, content_type=content_type,
            contact_transport=call.transport, headers=h,
        )  # fmt: skip
        call.dialog.confirm()
        call.state = CallState.ANSWERED
        self._start_ok_retransmission(call, resp, now)
        self._arm_session_timer(call, now)

    def reject(
        self, call: Call, status: int, now: float, reason: str | None = None, headers: Headers | None = None
    ) -> None:
        """Answer the INVITE with a final error (≥300); the call ends (``CallTerminated``)."""
        if call.state is not CallState.INCOMING or call.server_txn is None:
            raise UsageError(f"cannot reject a call in state {call.state.value}")
        if status < 300:
            raise UsageError(f"{status} is not an error status")
        self._respond(call.server_txn, status, reason, now=now, to_tag=call.local_tag, headers=headers)
        self._terminate(call, f"rejected {status}", by_remote=False, now=now, send_bye=False)

    def _start_ok_retransmission(self, call: Call, resp: Response, now: float) -> None:
        call.ok = resp
        call.ok_cseq = resp.cseq[0]
        values = self.config.timers
        if call.server_txn is not None and not is_reliable(call.server_txn.dest):
            call.ok_interval = values.t1
            call.ok_timer = self._schedule(
                call.ok_interval, lambda t: self._ok_retransmit(call, t), "2xx", now
            )
        call.ok_giveup = self._schedule(64 * values.t1, lambda t: self._ok_giveup(call, t), "2xx-ack", now)

    def _ok_retransmit(self, call: Call, now: float) -> None:
        if call.ok is None or call.terminated or call.server_txn is None:
            return
        self._now = now
        txn = call.server_txn
        if txn.state is State.ACCEPTED:
            txn.respond(call.ok, now)
        else:
            self._transmit(call.ok, txn.dest, True, now)
        call.ok_interval = min(2 * call.ok_interval, self.config.timers.t2)
        call.ok_timer = self._schedule(call.ok_interval, lambda t: self._ok_retransmit(call, t), "2xx", now)

    def _ok_giveup(self, call: Call, now: float) -> None:
        if call.ok is None or call.terminated:
            return
        self._stop_ok(call)
        log.info("no ACK for 2xx in call %s: ending it", call.call_id)
        if call.state is CallState.ANSWERED:
            self._terminate(call, "no ACK", by_remote=False, now=now)
        else:
            call.reinvite_in = None
            self._terminate(call, "no ACK for re-INVITE 2xx", by_remote=False, now=now)

    def _stop_ok(self, call: Call) -> None:
        for handle in (call.ok_timer, call.ok_giveup):
            if handle is not None:
                handle.cancel()
        call.ok = None
        call.ok_timer = call.ok_giveup = None

    def _receive_ack(self, req: Request, now: float) -> None:
        """An ACK outside any transaction: the ACK for our 2xx (§13.3.1.4), matched by dialog and CSeq."""
        call = self.calls.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if call is None or call.ok is None or req.cseq[0] != call.ok_cseq:
            log.debug("ACK matches no 2xx awaiting it; dropped")
            return
        self._stop_ok(call)
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self._events.append(CallConfirmed(call, req))
        elif call.reinvite_in is not None:
            call.reinvite_in = None
            call.reinvite_in_request = None
        if req.body:
            call.remote_sdp = req.body
            call.remote_content_type = req.media_type

    def _receive_cancel(self, req: Request, source: Address, now: float) -> None:
        """§9.2: 200 to the CANCEL, then 487 to the INVITE if it has no final response yet."""
        invite_txn = self.layer.find_invite_server(req)
        stxn = self.layer.start_server(req, source, self, now)
        if invite_txn is None:
            self._respond(stxn, 481, now=now)
            return
        self._respond(stxn, 200, now=now)
        if invite_txn.final_sent:
            return
        call = next(
            (
                c
                for c in self.calls.values()
                if invite_txn in (c.server_txn, c.reinvite_in) and not c.terminated
            ),
            None,
        )
        if call is not None and call.reinvite_in is invite_txn:
            self._respond(invite_txn, 487, now=now)  # a cancelled re-INVITE: the session stays as it was
            call.reinvite_in = None
            call.reinvite_in_request = None
        elif call is not None and call.state is CallState.INCOMING:
            self._respond(invite_txn, 487, now=now, to_tag=call.local_tag)
            self._terminate(call, "cancelled", by_remote=True, now=now, send_bye=False)
        else:
            self._respond(invite_txn, 487, now=now, to_tag=new_tag())

    # -- re-INVITE / UPDATE --------------------------------------------------------------------------

    def reinvite(
        self,
        call: Call,
        body: bytes,
        now: float,
        *,
        content_type: str = "application/sdp",
        method: str = "INVITE",
        purpose: str = "reinvite",
    ) -> OutgoingRequest:
        """Send a re-INVITE (or UPDATE) with a new offer; ``ReinviteResult`` reports the outcome (§14.1)."""
        self._now = now
        if call.state is not CallState.CONFIRMED or call.dialog is None:
            raise UsageError(f"cannot re-INVITE a call in state {call.state.value}")
        if call.reinvite_out is not None or call.reinvite_in is not None:
            raise UsageError("an offer/answer exchange is already in progress (RFC 3261 §14.1)")
        h = Headers()
        self._common_headers(h, True)
        h.add("Allow", ", ".join(ALLOWED_METHODS))
        h.add("Supported", "timer")  # not 100rel: 18x to a re-INVITE are not PRACKed here
        if call.session_interval:
            h.add(
                "Session-Expires",
                f"{call.session_interval};refresher={'uac' if call.local_refresher else 'uas'}",
            )
            h.add("Min-SE", str(self.config.min_se))
        req = call.dialog.create_request(
            method, self.new_via(call.transport), self.contact(call.transport), body=body,
            content_type=content_type, headers=h,
        )  # fmt: skip
        if call.auth is not None:
            call.auth.authorize(req)
        oreq = OutgoingRequest(self, req, self._dialog_dest(call), auth=call.auth, call=call, purpose=purpose)
        call.reinvite_out = oreq
        if purpose == "reinvite" and body:
            oreq.user_data = ("offer", body, content_type)
        self._start(oreq, now)
        return oreq

    def _reinvite_response(self, call: Call, oreq: OutgoingRequest, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            return
        if 200 <= status < 300 and oreq.final is not None:
            ack = call.acks.get(resp.cseq[0])
            if ack is not None and not call.terminated:
                self._transmit(ack, self._dialog_dest(call), True, now)
            return
        oreq.final = resp
        if call.terminated:
            return
        if 200 <= status < 300:
            dialog = call.dialog
            assert dialog is not None
            dialog.refresh_target(resp)
            if oreq.request.method == "INVITE":
                ack = dialog.create_ack(resp.cseq[0], self.new_via(call.transport))
                self._common_headers(ack.headers, True)
                call.acks = {resp.cseq[0]: ack}
                self._transmit(ack, self._dialog_dest(call), False, now)
            if oreq.request.body:
                call.local_sdp = oreq.request.body
                call.local_content_type = oreq.request.headers.get("Content-Type") or call.local_content_type
                if resp.body:
                    call.remote_sdp = resp.body
                    call.remote_content_type = resp.media_type
            call.reinvite_out = None
            self._session_timer_from_response(call, resp, now)
        elif status == 491 and oreq.glare_retries < MAX_GLARE_RETRIES:
            # §14.1: the owner of the Call-ID waits 2.1-4 s, the other side 0-2 s, then tries again
            oreq.glare_retries += 1
            rnd = self.config.random_uniform
            delay = rnd(2.1, 4.0) if call.dialog is not None and call.dialog.caller else rnd(0.0, 2.0)
            log.info("491 glare on %s: retrying the re-INVITE in %.2f s", call.call_id, delay)
            oreq.final = None
            call.glare_timer = self._schedule(delay, lambda t: self._glare_retry(call, oreq, t), "glare", now)
            return
        else:
            call.reinvite_out = None
            if status in (408, 481):
                self._terminate(call, f"{status} to re-INVITE", by_remote=True, now=now)
                if oreq.purpose == "reinvite":
                    self._events.append(ReinviteResult(call, resp))
                return
            if oreq.purpose == "refresh":
                self._arm_session_timer(call, now)
        if oreq.purpose == "reinvite":
            self._events.append(ReinviteResult(call, resp))

    def _glare_retry(self, call: Call, oreq: OutgoingRequest, now: float) -> None:
        call.glare_timer = None
        if call.terminated or call.dialog is None:
            return
        if call.reinvite_in is not None:  # the peer's exchange is still running: wait for it a little more
            call.glare_timer = self._schedule(0.5, lambda t: self._glare_retry(call, oreq, t), "glare", now)
            return
        via = self.new_via(call.transport)
        old = oreq.request
        h = Headers([(n, v) for n, v in old.headers if n.lower() not in _DIALOG_HEADERS])
        h.remove("Authorization")
        h.remove("Proxy-Authorization")
        req = call.dialog.create_request(
            old.method, via, self.contact(call.transport), body=old.body,
            content_type=old.headers.get("Content-Type"), headers=h,
        )  # fmt: skip
        if oreq.auth is not None:
            oreq.auth.authorize(req)
        oreq.request = req
        oreq.dest = self._dialog_dest(call)
        self._start(oreq, now)

    def _receive_reinvite(self, call: Call, req: Request, stxn: ServerTransaction, now: float) -> None:
        pending = call.reinvite_out
        offer_clash = req.method == "INVITE" or bool(req.body)  # RFC 3311 §5.2: an UPDATE offer clashes too
        if (
            offer_clash
            and pending is not None
            and not pending.done
            and call.glare_timer is None
            and (pending.request.method == "INVITE" or pending.request.body)
        ):
            self._respond(stxn, 491, now=now)  # §14.2: our own INVITE is pending
            return
        if call.reinvite_in is not None or call.state in (CallState.ANSWERED, CallState.INCOMING):
            h = Headers([("Retry-After", str(int(self.config.random_uniform(0, 10))))])
            self._respond(stxn, 500, "Request Pending", now=now, headers=h)  # §14.2
            return
        st = self._session_timer_for_request(call, req)
        if isinstance(st, Headers):
            self._respond(stxn, 422, now=now, headers=st)
            return
        call.reinvite_in = stxn
        call.reinvite_in_request = req
        if not req.body or (req.body == call.remote_sdp):
            # a session refresh (RFC 4028 §10) or an offer-less re-INVITE: answer with what we have
            self._answer_reinvite(call, 200, call.local_sdp, call.local_content_type, now)
            return
        if req.method == "INVITE":
            # §17.2.1: the application answers the offer later; a 100 stops the retransmissions and
            # keeps a proxy's fr_timer from turning a slow answer into a 408 (which ends the dialog)
            self._respond(stxn, 100, now=now)
        self._events.append(ReinviteReceived(call, req))

    def answer_reinvite(
        self,
        call: Call,
        status: int,
        now: float,
        body: bytes = b"",
        *,
        content_type: str = "application/sdp",
        reason: str | None = None,
    ) -> None:
        """Answer the pending re-INVITE/UPDATE of ``call``: 2xx with ``body``, or an error (e.g. 488)."""
        self._now = now
        if call.reinvite_in is None or call.reinvite_in_request is None:
            raise UsageError("no re-INVITE is waiting for an answer")
        self._answer_reinvite(call, status, body, content_type, now, reason)

    def _answer_reinvite(
        self, call: Call, status: int, body: bytes, content_type: str, now: float, reason: str | None = None
    ) -> None:
        stxn = call.reinvite_in
        req = call.reinvite_in_request
        assert stxn is not None and req is not None and call.dialog is not None
        if status >= 300:
            self._respond(stxn, status, reason, now=now)
            call.reinvite_in = None
            call.reinvite_in_request = None
            return
        h = self._session_timer_headers(call, req)
        resp = self._respond(
            stxn, status, reason, now=now, body=body, content_type=content_type, headers=h,
            contact_transport=call.transport,
        )  # fmt: skip
        call.dialog.refresh_target(req)
        if req.body:
            call.remote_sdp = req.body
            call.remote_content_type = req.media_type
        if body:
            call.local_sdp = body
            call.local_content_type = content_type
        self._arm_session_timer(call, now)
        if req.method == "INVITE":
            self._start_ok_retransmission(call, resp, now)  # cleared by the ACK
        else:
            call.reinvite_in = None
            call.reinvite_in_request = None

    # -- session timers (RFC 4028) -------------------------------------------------------------------

    def _session_timer_for_request(self, call: Call, req: Request) -> Headers | None:
        """Decide the interval and refresher for a request we answer (§9); Headers of a 422 if too small."""
        se = _parse_session_expires(req.headers.get("Session-Expires"))
        if se is None or not self.config.session_expires:
            if call.role is CallRole.UAS and req is call.invite:
                call.session_interval = None
            return None
        interval, refresher = se
        if interval < self.config.min_se:
            return Headers([("Min-SE", str(self.config.min_se))])
        peer_min = _int_header(req, "Min-SE") or 0
        if interval > self.config.session_expires:
            interval = max(self.config.session_expires, peer_min, self.config.min_se)
        if refresher is None:
            refresher = "uac" if "timer" in [s.lower() for s in req.supported] else "uas"
        call.session_interval = interval
        call.local_refresher = refresher == "uas"  # we are the UAS of this request
        return None

    def _session_timer_headers(self, call: Call, req: Request | None) -> Headers | None:
        if not call.session_interval or req is None:
            return None
        h = Headers(
            [
                (
                    "Session-Expires",
                    f"{call.session_interval};refresher={'uas' if call.local_refresher else 'uac'}",
                )
            ]
        )
        if "timer" in [s.lower() for s in req.supported]:
            h.add("Require", "timer")
        return h

    def _session_timer_from_response(self, call: Call, resp: Response, now: float) -> None:
        """RFC 4028 §7.2: the 2xx to our INVITE/UPDATE says the interval and who refreshes."""
        se = _parse_session_expires(resp.headers.get("Session-Expires"))
        if se is None:
            call.session_interval = None
            self._arm_session_timer(call, now)
            return
        interval, refresher = se
        call.session_interval = max(interval, 1)
        call.local_refresher = refresher != "uas"  # we are the UAC of this transaction
        self._arm_session_timer(call, now)

    def _arm_session_timer(self, call: Call, now: float) -> None:
        if call.session_timer is not None:
            call.session_timer.cancel()
            call.session_timer = None
        interval = call.session_interval
        if not interval or call.terminated:
            return
        if call.local_refresher:
            call.session_timer = self._schedule(
                interval / 2, lambda t: self._refresh(call, t), "refresh", now
            )
        else:
            delay = interval - min(32.0, interval / 3)
            call.session_timer = self._schedule(
                delay, lambda t: self._session_expired(call, t), "expiry", now
            )

    def _refresh(self, call: Call, now: float) -> None:
        """RFC 4028 §10: refresh with the same SDP (o= unchanged) or with a body-less UPDATE."""
        call.session_timer = None
        if call.terminated:
            return
        if (
            call.reinvite_out is not None
            or call.reinvite_in is not None
            or call.state is not CallState.CONFIRMED
        ):
            call.session_timer = self._schedule(1.0, lambda t: self._refresh(call, t), "refresh", now)
            return
        use_update = self.config.refresh_method == "UPDATE" and "UPDATE" in call.peer_allows
        if use_update:
            self.reinvite(call, b"", now, method="UPDATE", purpose="refresh")
        else:
            self.reinvite(call, call.local_sdp, now, content_type=call.local_content_type, purpose="refresh")

    def _session_expired(self, call: Call, now: float) -> None:
        call.session_timer = None
        if call.terminated:
            return
        log.info("session timer expired on %s: sending BYE", call.call_id)
        self._terminate(call, "session expired", by_remote=False, now=now)

    # -- BYE and termination -------------------------------------------------------------------------

    def bye(self, call: Call, now: float) -> OutgoingRequest | None:
        """End the call: BYE on a dialog, CANCEL before the answer (§15); ``CallTerminated`` follows."""
        self._now = now
        if call.terminated:
            return None
        if call.role is CallRole.UAC and call.state is CallState.CALLING:
            self.cancel(call, now)
            return None
        if call.state is CallState.INCOMING:
            self.reject(call, 480, now)
            return None
        return self._terminate(call, "local BYE", by_remote=False, now=now)

    def _terminate(
        self, call: Call, reason: str, *, by_remote: bool, now: float, send_bye: bool = True
    ) -> OutgoingRequest | None:
        if call.terminated:
            return None
        bye_req: OutgoingRequest | None = None
        if send_bye and call.dialog is not None and call.state in (CallState.CONFIRMED, CallState.ANSWERED):
            h = Headers()
            self._common_headers(h, True)
            bye = call.dialog.create_request("BYE", self.new_via(call.transport), None, headers=h)
            if call.auth is not None:
                call.auth.authorize(bye)
            bye_req = OutgoingRequest(
                self, bye, self._dialog_dest(call), auth=call.auth, call=call, purpose="bye"
            )
            self._start(bye_req, now)
        if call.reinvite_in is not None and not call.reinvite_in.final_sent:
            with contextlib.suppress(UsageError):
                self._respond(call.reinvite_in, 487, now=now)
        if (
            call.server_txn is not None
            and call.server_txn.state is State.PROCEEDING
            and call.state is CallState.INCOMING
        ):
            self._respond(call.server_txn, 487, now=now, to_tag=call.local_tag)
        call.state = CallState.TERMINATED
        call.terminate_reason = reason
        if call.dialog is not None:
            call.dialog.state = DialogState.TERMINATED
        self._stop_ok(call)
        if call.reliable_out is not None:
            call.reliable_out.final()
        for handle in (call.session_timer, call.glare_timer, call.invite_timer):
            if handle is not None:
                handle.cancel()
        call.session_timer = call.glare_timer = call.invite_timer = None
        self._forget(call, keep_for_acks=call.role is CallRole.UAC)
        self._events.append(CallTerminated(call, reason, by_remote))
        return bye_req

    def _forget(self, call: Call, keep_for_acks: bool = False) -> None:
        """Drop the call from the tables (after a grace period for stray 2xx when it sent ACKs)."""
        self.pending_uac.pop((call.call_id, call.local_tag), None)
        if call.role is CallRole.UAS and call.invite is not None and call.dialog is not None:
            key = (call.call_id, call.dialog.remote_tag, call.invite.cseq[0])
            if self._uas_invites.get(key) is call:
                del self._uas_invites[key]
        if call.dialog is None:
            return
        did = call.dialog.id
        if keep_for_acks:
            self._schedule(64 * self.config.timers.t1, lambda t: self._drop(did, call), "forget", self._now)
        else:
            self._drop(did, call)

    def _drop(self, did: tuple[str, str, str], call: Call) -> None:
        if self.calls.get(did) is call:
            del self.calls[did]

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self.calls.values() if not c.terminated)


_DIALOG_HEADERS = frozenset(
    {
        "via",
        "max-forwards",
        "from",
        "to",
        "call-id",
        "cseq",
        "route",
        "contact",
        "content-type",
        "content-length",
    }
)


def _not_implemented(method: str) -> bool:
    """A method neither served nor known as a SIP method: 501, not 405 (§21.5.2)."""
    return method not in ALLOWED_METHODS and method not in KNOWN_METHODS


def _reason_phrase(fault: str) -> str:
    """A 400 reason phrase naming ``fault``: printable ASCII only, short (§25.1 Reason-Phrase)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in fault)
    return f"Bad Request ({text[:100]})"


def _lr(uri: SipUri) -> SipUri:
    out = uri.copy()
    out.params["lr"] = None
    return out
