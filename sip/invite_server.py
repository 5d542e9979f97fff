"""The INVITE server side of the SIP user-agent core (RFC 3261 §13.3, §17.2.1; RFC 3262 as UAS): a new
call offered to the application, ringing (reliably when asked), accept/reject, our 2xx retransmitted
until the ACK, CANCEL. A part of ``sip.core.UserAgentCore``, which inherits it."""

from __future__ import annotations

import logging

from sip.calls import (
    Call,
    CallConfirmed,
    CallRole,
    CallState,
    IncomingCall,
)
from sip.core_shared import UsageError
from sip.dialog import Dialog
from sip.errors import InvalidRequest, SipParseError
from sip.message import (
    Headers,
    Request,
    Response,
)
from sip.reliable import (
    ReliableSender,
    parse_rack,
    requires_100rel,
)
from sip.transaction import (
    Address,
    ServerTransaction,
    State,
    is_reliable,
)
from sip.uri import new_tag

log = logging.getLogger(__name__)


class InviteServer:
    """INVITE as UAS (mixed into ``UserAgentCore``)."""

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
