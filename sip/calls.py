"""What the SIP core tells the application (events) and the records it keeps per session and per request.

Split from ``sip.core`` so the core module holds the behaviour (RFC 3261 §8, §12-§15) and this one the
shapes: ``Call`` (one INVITE session, caller or callee), ``OutgoingRequest`` (one request followed across
its auth/422/glare retries), and the events ``UserAgentCore.events()`` returns.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sip.auth import DigestClient
from sip.dialog import Dialog
from sip.message import Headers, Request, Response
from sip.reliable import ReliableReceiver, ReliableSender
from sip.timers import TimerHandle
from sip.transaction import Address, ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from sip.core import UserAgentCore


# ---------------------------------------------------------------------------------------------- events


@dataclass(slots=True)
class IncomingCall:
    """A new INVITE (already answered 100): answer it with ``ringing``/``accept``/``reject``."""

    call: Call
    request: Request
    source: Address


@dataclass(slots=True)
class CallProgress:
    """A provisional response to our INVITE (after the 100)."""

    call: Call
    response: Response


@dataclass(slots=True)
class CallAnswered:
    """A 2xx to our INVITE; the ACK has been sent."""

    call: Call
    response: Response


@dataclass(slots=True)
class CallFailed:
    """Our INVITE ended without a dialog: a final non-2xx, or a synthesised 408 (timeout) or 503."""

    call: Call
    response: Response


@dataclass(slots=True)
class CallConfirmed:
    """The ACK for our 2xx to an INVITE arrived."""

    call: Call
    ack: Request


@dataclass(slots=True)
class ReinviteReceived:
    """A re-INVITE or UPDATE with a new offer: answer it with ``answer_reinvite``."""

    call: Call
    request: Request


@dataclass(slots=True)
class ReinviteResult:
    """The final response to our re-INVITE (after any glare retries); the ACK of a 2xx has been sent."""

    call: Call
    response: Response


@dataclass(slots=True)
class CallTerminated:
    """The session is over (BYE either way, CANCEL, rejection, session expiry, no ACK, 408/481)."""

    call: Call
    reason: str
    by_remote: bool


@dataclass(slots=True)
class RequestCompleted:
    """The final response (real or synthesised 408/503) to a request sent with ``request``/``bye``."""

    request: OutgoingRequest
    response: Response


Event = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallFailed
    | CallConfirmed
    | ReinviteReceived
    | ReinviteResult
    | CallTerminated
    | RequestCompleted
)


# ---------------------------------------------------------------------------------------------- calls


class CallRole(enum.Enum):
    UAC = "uac"
    UAS = "uas"


class CallState(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent, no final yet
    INCOMING = "incoming"  # UAS: INVITE received, no final yet
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class OutgoingRequest:
    """One request we send, followed across its auth/422/glare retries; the TU of its transactions."""

    _ids = itertools.count(1)

    def __init__(
        self,
        core: UserAgentCore,
        request: Request,
        dest: Address,
        *,
        auth: DigestClient | None = None,
        call: Call | None = None,
        purpose: str = "request",
    ) -> None:
        self.id = next(self._ids)
        self.core = core
        self.request = request
        self.dest = dest
        self.auth = auth
        self.call = call
        self.purpose = purpose  # request, invite, reinvite, refresh, bye, cancel, prack
        self.txn: ClientTransaction | None = None
        self.final: Response | None = None
        self.attempts = 0
        self.glare_retries = 0
        #: RFC 3263 targets not tried yet: the next one gets the request on a timeout or a 503 (§4.3).
        self.alternates: list[Address] = []
        self.user_data: Any = None

    @property
    def done(self) -> bool:
        return self.final is not None

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        self.core._on_response(self, txn, response, now)

    def on_timeout(self, txn: ClientTransaction | ServerTransaction, now: float) -> None:
        if txn is not self.txn:
            return
        if self.core._failing_dest is not None and txn.dest == self.core._failing_dest:
            status, reason = 503, self.core._failing_reason or "Service Unavailable (transport error)"
        else:
            status, reason = 408, "Request Timeout"
        resp = Response.for_request(self.request, status, reason)
        self.core._on_response(self, txn, resp, now, synthetic=True)

    def on_terminated(self, txn: ClientTransaction | ServerTransaction) -> None:
        pass

    def __repr__(self) -> str:
        return f"<OutgoingRequest {self.purpose} {self.request.method} #{self.id}>"


class Call:
    """One INVITE session, as caller (UAC) or callee (UAS); ``dialog`` once a To tag is known."""

    _ids = itertools.count(1)

    def __init__(self, role: CallRole, call_id: str, transport: str) -> None:
        self.id = next(self._ids)
        self.role = role
        self.call_id = call_id
        self.transport = transport
        self.state = CallState.CALLING if role is CallRole.UAC else CallState.INCOMING
        self.dialog: Dialog | None = None
        self.invite: Request | None = None  # the INVITE that created (or is creating) the session
        self.invite_out: OutgoingRequest | None = None
        self.server_txn: ServerTransaction | None = None
        self.remote: Address | None = None
        self.local_tag = ""
        self.local_sdp = b""
        self.local_content_type = "application/sdp"
        self.remote_sdp = b""
        self.remote_content_type: str | None = None
        self.cancel_requested = False
        self.cancel_sent = False
        self.invite_timer: TimerHandle | None = None  # our INVITE's overall limit (cancel, then give up)
        self.auth: DigestClient | None = None
        self.extra_headers: Headers | None = None
        # UAS: our 2xx retransmitted until the ACK (§13.3.1.4)
        self.ok: Response | None = None
        self.ok_cseq = 0
        self.ok_interval = 0.0
        self.ok_timer: TimerHandle | None = None
        self.ok_giveup: TimerHandle | None = None
        # UAC: the ACK re-sent for retransmitted 2xx (§13.2.2.4)
        self.acks: dict[int, Request] = {}
        # re-INVITE / UPDATE in progress (§14)
        self.reinvite_out: OutgoingRequest | None = None
        self.reinvite_in: ServerTransaction | None = None
        self.reinvite_in_request: Request | None = None
        self.glare_timer: TimerHandle | None = None
        # RFC 4028 session timer
        self.session_interval: int | None = None
        self.local_refresher = False
        self.session_timer: TimerHandle | None = None
        self.peer_allows: list[str] = []
        # RFC 3262: our reliable 18x (UAS, when the INVITE requires 100rel); the RSeqs we PRACKed (UAC)
        self.reliable_out: ReliableSender | None = None
        self.reliable_in: ReliableReceiver | None = None
        self.terminate_reason = ""
        self.user_data: Any = None

    @property
    def terminated(self) -> bool:
        return self.state is CallState.TERMINATED

    @property
    def remote_tag(self) -> str | None:
        return self.dialog.remote_tag if self.dialog else None

    def __repr__(self) -> str:
        return f"<Call #{self.id} {self.role.value} {self.state.value} {self.call_id}>"
