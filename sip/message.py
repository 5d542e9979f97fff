"""SIP messages (RFC 3261 §7): requests, responses, headers, parser, serializer and TCP stream framing.

Sans-I/O: bytes in, ``Request``/``Response`` out and back. Headers are kept as text (so a message re-sent
or proxied keeps what the peer wrote) and parsed on access by typed properties (``msg.cseq``,
``msg.vias``, ``msg.from_``...). A property raises ``SipParseError`` when its header is missing or
malformed; ``validate_request`` runs them all once so that a UAS can answer 400 with a precise reason
(RFC 3261 §8.2) and ``validate_response`` lets a UAC drop a broken response (§18.1.2).

Framing: ``parse_message`` takes one UDP datagram (Content-Length optional, §18.3); ``StreamFramer`` cuts a
TCP/TLS byte stream into messages (Content-Length mandatory) and reports RFC 5626 CRLF keep-alives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sip.errors import InvalidRequest, SipParseError
from sip.uri import URI_SCHEMES, NameAddr, SipUri, Via, is_token, split_header_values

__all__ = [
    "COMPACT_FORMS",
    "CSEQ_MISMATCH",
    "PING",
    "PONG",
    "REASON_PHRASES",
    "Headers",
    "KeepAlivePing",
    "KeepAlivePong",
    "Message",
    "Request",
    "Response",
    "StreamFramer",
    "UnparsedRequest",
    "parse_message",
    "salvage_request",
    "validate_request",
    "validate_response",
]

log = logging.getLogger(__name__)

SIP_VERSION = "SIP/2.0"

#: RFC 5626 §3.5.1: a client's keep-alive ping is a double CRLF; the server's pong is a single CRLF.
PING = b"\r\n\r\n"
PONG = b"\r\n"

#: Compact header forms: RFC 3261 §7.3.3 and §20, RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 3841 (a, j,
#: d), RFC 6665 (o, u), RFC 8224 (y).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]

# lower-cased name or compact letter -> canonical long name
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN_NAMES}
_CANONICAL.update(COMPACT_FORMS)

#: Default reason phrases (RFC 3261 §21 and the extensions a UA meets).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31


def canonical_name(name: str) -> str:
    """The long, canonically spelled name of a header (``i`` and ``call-id`` give ``Call-ID``).

    Unknown names are returned as written: header names are case-insensitive (§7.3.1) and are compared
    that way, but a name we do not know is re-sent as the peer spelled it.
    """
    return _CANONICAL.get(name.lower(), name)


#: name as written -> (lower-cased canonical name: the key entries are compared by, canonical name).
#: Every header lookup and every parsed field line needs it; a burst of calls did it 40 times per message.
_NAME_KEYS: dict[str, tuple[str, str]] = {}
_NAME_KEYS_SIZE = 2048


def _name_key(name: str) -> tuple[str, str]:
    known = _NAME_KEYS.get(name)
    if known is None:
        canon = _CANONICAL.get(name.lower(), name)
        known = (canon.lower(), canon)
        if len(_NAME_KEYS) >= _NAME_KEYS_SIZE:  # names from the network: bounded
            _NAME_KEYS.clear()
        _NAME_KEYS[name] = known
    return known


class Headers:
    """Ordered multi-dict of header fields with case-insensitive names and compact forms expanded.

    Each entry is one header field line as received (``Via: a, b`` is one entry); ``values()`` splits the
    comma-separated list headers into their elements (§7.3.1).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (key, name, value); key = canonical name lower-cased
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _entry(name: str, value: str) -> tuple[str, str, str]:
        if not is_token(name):
            raise ValueError(f"bad header name {name!r}")
        value = str(value)
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} value contains CR or LF")
        key, canon = _name_key(name)
        return key, canon, value.strip(" \t")

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str]]) -> Headers:
        h = cls()
        out = h._items
        for name, value in items:
            key, canon = _name_key(name)
            out.append((key, canon, value))
        return h

    def add(self, name: str, value: str) -> None:
        """Append a header field line (after any existing ones)."""
        self._items.append(self._entry(name, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a field above the existing ones of that name (a new top Via, §8.1.1.7), else at the top."""
        entry = self._entry(name, value)
        for i, item in enumerate(self._items):
            if item[0] == entry[0]:
                self._items.insert(i, entry)
                return
        self._items.insert(0, entry)

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, at the place of the first (or at the end)."""
        entry = self._entry(name, value)
        for i, item in enumerate(self._items):
            if item[0] == entry[0]:
                self._items[i] = entry
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != entry[0]]
                return
        self._items.append(entry)

    def remove(self, name: str) -> int:
        """Remove every field of that name; return how many were removed."""
        key = _name_key(name)[0]
        before = len(self._items)
        self._items = [it for it in self._items if it[0] != key]
        return before - len(self._items)

    def remove_first(self, name: str) -> str | None:
        """Remove the first *element* of a list header (the top Via, §18.1.2) and return it."""
        key = _name_key(name)[0]
        for i, item in enumerate(self._items):
            if item[0] == key:
                parts = split_header_values(item[2])
                if len(parts) <= 1:
                    del self._items[i]
                else:
                    self._items[i] = (item[0], item[1], ", ".join(parts[1:]))
                return parts[0] if parts else None
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field of that name."""
        key = _name_key(name)[0]
        for item in self._items:
            if item[0] == key:
                return item[2]
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every field line of that name, unsplit (for WWW-Authenticate and the like)."""
        key = _name_key(name)[0]
        return [it[2] for it in self._items if it[0] == key]

    def values(self, name: str) -> list[str]:
        """Every element of a comma-separated list header, across all its lines, in order (§7.3.1)."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(split_header_values(value))
        return out

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _name_key(name)[0]
        return any(item[0] == key for item in self._items)

    def count(self, name: str) -> int:
        """How many field lines of that name there are (a request may carry some only once, §7.3.1)."""
        key = _name_key(name)[0]
        return sum(1 for item in self._items if item[0] == key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((it[1], it[2]) for it in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


def _parse_int_header(msg: Message, name: str, limit: int) -> int | None:
    value = msg.headers.get(name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or len(value) > 10 or int(value) > limit:
        raise SipParseError(f"bad {name}: {value[:30]!r}")
    return int(value)


class Message:
    """Typed views of the headers common to requests and responses (RFC 3261 §20).

    Mandatory headers (Call-ID, CSeq, From, To, Via) raise ``SipParseError`` when missing or malformed;
    optional ones return None or an empty list when absent.
    """

    __slots__ = ()
    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        value = self._required("Call-ID")
        if not value or any(c in value for c in " \t"):
            raise SipParseError(f"bad Call-ID {value[:60]!r}")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` (§20.16)."""
        value = self._required("CSeq")
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii() or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {value[:60]!r}")
        number = int(parts[0])
        if number > _MAX_CSEQ or not is_token(parts[1]):
            raise SipParseError(f"bad CSeq {value[:60]!r}")
        return number, parts[1]

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self._required("From"))

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self._required("To"))

    def _check_vias(self) -> None:
        """What ``vias`` raises, without building them (validation)."""
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via header")
        for v in values:
            Via.check(v)

    @property
    def vias(self) -> list[Via]:
        """Every Via element, top first, comma-separated ones split (§20.42)."""
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via header")
        return [Via.parse(v) for v in values]

    @property
    def via(self) -> Via:
        """The top Via."""
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via header")
        return Via.parse(values[0])

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact element; empty for none and for the wildcard ``*`` (see ``contact_star``)."""
        values = self.headers.values("Contact")
        if values == ["*"]:
            return []
        return [NameAddr.parse(v) for v in values]

    @property
    def contact(self) -> NameAddr | None:
        contacts = self.contacts
        return contacts[0] if contacts else None

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (§10.2.2, remove all bindings)."""
        return self.headers.values("Contact") == ["*"]

    @property
    def route(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.values("Route")]

    @property
    def record_route(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.values("Record-Route")]

    @property
    def content_length(self) -> int | None:
        return _parse_int_header(self, "Content-Length", 2**31)

    @property
    def content_type(self) -> str | None:
        """The Content-Type value as written, parameters included."""
        return self.headers.get("Content-Type")

    @property
    def media_type(self) -> str | None:
        """The Content-Type without parameters, lower-cased (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip(" \t").lower() if value is not None else None

    @property
    def max_forwards(self) -> int | None:
        return _parse_int_header(self, "Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        return _parse_int_header(self, "Expires", 2**32 - 1)

    @property
    def require(self) -> list[str]:
        return self.headers.values("Require")

    @property
    def proxy_require(self) -> list[str]:
        return self.headers.values("Proxy-Require")

    @property
    def supported(self) -> list[str]:
        return self.headers.values("Supported")

    @property
    def unsupported(self) -> list[str]:
        return self.headers.values("Unsupported")

    @property
    def allow(self) -> list[str]:
        return [m.upper() for m in self.headers.values("Allow")]

    def _serialize(self, start_line: str) -> bytes:
        """Start line, headers, a Content-Length that matches the body (§20.14), blank line, body."""
        lines = [start_line]
        length_written = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if length_written:
                    continue
                value = str(len(self.body))
                length_written = True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8") + self.body


@dataclass(slots=True, eq=True)
class Request(Message):
    """A SIP request (§7.1). ``bytes(req)`` serializes it with a Content-Length matching ``body``."""

    method: str
    uri: SipUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> Request:
        msg = parse_message(data)
        if not isinstance(msg, Request):
            raise SipParseError("expected a request, got a response")
        return msg

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def copy(self) -> Request:
        """A copy whose headers and URI can be changed without touching this request (a retry with auth)."""
        return Request(self.method, self.uri.copy(), self.headers.copy(), self.body, self.version)

    def __bytes__(self) -> bytes:
        return self._serialize(self.start_line)


@dataclass(slots=True, eq=True)
class Response(Message):
    """A SIP response (§7.2). An empty ``reason`` is replaced by the standard phrase of ``status``."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = REASON_PHRASES.get(self.status, "")

    @classmethod
    def parse(cls, data: bytes) -> Response:
        msg = parse_message(data)
        if not isinstance(msg, Response):
            raise SipParseError("expected a response, got a request")
        return msg

    @classmethod
    def for_request(
        cls,
        req: Request | UnparsedRequest,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """A response to ``req`` per RFC 3261 §8.2.6: Via (all, in order), From, To, Call-ID, CSeq copied.

        ``to_tag`` is added to To unless To already has a tag (an in-dialog request) or this is a 100
        (§8.2.6.2). A 100 also copies Timestamp (§8.2.6.1). Headers missing from ``req`` are skipped and
        only the first of a repeated From, To, Call-ID or CSeq is copied, so this also answers a request
        that failed ``validate_request`` or ``parse_message`` with a well-formed response.
        """
        h = Headers()
        items = h._items
        seen: set[str] = set()
        for key, name, value in req.headers._items:
            if key in _SINGLE_COPIED:
                if key in seen:
                    continue
                seen.add(key)
            if key in ("via", "from", "call-id", "cseq") or (key == "timestamp" and status == 100):
                items.append((key, name, value))
            elif key == "to":
                if to_tag is not None and status != 100 and not _has_tag(value):
                    value = f"{value};tag={to_tag}"
                items.append((key, name, value))
        return cls(status=status, reason=reason or "", headers=h)

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        """A copy whose headers can be changed without touching this response."""
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    def __bytes__(self) -> bytes:
        return self._serialize(self.start_line)


_SINGLE_COPIED = frozenset({"from", "to", "call-id", "cseq", "timestamp"})


@dataclass(slots=True)
class UnparsedRequest:
    """What ``salvage_request`` could read of a request that ``parse_message`` refused.

    Enough to answer it 400 statelessly (§8.2.6): the method (an ACK is never answered), the header
    fields that could be split into name and value, and ``error``, why the request was refused.
    """

    method: str
    headers: Headers
    error: str


def _has_tag(to_value: str) -> bool:
    try:
        return NameAddr.parse(to_value).tag is not None
    except SipParseError:
        return True  # unparseable: leave it as it is


# ---------------------------------------------------------------------------------------------- parsing


def _find_head_end(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """Index of the blank line ending the header section and its length; (-1, 0) when not there yet.

    CRLF is the line end (§7); a bare LF is accepted too, as most stacks do.
    """
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return crlf, 4 if crlf >= 0 else 0


def _skip_leading_crlf(data: bytes, start: int = 0) -> int:
    """§7.5: CRLFs before the start line are ignored."""
    n = len(data)
    while start < n and data[start] in (13, 10):
        start += 1
    return start


def _parse_head(head: bytes) -> Request | Response:
    """Parse a start line and header fields (no blank line, no body)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # old phones send Latin-1 display names; keep the message
    if "\x00" in text and not _nuls_are_quoted_pairs(text):
        raise SipParseError("NUL byte in header section")
    lines = text.split("\n")
    start_line = lines[0].removesuffix("\r")
    items: list[tuple[str, list[str]]] = []  # name, value pieces (several when folded)
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if "\r" in line:
            raise SipParseError("bare CR in header section")
        if line[:1] in (" ", "\t"):
            if not items:
                raise SipParseError("continuation line before the first header")
            items[-1][1].append(line.strip(" \t"))  # §7.3.1: folding is LWS, it reads as one space
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line without name and colon: {line[:60]!r}")
        name = line[:colon].rstrip(" \t")
        if not is_token(name):
            raise SipParseError(f"bad header name {name[:40]!r}")
        items.append((name, [line[colon + 1 :].strip(" \t")]))
    headers = Headers._from_parsed(
        [(name, parts[0] if len(parts) == 1 else " ".join(p for p in parts if p)) for name, parts in items]
    )
    msg = _parse_start_line(start_line, headers)
    lengths = {v.strip() for v in headers.get_all("Content-Length")}
    if len(lengths) > 1:
        raise SipParseError("conflicting Content-Length headers")
    msg.content_length  # noqa: B018 -- validates the value now rather than on first use
    return msg


def _nuls_are_quoted_pairs(text: str) -> bool:
    """True when every NUL is the escaped octet of a quoted-pair (``\\`` then NUL, RFC 3261 §25.1).

    A quoted-pair may escape any octet but CR and LF, so RFC 4475 §3.1.1.2 puts one in a display name.
    """
    i = text.find("\x00")
    while i >= 0:
        j = i  # count the backslashes just before the NUL (runs before two NULs never overlap: linear)
        while j > 0 and text[j - 1] == "\\":
            j -= 1
        if (i - j) % 2 == 0:
            return False
        i = text.find("\x00", i + 1)
    return True


def _request_line_fault(line: str) -> str:
    """Say what is wrong with a request line that is not ``method SP Request-URI SP SIP-Version`` (§7.1)."""
    if line != line.rstrip(" \t"):
        return "bad request line: whitespace after the SIP version"
    if line != line.lstrip(" \t") or "  " in line or "\t" in line:
        return "bad request line: more than one space between its elements"
    if len(line.split(" ")) > 3:
        return "bad request line: whitespace inside the Request-URI"
    return "bad request line: not 'method Request-URI SIP-version'"


def _parse_start_line(line: str, headers: Headers) -> Request | Response:
    if not line:
        raise SipParseError("empty start line")
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not _valid_version(version):
            raise SipParseError(f"bad SIP version in status line {line[:60]!r}")
        if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status code in {line[:60]!r}")
        reason = reason.strip(" \t")
        return Response(status=int(code), reason=reason, headers=headers, version=version.upper())
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(_request_line_fault(line))
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method {method[:40]!r}")
    if not _valid_version(version):
        raise SipParseError(f"bad SIP version in request line {line[:80]!r}")
    try:
        uri = SipUri.parse(uri_text)
    except SipParseError as exc:
        raise SipParseError(f"bad Request-URI: {exc}") from exc
    return Request(method=method, uri=uri, headers=headers, version=version.upper())


def _valid_version(version: str) -> bool:
    if version[:4].upper() != "SIP/":
        return False
    major, dot, minor = version[4:].partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()


def parse_message(data: bytes) -> Request | Response:
    """Parse one message from a UDP datagram (RFC 3261 §18.3).

    Without Content-Length the body is the rest of the datagram; a Content-Length larger than what arrived
    is an error; a smaller one truncates the body (the excess is dropped).
    """
    data = bytes(data)
    start = _skip_leading_crlf(data)
    end, sep = _find_head_end(data, start)
    if end < 0:
        if data[start:].strip():
            raise SipParseError("no blank line after the header section")
        raise SipParseError("empty message")
    msg = _parse_head(data[start:end])
    body = data[end + sep :]
    length = msg.content_length
    if length is not None:
        if length > len(body):
            raise SipParseError(f"Content-Length {length} exceeds the {len(body)} body bytes received")
        body = body[:length]
    msg.body = body
    return msg


def salvage_request(data: bytes, error: str) -> UnparsedRequest | None:
    """Read what can be read of a request ``parse_message`` refused with ``error``, to answer it 400.

    RFC 3261 §8.2 and RFC 4475 §3.1.2 ask for 400 to a malformed request when its request line and top
    Via can still be read (a Content-Length larger than the body, a negative one, a bad Request-URI, extra
    spaces in the request line, no blank line after the header section...). Returns None for anything
    else: a response, a first line that is no request line (no method token, no SIP version at its end),
    or no readable top Via; those are dropped. Header lines that cannot be split into a name and a value,
    or that hold a NUL or a bare CR, are left out, so the answer built from the rest is well formed.
    """
    data = bytes(data)
    start = _skip_leading_crlf(data)
    end, _sep = _find_head_end(data, start)
    head = data[start:] if end < 0 else data[start:end]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.split("\n")
    first = lines[0].removesuffix("\r")
    method = first.split(" ", 1)[0]
    words = first.split()
    if (
        not is_token(method)
        or method[:4].upper() == "SIP/"
        or len(words) < 2
        or not _valid_version(words[-1])
        or "\x00" in first
    ):
        return None
    items: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if "\x00" in line or "\r" in line:
            items.append(("", ""))  # an unusable line: also ends a folded header it would continue
            continue
        if line[:1] in (" ", "\t"):
            if items and items[-1][0]:
                name, value = items[-1]
                items[-1] = (name, (value + " " + line.strip(" \t")).strip(" "))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        items.append((name, value.strip(" \t")) if colon and is_token(name) else ("", ""))
    headers = Headers._from_parsed([item for item in items if item[0]])
    try:
        vias = headers.values("Via")
        if not vias:
            return None
        Via.parse(vias[0])
    except SipParseError:
        return None
    return UnparsedRequest(method=method, headers=headers, error=error)


# ---------------------------------------------------------------------------------------------- streams


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """The peer sent a double-CRLF keep-alive (RFC 5626 §4.4.1): send ``PONG`` back on this connection."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """The peer sent a single CRLF, the answer to our ping (RFC 5626 §4.4.1)."""


StreamEvent = Request | Response | KeepAlivePing | KeepAlivePong


class StreamFramer:
    """Cut a stream transport's bytes (TCP, TLS) into SIP messages (RFC 3261 §18.3).

    Content-Length is mandatory on streams; its absence, an oversized header section or body, or any
    malformed message raises ``SipParseError``. A stream cannot be resynchronised after that, so the framer
    stays failed (every later ``feed`` raises) and the connection should be closed; messages completed
    earlier in the failing ``feed`` call are lost with it.
    """

    def __init__(self, max_header_bytes: int = 65536, max_body_bytes: int = 1 << 20) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan_from = 0  # where to resume the search for the end of the header section
        self._pending: Request | Response | None = None  # head parsed, waiting for body bytes
        self._pending_length = 0
        self._lone_crlf = False  # the last feed ended on a single CRLF, maybe half a ping
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add received bytes; return the messages and keep-alives they complete, in order."""
        if self._failed is not None:
            raise SipParseError(f"stream already failed: {self._failed}")
        try:
            return self._feed(data)
        except SipParseError as exc:
            self._failed = str(exc)
            self._buf.clear()
            raise

    def _feed(self, data: bytes) -> list[StreamEvent]:
        buf = self._buf
        buf += data
        out: list[StreamEvent] = []
        while True:
            if self._pending is not None:
                if len(buf) < self._pending_length:
                    break
                msg = self._pending
                msg.body = bytes(buf[: self._pending_length])
                del buf[: self._pending_length]
                self._pending = None
                out.append(msg)
                continue
            if not buf:
                break
            if buf[0] in (13, 10):  # CRLF between messages: keep-alive (RFC 5626) or slack (§7.5)
                if buf.startswith(PING):
                    del buf[:4]
                    self._lone_crlf = False
                    out.append(KeepAlivePing())
                    continue
                if buf.startswith(PONG) and (len(buf) == 2 or buf[2] not in (13, 10)):
                    del buf[:2]
                    if self._lone_crlf and not out:
                        out.append(KeepAlivePing())  # the second half of a ping split across reads
                        self._lone_crlf = False
                    else:
                        out.append(KeepAlivePong())
                        self._lone_crlf = not buf
                    continue
                if buf == b"\r" or buf == b"\r\n\r":
                    break  # wait for the rest of the line end
                del buf[:1]  # stray CR or LF
                continue
            self._lone_crlf = False
            end, sep = _find_head_end(buf, self._scan_from)
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    raise SipParseError(f"header section larger than {self.max_header_bytes} bytes")
                self._scan_from = max(0, len(buf) - 3)
                break
            self._scan_from = 0
            if end > self.max_header_bytes:
                raise SipParseError(f"header section larger than {self.max_header_bytes} bytes")
            msg = _parse_head(bytes(buf[:end]))
            del buf[: end + sep]
            length = msg.content_length
            if length is None:
                raise SipParseError("Content-Length missing on a stream transport (RFC 3261 §18.3)")
            if length > self.max_body_bytes:
                raise SipParseError(f"body of {length} bytes exceeds the limit of {self.max_body_bytes}")
            self._pending = msg
            self._pending_length = length
        return out


# ---------------------------------------------------------------------------------------------- validation


CSEQ_MISMATCH = "CSeq Method Does Not Match Request"

#: Headers whose grammar allows one value: a request with two of them is refused (§7.3.1, §20).
_SINGLE_VALUED = frozenset({"From", "To", "Call-ID", "CSeq", "Max-Forwards"})


#: What validate_request checks, in order: (header, whether it must be there, the parse that must succeed).
_REQUEST_CHECKS: tuple[tuple[str, bool, Callable[[Request], object]], ...] = (
    ("Via", True, lambda r: r._check_vias()),
    ("From", True, lambda r: NameAddr.check(r._required("From"))),
    ("To", True, lambda r: NameAddr.check(r._required("To"))),
    ("Call-ID", True, lambda r: r.call_id),
    ("CSeq", True, lambda r: r.cseq),
    ("Max-Forwards", False, lambda r: r.max_forwards),
    ("Content-Length", False, lambda r: r.content_length),
)


def validate_request(req: Request) -> None:
    """Check what a UAS needs before processing a request (RFC 3261 §8.2); raise ``InvalidRequest``.

    Mandatory headers present, once, and well formed (Via, From, To, Call-ID, CSeq), CSeq method equal to
    the request method, Max-Forwards 0-255 and once when present, Content-Type present with a body
    (§7.4.1), SIP/2.0 (else 505), a sip/sips/tel Request-URI (else 416) without header fields (§19.1.1,
    RFC 4475 §3.1.2.11). The ``reason`` is meant as the reason phrase.
    """
    if req.version != SIP_VERSION:
        raise InvalidRequest("Version Not Supported", 505)
    if req.uri.scheme not in URI_SCHEMES:
        raise InvalidRequest("Unsupported URI Scheme", 416)
    if req.uri.headers:
        raise InvalidRequest("Header Fields Not Allowed In Request-URI")
    headers = req.headers
    for name, mandatory, check in _REQUEST_CHECKS:
        lines = headers.count(name)
        if not lines and mandatory:
            raise InvalidRequest(f"Missing {name} Header")
        if lines > 1 and name in _SINGLE_VALUED:
            raise InvalidRequest(f"Multiple {name} Headers")  # §7.3.1: one field line only (RFC 4475 multi01)
        try:
            check(req)
        except SipParseError as exc:
            log.debug("invalid %s in %s request: %s", name, req.method, exc)
            raise InvalidRequest(f"Malformed {name} Header") from exc
    if req.cseq[1] != req.method:
        raise InvalidRequest(CSEQ_MISMATCH)
    if req.body and "Content-Type" not in req.headers:
        raise InvalidRequest("Missing Content-Type Header")


def validate_response(resp: Response) -> None:
    """Check the headers a UAC matches a response with (§8.1.3, §18.1.2); raise ``SipParseError``."""
    resp._check_vias()
    NameAddr.check(resp._required("From"))
    NameAddr.check(resp._required("To"))
    resp.call_id  # noqa: B018
    resp.cseq  # noqa: B018
    if resp.version != SIP_VERSION:
        raise SipParseError(f"unsupported version {resp.version[:20]!r}")
