"""Changing and keeping an established INVITE session (RFC 3261 §14; RFC 3311; RFC 4028): re-INVITE and
UPDATE both ways with glare handling, and session timers as refresher and refreshee. A part of
``sip.core.UserAgentCore``, which inherits it."""

from __future__ import annotations

import logging

from sip.calls import (
    Call,
    CallRole,
    CallState,
    OutgoingRequest,
    ReinviteReceived,
    ReinviteResult,
)
from sip.core_shared import (
    ALLOWED_METHODS,
    DIALOG_HEADERS,
    MAX_GLARE_RETRIES,
    UsageError,
    int_header,
    parse_session_expires,
)
from sip.message import (
    Headers,
    Request,
    Response,
)
from sip.transaction import (
    ServerTransaction,
)

log = logging.getLogger(__name__)


class SessionRefresh:
    """re-INVITE/UPDATE and session timers (mixed into ``UserAgentCore``)."""

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
        h = Headers([(n, v) for n, v in old.headers if n.lower() not in DIALOG_HEADERS])
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
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is None or not self.config.session_expires:
            if call.role is CallRole.UAS and req is call.invite:
                call.session_interval = None
            return None
        interval, refresher = se
        if interval < self.config.min_se:
            return Headers([("Min-SE", str(self.config.min_se))])
        peer_min = int_header(req, "Min-SE") or 0
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
        se = parse_session_expires(resp.headers.get("Session-Expires"))
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
