"""SIP dialogs (RFC 3261 §12): identity, route set, remote target, CSeq spaces; sans-I/O.

A ``Dialog`` is made by the UAC from a 1xx/2xx to its INVITE (§12.1.2) or by the UAS from the INVITE it
answers (§12.1.1). It builds in-dialog requests (§12.2.1.1: Request-URI from the remote target, Route from
the route set, loose or strict routing), the ACK for a 2xx (§13.2.2.4), checks the CSeq of requests it
receives (§12.2.2) and refreshes the remote target from Contact on target-refresh requests and their 2xx
(re-INVITE, UPDATE: §12.2, RFC 3311 §5.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sip.errors import InvalidRequest, SipParseError
from sip.message import Headers, Request, Response
from sip.uri import NameAddr, SipUri, Via

__all__ = ["TARGET_REFRESH_METHODS", "Dialog", "DialogState"]

#: Methods whose request and 2xx carry a Contact that replaces the remote target (§12.2, RFC 3311).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    """The state of one dialog; ``id`` is (Call-ID, local tag, remote tag) (§12)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    caller: bool = True  # we sent the initial INVITE, so we chose the Call-ID (RFC 3261 §14.1 glare timing)

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: the UAC's dialog from its INVITE and a 1xx/2xx with a To tag."""
        remote_tag = response.to.tag
        if not remote_tag:
            raise SipParseError("response without To tag creates no dialog")
        contact = response.contact
        if contact is None:
            raise SipParseError("dialog-creating response without Contact")
        local = request.from_
        remote = response.to
        local_tag = local.tag or ""
        local.tag = None
        remote.tag = None
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=local,
            remote_uri=remote,
            remote_target=contact.uri,
            route_set=list(reversed(response.record_route)),
            local_seq=request.cseq[0],
            remote_seq=None,
            secure=request.uri.scheme == "sips",
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            caller=True,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """§12.1.1: the UAS's dialog from the INVITE it answers with a To tag of ``local_tag``."""
        contact = request.contact
        if contact is None:
            raise InvalidRequest("Missing Contact Header")
        remote = request.from_
        local = request.to
        remote_tag = remote.tag or ""
        remote.tag = None
        local.tag = None
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=local,
            remote_uri=remote,
            remote_target=contact.uri,
            route_set=request.record_route,
            local_seq=0,
            remote_seq=request.cseq[0],
            secure=request.uri.scheme == "sips",
            state=DialogState.EARLY,
            caller=False,
        )

    def next_hop(self) -> SipUri:
        """Where an in-dialog request goes: the first route, else the remote target (§12.2.1.1, §8.1.2)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def create_request(
        self,
        method: str,
        via: Via,
        contact: NameAddr | None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Headers | None = None,
        cseq: int | None = None,
    ) -> Request:
        """§12.2.1.1: a request inside this dialog; increments the local CSeq unless ``cseq`` is given."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        local = self.local_uri.copy()
        local.tag = self.local_tag
        remote = self.remote_uri.copy()
        remote.tag = self.remote_tag
        h.add("From", str(local))
        h.add("To", str(remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        uri = self.remote_target.copy()
        routes = self.route_set
        if routes and not routes[0].uri.lr:
            # strict router (§12.2.1.1): it becomes the Request-URI, the remote target the last Route
            uri = routes[0].uri.copy()
            uri.params.pop("lr", None)
            for r in routes[1:]:
                h.add("Route", str(r))
            h.add("Route", f"<{self.remote_target}>")
        else:
            for r in routes:
                h.add("Route", str(r))
        if contact is not None and method not in ("ACK", "BYE", "CANCEL"):
            h.add("Contact", str(contact))
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        if body:
            h.set("Content-Type", content_type or "application/sdp")
        return Request(method=method, uri=uri, headers=h, body=body)

    def create_ack(
        self, invite_cseq: int, via: Via, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """§13.2.2.4: the ACK for a 2xx, a request of the dialog with the INVITE's CSeq number."""
        return self.create_request("ACK", via, None, body=body, content_type=content_type, cseq=invite_cseq)

    def check_request(self, request: Request) -> None:
        """§12.2.2: refuse a request whose CSeq is lower than the last one (500), then record it."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and number < self.remote_seq:
            raise InvalidRequest("CSeq Out Of Order", 500)
        self.remote_seq = number

    def refresh_target(self, message: Request | Response) -> None:
        """Replace the remote target with the Contact of a target-refresh request or its 2xx (§12.2)."""
        try:
            contact = message.contact
        except SipParseError:
            return
        if contact is not None:
            self.remote_target = contact.uri

    def confirm(self, response: Response | None = None) -> None:
        """Early → confirmed on a 2xx (§12.1); a UAC also takes the final route set and target from it."""
        if response is not None and self.caller:
            self.route_set = list(reversed(response.record_route))
            self.refresh_target(response)
        self.state = DialogState.CONFIRMED
