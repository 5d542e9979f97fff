"""What the parts of the SIP user-agent core (``sip.core`` and the classes it is made of) share: its
configuration, the methods and extensions it serves, and small header helpers."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sip.errors import SipError
from sip.message import (
    Request,
    Response,
)
from sip.timers import TimerValues
from sip.transaction import (
    Address,
)
from sip.uri import SipUri

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "PRACK")
#: SIP methods we know but do not serve (405, §21.4.6); any other method is not implemented (501, §21.5.2).
KNOWN_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO", "PUBLISH"})
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


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
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


def int_header(msg: Request | Response, name: str) -> int | None:
    value = msg.headers.get(name)
    if value is None:
        return None
    head = value.split(";", 1)[0].strip()
    return int(head) if head.isdigit() and head.isascii() and len(head) <= 9 else None


DIALOG_HEADERS = frozenset(
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


def not_implemented(method: str) -> bool:
    """A method neither served nor known as a SIP method: 501, not 405 (§21.5.2)."""
    return method not in ALLOWED_METHODS and method not in KNOWN_METHODS


def bad_request_reason(fault: str) -> str:
    """A 400 reason phrase naming ``fault``: printable ASCII only, short (§25.1 Reason-Phrase)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in fault)
    return f"Bad Request ({text[:100]})"


def loose_route_uri(uri: SipUri) -> SipUri:
    out = uri.copy()
    out.params["lr"] = None
    return out
