"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for audio (G.711) and image (T.38 over UDPTL) lines.

Sans-I/O: text in, ``SessionDescription`` out and back (``str()``/``bytes()`` write CRLF lines in the
canonical order of RFC 4566 §5). The offer/answer functions take and return ``SessionDescription`` objects
and say which line carries what; they never open a socket. The T.38 attributes of an ``m=image`` line are
carried as ``name:value`` strings and interpreted by ``t38/sdp.py`` (wired up by ``vfax/``), not here.

Reading the peer. A malformed line raises ``SdpError`` naming the line; where real peers are known to be
sloppy the reader is lenient (RFC 4566 §5 asks parsers to be): LF line ends, blank lines, trailing
whitespace, session lines in any order before the first ``m=``, a missing ``s=`` or ``t=``, an ``a=`` line
with no name (dropped), an unknown type letter (dropped, with a debug log; RFC 4566 §5 would ignore the
whole description, which would fail a fax for one odd line). Known but unused lines (``i= u= e= p= r= z=
k=``) are kept and written back. Bytes that are not UTF-8 survive a round trip (surrogate escapes).

Offer/answer policy (RFC 3264 §5-§8):

* An answer has the offer's m-lines in the offer's order (§6); a line we do not take gets port 0, keeps the
  offer's media and proto and lists the offer's formats (§6: at least one format even when rejected).
* Audio: the first active ``RTP/AVP`` audio line; the codec is the first of *our* ``codecs`` that the offer
  has (PCMU = 0 and PCMA = 8 are known without ``a=rtpmap``, RFC 3551 §6), with the offer's payload type
  (§6.1). The answer lists that one codec only: ``telephone-event`` (RFC 4733) and every other format are
  dropped, so the peer never sends DTMF events or switches codec mid-fax.
* Image: the first active ``udptl`` (any case) line with format ``t38`` (RFC 3362, T.38 Annex D).
* A T.38 switch comes in three shapes (DESIGN.md, "Facts from real peers"): ``m=image`` in the audio line's
  place, ``m=audio 0`` plus ``m=image``, active audio plus ``m=image``. All three are answered line by line.
  When both an audio and an image line could be taken, ``prefer`` picks one and the other gets port 0:
  ``"image"`` (default) is what FreeSWITCH's T.38 answer does (``m=image`` plus ``m=audio 0``), and it
  leaves exactly one media stream for the fax engine.
* Nothing taken → ``OfferRejected`` (answer 488 Not Acceptable Here, RFC 3261 §21.4.26).
* Our own offer lists audio first and image second when both are wanted (``image_first=True`` swaps them):
  a peer that looks only at the first line still sees an ordinary call; RFC 3264 allows either order.

The ``o=`` line (RFC 3264 §8) is owned by ``LocalSession``: one per dialog, same session id throughout, the
version one higher for each SDP whose content changed and unchanged for a repeat (a session-timer refresh,
RFC 4028, re-sends the same SDP and must not look like a media change).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from sip.errors import SipError

__all__ = [
    "DIRECTIONS",
    "FAX_CODECS",
    "STATIC_PAYLOAD_TYPES",
    "Answer",
    "ChosenAudio",
    "ChosenImage",
    "Connection",
    "LocalSession",
    "MediaDescription",
    "Negotiation",
    "OfferRejected",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "addrtype_of",
    "answer_offer",
    "build_offer",
    "parse_sdp",
    "process_answer",
]

log = logging.getLogger(__name__)

#: RFC 3551 §6 table 4: static payload types a peer may list without ``a=rtpmap``. Only PCMU and PCMA are
#: ever chosen; the others are named so logs and ``codec_of`` say what a peer offered.
STATIC_PAYLOAD_TYPES: Final[dict[str, tuple[str, int, int]]] = {
    "0": ("PCMU", 8000, 1),
    "3": ("GSM", 8000, 1),
    "4": ("G723", 8000, 1),
    "8": ("PCMA", 8000, 1),
    "9": ("G722", 8000, 1),
    "13": ("CN", 8000, 1),
    "18": ("G729", 8000, 1),
}

#: Codecs this layer can choose for fax passthrough (G.711, ITU-T G.711; RFC 3551 §4.5.14).
FAX_CODECS: Final[frozenset[str]] = frozenset({"PCMU", "PCMA"})

DIRECTIONS: Final[frozenset[str]] = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
#: RFC 3264 §6.1: the direction an answer gives to each offered direction.
_ANSWER_DIRECTION: Final[dict[str, str]] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}

# RFC 4566 §5: session-level type letters in their required order, and media-level ones.
_SESSION_ORDER: Final[str] = "vosiuepcbtrzka"
_MEDIA_ORDER: Final[str] = "micbka"
# Type letters kept verbatim (not interpreted) at each level.
_SESSION_EXTRA: Final[str] = "iueprzk"
_MEDIA_EXTRA: Final[str] = "ik"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS_RE = re.compile(r"[0-9]+")


class SdpError(SipError, ValueError):
    """The peer's SDP is malformed, or an answer does not fit our offer (RFC 3264 §6/§7).

    The message names the line (``"line 4: m= port '70000' out of range 0-65535"``) so a drop or a 488 can
    be logged usefully.
    """


class OfferRejected(SipError):
    """An offer has no line we can take (RFC 3264 §6): answer it with ``status`` (488) and ``reason``."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _digits(text: str, what: str) -> int:
    if not _DIGITS_RE.fullmatch(text):
        raise SdpError(f"{what} {text!r} is not a number")
    return int(text)


def _is_hostname(host: str) -> bool:
    """An RFC 1035 name with at least one letter (so ``999.1.1.1`` is not taken for a name)."""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return (
        0 < len(host) <= 253
        and all(_LABEL_RE.fullmatch(label) for label in labels)
        and any(c.isalpha() for c in host)
    )


def _check_address(addrtype: str, address: str, what: str) -> None:
    """RFC 4566 §5.7: an IP4/IP6 literal or a fully qualified domain name; a multicast suffix is allowed."""
    if _good_address(addrtype, address):
        return
    raise SdpError(f"{what}: bad {addrtype} address {address!r}")


@functools.lru_cache(maxsize=1024)
def _good_address(addrtype: str, address: str) -> bool:
    """The check of ``_check_address``, remembered: every offer and answer of a call carries the same
    few addresses (o= and c= lines), and ``ipaddress`` was 2 % of the CPU of a burst of call set-ups."""
    host = address.split("/", 1)[0]
    if addrtype.upper() == "IP4":
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            pass
    elif addrtype.upper() == "IP6":
        try:
            ipaddress.IPv6Address(host)
            return True
        except ValueError:
            pass
    else:
        # An address type we do not know (RFC 4566 allows extensions): kept, not checked.
        if address and not any(c.isspace() for c in address):
            return True
    return _is_hostname(host)


@functools.lru_cache(maxsize=1024)
def addrtype_of(address: str) -> str:
    """``"IP6"`` for an IPv6 literal (with or without brackets), else ``"IP4"`` (RFC 4566 §5.7)."""
    host = address.strip("[]")
    try:
        return "IP6" if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) else "IP4"
    except ValueError:
        return "IP4"


@dataclass(frozen=True)
class Origin:
    """The ``o=`` line (RFC 4566 §5.2): ``session_id`` is opaque, ``session_version`` counts (RFC 3264 §8)."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(f"o= needs 6 fields, got {len(parts)}: {value!r}")
        username, sess_id, version, nettype, addrtype, address = parts
        return cls(username, sess_id, _digits(version, "o= sess-version"), nettype, addrtype, address)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """A ``c=`` line (RFC 4566 §5.7). ``address`` keeps a multicast ``/ttl/count`` suffix as written."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= needs 3 fields, got {len(parts)}: {value!r}")
        nettype, addrtype, address = parts
        _check_address(addrtype, address, "c=")
        return cls(address=address, addrtype=addrtype, nettype=nettype)

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """Our own ``c=`` for a local address (IPv4 or IPv6 literal, brackets dropped)."""
        host = address.strip("[]")
        addrtype = addrtype_of(host)
        _check_address(addrtype, host, "local address")
        return cls(address=host, addrtype=addrtype)

    @property
    def host(self) -> str:
        """The address without a multicast suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold (``c=IN IP4 0.0.0.0``), still sent by older PBXs and ATAs (RFC 3264 §8.4)."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class RtpMap:
    """An ``a=rtpmap`` value (RFC 4566 §6): ``<encoding>/<clock rate>[/<channels>]``."""

    encoding: str
    clock_rate: int
    channels: int = 1


Attribute = tuple[str, str | None]


def _attribute_text(name: str, value: str | None) -> str:
    return name if value is None else f"{name}:{value}"


def _split_attribute(text: str) -> Attribute:
    name, sep, value = text.partition(":")
    return (name, value if sep else None)


@dataclass
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14) with its ``c=``, ``b=`` and ``a=`` lines, attributes in order."""

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    #: ``i=`` and ``k=`` lines, kept verbatim as (type letter, value).
    extra: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        """``m=<media> <port>[/<count>] <proto> <fmt> ...`` (RFC 4566 §5.14).

        A line without formats is accepted (peers send ``m=image 0 udptl`` when rejecting); an answer we
        write always has one (RFC 3264 §6).
        """
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"m= needs media, port and proto: {value!r}")
        media, port_text, proto, *formats = parts
        if not _TOKEN_RE.fullmatch(media):
            raise SdpError(f"m= media {media!r} is not a token")
        port_part, slash, count_part = port_text.partition("/")
        port = _digits(port_part, "m= port")
        if port > 65535:
            raise SdpError(f"m= port {port} out of range 0-65535")
        count = None
        if slash:
            count = _digits(count_part, "m= port count")
            if count == 0 or count > 65535:
                raise SdpError(f"m= port count {count} out of range 1-65535")
        return cls(media=media, port=port, proto=proto, formats=formats, port_count=count)

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is rejected or removed (RFC 3264 §6, §8.2)."""
        return self.port == 0

    def attribute_values(self, name: str) -> list[str | None]:
        """Values of every ``a=<name>`` line of this section, in order (names compared case-insensitively)."""
        lname = name.lower()
        return [v for n, v in self.attributes if n.lower() == lname]

    def attribute_strings(self) -> list[str]:
        """Every attribute as ``name`` or ``name:value``: the form ``t38/sdp.py`` reads."""
        return [_attribute_text(n, v) for n, v in self.attributes]

    @property
    def rtpmap(self) -> dict[str, RtpMap]:
        """``a=rtpmap`` by payload type; a malformed one is skipped with a debug log (it is the peer's)."""
        out: dict[str, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            pt, _, rest = (value or "").strip().partition(" ")
            pieces = rest.strip().split("/")
            try:
                if not pt or len(pieces) not in (2, 3) or not pieces[0]:
                    raise ValueError(value)
                clock = _digits(pieces[1], "clock rate")
                channels = _digits(pieces[2], "channels") if len(pieces) == 3 else 1
            except ValueError:
                log.debug("ignoring malformed a=rtpmap:%s", value)
                continue
            out[pt] = RtpMap(pieces[0], clock, channels)
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        """``a=fmtp`` parameters by payload type (RFC 4566 §6), kept as text."""
        out: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            pt, _, params = (value or "").strip().partition(" ")
            if pt:
                out[pt] = params.strip()
        return out

    @property
    def direction(self) -> str | None:
        """The media-level direction attribute (RFC 3264 §5.1), or None when the line has none."""
        found = None
        for name, value in self.attributes:
            if value is None and name.lower() in DIRECTIONS:
                found = name.lower()
        return found

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 4566 §6); a malformed or absent one gives None."""
        for value in reversed(self.attribute_values("ptime")):
            text = (value or "").strip()
            # Some peers write a fraction ("20.0"); the integer part is what matters for G.711 framing.
            head = text.split(".", 1)[0]
            if _DIGITS_RE.fullmatch(head) and 0 < int(head) <= 1000:
                return int(head)
        return None

    def codec_of(self, payload_type: str) -> RtpMap | None:
        """The codec of a payload type: ``a=rtpmap`` first, else the RFC 3551 static table."""
        mapped = self.rtpmap.get(payload_type)
        if mapped is not None:
            return mapped
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        return RtpMap(*static) if static else None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        out += [f"i={v}" for t, v in self.extra if t == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={t}:{v}" for t, v in self.bandwidths]
        out += [f"k={v}" for t, v in self.extra if t == "k"]
        out += [f"a={_attribute_text(n, v)}" for n, v in self.attributes]
        return out


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 4566 §5). ``str()``/``bytes()`` write it back in canonical order with CRLF."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    timing: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    #: ``i= u= e= p= r= z= k=`` lines, kept verbatim as (type letter, value).
    extra: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        return parse_sdp(data)

    def lines(self) -> list[str]:
        out = ["v=0", f"o={self.origin}", f"s={self.session_name or ' '}"]
        out += [f"{t}={v}" for letter in "iuep" for t, v in self.extra if t == letter]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={t}:{v}" for t, v in self.bandwidths]
        out += [f"t={start} {stop}" for start, stop in self.timing]
        out += [f"{t}={v}" for letter in "rzk" for t, v in self.extra if t == letter]
        out += [f"a={_attribute_text(n, v)}" for n, v in self.attributes]
        for m in self.media:
            out += m.lines()
        return out

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")

    def connection_for(self, index: int) -> Connection | None:
        """The ``c=`` that applies to line ``index``: media level overrides session level (RFC 4566 §5.7)."""
        m = self.media[index]
        return m.connection if m.connection is not None else self.connection

    def direction_for(self, index: int) -> str:
        """Direction of line ``index``: media level, else session level, else sendrecv (RFC 3264 §5.1)."""
        m = self.media[index]
        if m.direction is not None:
            return m.direction
        found = "sendrecv"
        for name, value in self.attributes:
            if value is None and name.lower() in DIRECTIONS:
                found = name.lower()
        return found

    def attribute_values(self, name: str) -> list[str | None]:
        """Values of every session-level ``a=<name>`` line, in order."""
        lname = name.lower()
        return [v for n, v in self.attributes if n.lower() == lname]


def parse_sdp(data: str | bytes) -> SessionDescription:
    """Parse an SDP body (RFC 4566 §5); raise ``SdpError`` naming the line on malformed input."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes | bytearray) else data
    if not isinstance(text, str):
        raise SdpError(f"SDP must be text or bytes, not {type(data).__name__}")
    raw_lines = [(n, line.rstrip(" \t\r")) for n, line in enumerate(text.split("\n"), start=1)]
    lines = [(n, line) for n, line in raw_lines if line]
    if not lines:
        raise SdpError("empty SDP: missing v=")
    first_no, first = lines[0]
    if not first.startswith("v="):
        raise SdpError(f"line {first_no}: SDP must start with v=, got {first[:40]!r}")
    if first[2:].strip() != "0":
        raise SdpError(f"line {first_no}: unsupported SDP version {first[2:]!r}")

    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = []
    timing: list[tuple[int, int]] = []
    attributes: list[Attribute] = []
    extra: list[tuple[str, str]] = []
    media: list[MediaDescription] = []

    for number, line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"line {number}: expected <type>=<value>, got {line[:40]!r}")
        kind, value = line[0], line[2:]
        current = media[-1] if media else None
        try:
            if kind == "m":
                media.append(MediaDescription.parse_m_line(value))
            elif kind == "c":
                conn = Connection.parse(value)
                if current is None:
                    connection = conn
                else:
                    current.connection = conn
            elif kind == "b":
                bw_type, colon, bw_value = value.partition(":")
                if not colon or not bw_type.strip():
                    raise SdpError(f"b= must be <type>:<bandwidth>, got {value!r}")
                bw = (bw_type.strip(), _digits(bw_value.strip(), "b= bandwidth"))
                (bandwidths if current is None else current.bandwidths).append(bw)
            elif kind == "a":
                name, val = _split_attribute(value)
                if not name.strip():
                    log.debug("line %d: ignoring a= line without a name", number)
                    continue
                (attributes if current is None else current.attributes).append((name.strip(), val))
            elif current is not None:
                if kind in _MEDIA_EXTRA:
                    current.extra.append((kind, value))
                else:
                    log.debug("line %d: ignoring %s= line in a media section", number, kind)
            elif kind == "o":
                if origin is not None:
                    raise SdpError("second o= line")
                origin = Origin.parse(value)
            elif kind == "s":
                session_name = value.strip()
            elif kind == "t":
                parts = value.split()
                if len(parts) != 2:
                    raise SdpError(f"t= needs start and stop time, got {value!r}")
                timing.append((_digits(parts[0], "t= start"), _digits(parts[1], "t= stop")))
            elif kind in _SESSION_EXTRA:
                extra.append((kind, value))
            elif kind == "v":
                raise SdpError("second v= line")
            else:
                log.debug("line %d: ignoring unknown SDP line type %s=", number, kind)
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None

    if origin is None:
        raise SdpError("missing o= line")
    return SessionDescription(
        origin=origin,
        session_name=session_name if session_name else "-",
        connection=connection,
        bandwidths=bandwidths,
        timing=timing or [(0, 0)],
        attributes=attributes,
        media=media,
        extra=extra,
    )


class LocalSession:
    """Our ``o=`` line for one dialog (RFC 3264 §8, RFC 4566 §5.2).

    ``describe()`` wraps media lines into a full SDP: the session id never changes, and the version goes up
    by one exactly when the content differs from the SDP we sent before (a refresh re-INVITE repeats the
    same SDP with the same version, RFC 3264 §8 / RFC 4028). Keep one object per dialog and pass it to
    every ``build_offer``/``answer_offer`` of that dialog.
    """

    def __init__(
        self,
        address: str,
        *,
        session_id: int | None = None,
        version: int | None = None,
        username: str = "vfax",
        session_name: str = "vfax",
    ) -> None:
        self.address = address
        self.session_id = session_id if session_id is not None else secrets.randbits(62)
        self.version = version if version is not None else self.session_id
        self.username = username
        self.session_name = session_name
        self._last_body: bytes | None = None

    def _origin(self, version: int) -> Origin:
        conn = Connection.for_address(self.address)
        return Origin(self.username, str(self.session_id), version, "IN", conn.addrtype, conn.address)

    def describe(
        self, media: Sequence[MediaDescription], *, attributes: Iterable[Attribute] = ()
    ) -> SessionDescription:
        """A full SDP with our origin, session-level ``c=`` and ``t=0 0`` (RFC 3264 §5)."""
        version = self.version
        sd = SessionDescription(
            origin=self._origin(version),
            session_name=self.session_name,
            connection=Connection.for_address(self.address),
            attributes=list(attributes),
            media=list(media),
        )
        # The last description is kept as its text, not as objects (no copies to guard it against the
        # caller's later changes): a burst of calls spent most of their SDP time in deepcopy.
        body = bytes(sd)
        if self._last_body is not None and body != self._last_body:
            version += 1
            sd.origin = self._origin(version)
            body = bytes(sd)
        self.version = version
        self._last_body = body
        return sd


# --------------------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264)


@dataclass(frozen=True)
class ChosenAudio:
    """The audio line in use: where to send G.711 and how (RFC 3264 §6.1, RFC 3551)."""

    index: int
    codec: str
    payload_type: int
    address: str
    port: int
    ptime: int | None
    #: Direction as the peer stated it for its side (``sendonly`` from the peer means it holds us).
    direction: str = "sendrecv"
    #: The peer put the stream on hold: ``c=0.0.0.0`` or it will not receive (sendonly/inactive).
    hold: bool = False


@dataclass(frozen=True)
class ChosenImage:
    """The T.38 line in use: where to send UDPTL and the peer's attributes for ``t38/sdp.py``."""

    index: int
    address: str
    port: int
    attributes: tuple[str, ...]
    proto: str = "udptl"
    direction: str = "sendrecv"
    hold: bool = False


@dataclass
class Negotiation:
    """What an offer/answer exchange set up: at most one audio and one image line."""

    chosen_audio: ChosenAudio | None
    chosen_image: ChosenImage | None


@dataclass
class Answer(Negotiation):
    """Our answer SDP and what it accepted."""

    sdp: SessionDescription


ImageAttributes = Sequence[str] | Callable[[MediaDescription], Sequence[str] | None]


def _is_audio_line(m: MediaDescription) -> bool:
    return m.media.lower() == "audio" and m.proto.upper() == "RTP/AVP"


def _is_t38_line(m: MediaDescription) -> bool:
    return (
        m.media.lower() == "image"
        and m.proto.lower() == "udptl"
        and any(f.lower() == "t38" for f in m.formats)
    )


def _attributes_from(strings: Iterable[str]) -> list[Attribute]:
    out = []
    for text in strings:
        name, value = _split_attribute(text)
        if not name or any(c in text for c in "\r\n"):
            raise ValueError(f"bad attribute {text!r}")
        out.append((name, value))
    return out


def _audio_line(
    port: int, codecs: Sequence[tuple[str, str]], ptime: int | None, direction: str
) -> MediaDescription:
    """Our ``m=audio`` line for (codec, payload type) pairs, with ``a=rtpmap`` even for static types."""
    attrs: list[Attribute] = [("rtpmap", f"{pt} {name}/8000") for name, pt in codecs]
    if ptime:
        attrs.append(("ptime", str(ptime)))
    attrs.append((direction, None))
    return MediaDescription("audio", port, "RTP/AVP", [pt for _, pt in codecs], attributes=attrs)


def _static_pt(codec: str) -> str:
    for pt, (name, _, _) in STATIC_PAYLOAD_TYPES.items():
        if name == codec.upper() and name in FAX_CODECS:
            return pt
    raise ValueError(f"unsupported codec {codec!r}: only PCMU and PCMA")


def _check_port(port: int, what: str) -> None:
    if not 0 < port <= 65535:
        raise ValueError(f"{what} {port} out of range 1-65535")


def build_offer(
    local_addr: str,
    *,
    audio_port: int | None,
    image_port: int | None,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    image_attributes: Sequence[str] = (),
    image_first: bool = False,
    ptime: int | None = 20,
    session: LocalSession | None = None,
) -> SessionDescription:
    """Our offer (RFC 3264 §5): an audio line, an image line, or both (audio first unless ``image_first``).

    ``image_attributes`` are T.38 ``name:value`` strings from ``t38/sdp.py``. Pass the dialog's
    ``session`` so the ``o=`` version follows RFC 3264 §8; without one a new session is started.
    """
    if audio_port is None and image_port is None:
        raise ValueError("an offer needs an audio port, an image port or both")
    lines: list[MediaDescription] = []
    if audio_port is not None:
        _check_port(audio_port, "audio_port")
        if not codecs:
            raise ValueError("an audio offer needs at least one codec")
        lines.append(_audio_line(audio_port, [(c.upper(), _static_pt(c)) for c in codecs], ptime, "sendrecv"))
    if image_port is not None:
        _check_port(image_port, "image_port")
        image = MediaDescription(
            "image", image_port, "udptl", ["t38"], attributes=_attributes_from(image_attributes)
        )
        lines.insert(0 if image_first else len(lines), image)
    session = session if session is not None else LocalSession(local_addr)
    if session.address != local_addr:
        session.address = local_addr
    return session.describe(lines)


def _remote(sd: SessionDescription, index: int) -> tuple[str, bool]:
    """Address of line ``index`` and whether it is an RFC 2543 hold address."""
    conn = sd.connection_for(index)
    if conn is None:
        raise SdpError(f"m-line {index + 1} ({sd.media[index].media}) has no c= address")
    return conn.host, conn.is_hold


def _pick_codec(m: MediaDescription, codecs: Sequence[str]) -> tuple[str, str] | None:
    """The first of our codecs (our preference, RFC 3264 §6.1 leaves it to the answerer) the line offers."""
    offered: list[tuple[str, str]] = []
    for pt in m.formats:
        codec = m.codec_of(pt)
        if codec is not None and codec.clock_rate == 8000 and codec.channels == 1:
            offered.append((codec.encoding.upper(), pt))
    for wanted in codecs:
        for name, pt in offered:
            if name == wanted.upper() and name in FAX_CODECS:
                return name, pt
    return None


def _rejected_copy(m: MediaDescription) -> MediaDescription:
    """RFC 3264 §6: a rejected line keeps media and proto, port 0, and at least one format."""
    formats = list(m.formats) or (["t38"] if m.media.lower() == "image" else ["0"])
    return MediaDescription(m.media, 0, m.proto, formats)


def answer_offer(
    offer: SessionDescription,
    *,
    local_addr: str,
    accept_audio: bool = True,
    audio_port: int | None = None,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    accept_image: bool = True,
    image_port: int | None = None,
    image_attributes: ImageAttributes = (),
    prefer: Literal["image", "audio"] = "image",
    ptime: int | None = 20,
    session: LocalSession | None = None,
) -> Answer:
    """Answer ``offer`` line by line (RFC 3264 §6); raise ``OfferRejected`` if no offered line can be taken.

    An offer whose every line is already rejected (port 0), or that has no line, is answered with every
    line mirrored at port 0 and nothing chosen: the peer removed the media, not the dialog.

    ``image_attributes`` is either our T.38 attribute strings or a callback given the offered image line
    that returns the answer's attributes (from ``t38/sdp.negotiate_answer``) or None to reject the line;
    an exception from the callback propagates, so a callback that parses the peer's T.38 attributes should
    turn its parse error into None (the offer then falls back to its audio line, if any). A kind of line is
    taken only when it is accepted *and* has a port (``accept_audio`` with ``audio_port``, ``accept_image``
    with ``image_port``). Keep one ``session`` per dialog so a repeated offer gets a repeated answer.
    """
    if prefer not in ("image", "audio"):
        raise ValueError(f"prefer must be 'image' or 'audio', not {prefer!r}")
    if accept_audio and audio_port is not None:
        _check_port(audio_port, "audio_port")
    if accept_image and image_port is not None:
        _check_port(image_port, "image_port")

    session = session if session is not None else LocalSession(local_addr)
    if session.address != local_addr:
        session.address = local_addr
    if all(m.rejected for m in offer.media):
        # RFC 3264 §5/§6: an offer may remove every stream (Asterisk ends a T.38 fax with a re-INVITE whose
        # only line is `m=image 0 udptl t38`); the answer mirrors each line at port 0, the dialog stays.
        return Answer(chosen_audio=None, chosen_image=None,
                      sdp=session.describe([_rejected_copy(m) for m in offer.media]))  # fmt: skip

    audio_pick: tuple[int, str, str] | None = None
    image_pick: tuple[int, list[Attribute]] | None = None
    reasons: list[str] = []
    for index, m in enumerate(offer.media):
        if m.rejected:
            continue
        if _is_audio_line(m) and audio_pick is None:
            if not accept_audio or audio_port is None:
                reasons.append("audio not accepted")
                continue
            codec = _pick_codec(m, codecs)
            if codec is None:
                offered = ",".join(m.formats) or "none"
                reasons.append(f"no common audio codec (offered {offered}, we take {','.join(codecs)})")
                continue
            audio_pick = (index, *codec)
        elif _is_t38_line(m) and image_pick is None:
            if not accept_image or image_port is None:
                reasons.append("T.38 not accepted")
                continue
            attrs = image_attributes(m) if callable(image_attributes) else image_attributes
            if attrs is None:
                reasons.append("T.38 parameters not acceptable")
                continue
            image_pick = (index, _attributes_from(attrs))
        else:
            reasons.append(f"{m.media} {m.proto} not supported")

    if audio_pick is not None and image_pick is not None:
        if prefer == "image":
            log.debug(
                "offer has audio and T.38 lines: taking T.38, rejecting audio line %d", audio_pick[0] + 1
            )
            audio_pick = None
        else:
            log.debug(
                "offer has audio and T.38 lines: taking audio, rejecting image line %d", image_pick[0] + 1
            )
            image_pick = None
    if audio_pick is None and image_pick is None:
        raise OfferRejected("; ".join(dict.fromkeys(reasons)) or "no media line offered")

    lines: list[MediaDescription] = []
    chosen_audio: ChosenAudio | None = None
    chosen_image: ChosenImage | None = None
    for index, m in enumerate(offer.media):
        direction = offer.direction_for(index)
        if audio_pick is not None and index == audio_pick[0]:
            _, codec, pt = audio_pick
            address, zero_addr = _remote(offer, index)
            assert audio_port is not None
            lines.append(_audio_line(audio_port, [(codec, pt)], ptime, _ANSWER_DIRECTION[direction]))
            chosen_audio = ChosenAudio(
                index=index,
                codec=codec,
                payload_type=int(pt),
                address=address,
                port=m.port,
                ptime=m.ptime,
                direction=direction,
                hold=zero_addr or direction in ("sendonly", "inactive"),
            )
        elif image_pick is not None and index == image_pick[0]:
            address, zero_addr = _remote(offer, index)
            assert image_port is not None
            answer_attrs = list(image_pick[1])
            if direction != "sendrecv":
                answer_attrs.append((_ANSWER_DIRECTION[direction], None))
            t38 = next(f for f in m.formats if f.lower() == "t38")
            lines.append(MediaDescription(m.media, image_port, m.proto, [t38], attributes=answer_attrs))
            chosen_image = ChosenImage(
                index=index,
                address=address,
                port=m.port,
                attributes=tuple(m.attribute_strings()),
                proto=m.proto,
                direction=direction,
                hold=zero_addr or direction in ("sendonly", "inactive"),
            )
        else:
            lines.append(_rejected_copy(m))
    return Answer(chosen_audio=chosen_audio, chosen_image=chosen_image, sdp=session.describe(lines))


def process_answer(offer_we_sent: SessionDescription, answer: SessionDescription) -> Negotiation:
    """Read the peer's answer to our offer (RFC 3264 §7): which lines are active, with what.

    The answer must have as many m-lines as the offer, each of the same media type (RFC 3264 §6), and an
    active audio line must use a codec we offered; otherwise ``SdpError``. If the peer accepted both an
    audio and an image line, both are reported and the caller decides. Both None: the peer rejected all.
    """
    if len(answer.media) != len(offer_we_sent.media):
        raise SdpError(
            f"answer has {len(answer.media)} m-lines, our offer had {len(offer_we_sent.media)} (RFC 3264 §6)"
        )
    chosen_audio: ChosenAudio | None = None
    chosen_image: ChosenImage | None = None
    for index, (ours, theirs) in enumerate(zip(offer_we_sent.media, answer.media, strict=True)):
        if ours.media.lower() != theirs.media.lower():
            raise SdpError(f"answer m-line {index + 1} is {theirs.media}, our offer's is {ours.media}")
        if theirs.rejected or ours.rejected:
            continue
        direction = answer.direction_for(index)
        if _is_audio_line(ours) and chosen_audio is None:
            if theirs.proto.upper() != ours.proto.upper():
                raise SdpError(f"answer m-line {index + 1} has proto {theirs.proto}, we offered {ours.proto}")
            picked = None
            for pt in theirs.formats:
                if pt in ours.formats:
                    codec = ours.codec_of(pt)
                    if codec is not None and codec.encoding.upper() in FAX_CODECS:
                        picked = (codec.encoding.upper(), pt)
                        break
            if picked is None:
                raise SdpError(
                    f"answer m-line {index + 1} has no codec we offered: {' '.join(theirs.formats)}"
                )
            address, zero_addr = _remote(answer, index)
            chosen_audio = ChosenAudio(
                index=index,
                codec=picked[0],
                payload_type=int(picked[1]),
                address=address,
                port=theirs.port,
                ptime=theirs.ptime,
                direction=direction,
                hold=zero_addr or direction in ("sendonly", "inactive"),
            )
        elif _is_t38_line(ours) and chosen_image is None:
            if theirs.proto.lower() != "udptl":
                raise SdpError(f"answer m-line {index + 1} has proto {theirs.proto}, we offered {ours.proto}")
            address, zero_addr = _remote(answer, index)
            chosen_image = ChosenImage(
                index=index,
                address=address,
                port=theirs.port,
                attributes=tuple(theirs.attribute_strings()),
                proto=theirs.proto,
                direction=direction,
                hold=zero_addr or direction in ("sendonly", "inactive"),
            )
    return Negotiation(chosen_audio=chosen_audio, chosen_image=chosen_image)
