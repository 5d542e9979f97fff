"""The INVITE client side of the SIP user-agent core (RFC 3261 §13.2, §17.1.1; RFC 3262 as UAC): placing
a call, CANCEL, the answers to our INVITE (ACK for a 2xx, forks, PRACK of reliable 18x). A part of
``sip.core.UserAgentCore``, which inherits it; it uses the core's building blocks (``_respond``,
``_build_request``, ``_transmit``...) and state."""

from __future__ import annotations

import logging

from sip.auth import DigestClient
from sip.calls import (
    Call,
    CallAnswered,
    CallFailed,
    CallProgress,
    CallRole,
    CallState,
    OutgoingRequest,
)
from sip.core_shared import (
    ALLOWED_METHODS,
    LARGE_REQUEST,
    MAX_AUTH_ATTEMPTS,
    destination_for,
    int_header,
    loose_route_uri,
)
from sip.dialog import Dialog, DialogState
from sip.errors import SipParseError
from sip.message import (
    Headers,
    Request,
    Response,
)
from sip.reliable import (
    Arrival,
    ReliableReceiver,
    format_rack,
    is_reliable_provisional,
    parse_rseq,
)
from sip.transaction import (
    Address,
    InviteClientTransaction,
    State,
)
from sip.uri import NameAddr, SipUri, new_call_id, new_tag

log = logging.getLogger(__name__)


class InviteClient:
    """INVITE as UAC (mixed into ``UserAgentCore``)."""

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
        dest = (
            targets[0]
            if targets
            else destination_for(proxy_uri or target_uri, transport or self.config.default_transport)
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
        route = [f"<{loose_route_uri(proxy_uri)}>"] if proxy_uri is not None else None
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
            min_se = int_header(resp, "Min-SE")
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
