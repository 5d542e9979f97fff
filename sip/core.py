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
from collections import OrderedDict
from collections.abc import Callable

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
from sip.core_shared import (
    ACCEPTED_BODIES,
    ALLOWED_METHODS,
    MAX_AUTH_ATTEMPTS,
    SUPPORTED_EXTENSIONS,
    CoreConfig,
    UsageError,
    bad_request_reason,
    destination_for,
    loose_route_uri,
    not_implemented,
)
from sip.dialog import DialogState
from sip.errors import InvalidRequest, SipParseError
from sip.invite_client import InviteClient
from sip.invite_server import InviteServer
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
from sip.session_refresh import SessionRefresh
from sip.timers import TimerHandle, TimerQueue
from sip.transaction import (
    Address,
    ClientTransaction,
    ServerTransaction,
    State,
    TransactionLayer,
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


# ---------------------------------------------------------------------------------------------- core


class UserAgentCore(InviteClient, InviteServer, SessionRefresh):
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
                self._respond_stateless(broken, source, 400, bad_request_reason(str(exc)), now)
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
        route = [f"<{loose_route_uri(proxy_uri)}>"] if proxy_uri is not None else None
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

    # -- requests -------------------------------------------------------------------------------------

    def _receive_request(self, req: Request, source: Address, now: float) -> None:
        self._now = now
        try:
            validate_request(req)
        except InvalidRequest as exc:
            self.stats["bad_requests"] += 1
            log.debug("invalid %s from %s:%s: %s", req.method, source[1], source[2], exc.reason)
            status, reason = exc.status, exc.reason
            if not_implemented(req.method) and exc.reason == CSEQ_MISMATCH:
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
            self._respond(stxn, 501 if not_implemented(method) else 405, now=now)
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
