"""T.38 SDP attributes (ITU-T T.38 Annex D, RFC 4612) and their offer/answer negotiation.

Sans-I/O: the SIP layer hands over the ``a=`` attribute strings of one ``m=image <port> udptl t38`` line
(``"T38FaxVersion:0"``, ``"T38FaxUdpEC:t38UDPRedundancy"``, ...) and gets attribute strings back for an
offer or an answer. Attributes that are not T.38 (``sendrecv``, ...) are skipped here; the caller keeps them.

Reading the peer (``parse_t38_attributes``). Attribute names are case-insensitive. A malformed value raises
``T38SdpError`` naming the attribute, except where real peers are known to send odd values; those are read
by the lenient rules below, each logged at debug level:

* a size or rate of ``0`` (AudioCodes sends ``T38MaxBitRate=0``) means "not declared", as if absent;
* an unknown ``T38FaxUdpEC`` token means no error correction (what Asterisk and FreeSWITCH do);
* ``T38FaxRateManagement:localTFC`` (a typo sent by rtpengine's T.38 gateway) means ``localTCF``;
* legacy names ``T38FaxMaxRate`` / ``T38FaxMaxBitRate`` mean ``T38MaxBitRate`` and ``T38MaxDatagram`` means
  ``T38FaxMaxDatagram`` (Asterisk reads the same aliases);
* a boolean attribute is true when bare or ``:1`` / ``:true`` and false when ``:0`` / ``:false``
  (FreeSWITCH's "broken boolean" mode writes ``:0`` for false);
* ``T38VendorInfo`` is informational and kept verbatim; an empty one, or one with control characters,
  counts as absent;
* an attribute given twice: the last one wins (as in Asterisk and FreeSWITCH).

Defaults for absent attributes: version 0 (Annex D), ``transferredTCF`` (data rate management method 2,
T.38 §8.2, the method used over UDP), no error correction (Asterisk writes none by leaving the attribute
out; FreeSWITCH reads absence as none), booleans false, sizes and bit rate undeclared.

Negotiation (Annex D offer/answer): the answer's version is at most the offer's, the bit rate is the lower
of the two, the rate management is the offerer's, error correction is the offerer's scheme if we support
it, else the next weaker one (FEC → redundancy → none), fill-bit removal / MMR / JBIG only if both sides
have them. ``T38FaxMaxBuffer`` / ``T38FaxMaxDatagram`` / ``T38FaxMaxIFP`` are declarative: each side states
its own receive limits, and each sender honours the other's (never send a datagram larger than the peer's
``T38FaxMaxDatagram``).
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("t38.sdp")

__all__ = [
    "DEFAULT_LOCAL",
    "DEFAULT_MAX_BIT_RATE",
    "DEFAULT_PEER_MAX_DATAGRAM",
    "NegotiatedT38",
    "RateManagement",
    "T38Params",
    "T38SdpError",
    "UdpEC",
    "accept_answer",
    "format_t38_attributes",
    "negotiate_answer",
    "negotiated_as_answerer",
    "parse_t38_attributes",
]

# Bounds. Values outside them are absurd for a fax and are rejected as the peer's fault.
MAX_VERSION: Final = 255
MAX_BIT_RATE: Final = 33600  # V.34 half-duplex, the fastest fax modulation (T.38 version 3 and later)
MAX_BUFFER: Final = 2**31 - 1
MAX_DATAGRAM: Final = 65535  # a UDP payload cannot be larger
MAX_EC_DEPTH: Final = 255
MAX_FEC_SPAN: Final = 255

DEFAULT_MAX_BIT_RATE: Final = 14400
"""Bit rate used when neither side declares ``T38MaxBitRate``: V.17, what every T.38 gateway supports."""

DEFAULT_PEER_MAX_DATAGRAM: Final = 400
"""Datagram limit assumed when the peer declares no ``T38FaxMaxDatagram``: the value common PBXes assume."""

_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)
_VALUE_SHOWN = 40


def _check_range(name: str, value: object, lower: int, upper: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not lower <= value <= upper:
        raise ValueError(f"{name} {value} is out of range [{lower}, {upper}]")


def _check_optional(name: str, value: object, upper: int) -> None:
    if value is not None:
        _check_range(name, value, 1, upper)


class T38SdpError(ValueError):
    """The peer's T.38 SDP is malformed or its answer breaks the offer/answer rules of T.38 Annex D.

    The message starts with the attribute's canonical name, e.g.
    ``"T38FaxVersion: not a non-negative decimal number ('abc')"``.
    """


class RateManagement(enum.Enum):
    """``T38FaxRateManagement``: who generates the TCF training check (T.38 §8)."""

    LOCAL_TCF = "localTCF"  # method 1 (§8.1): each gateway generates TCF locally; used with TCP
    TRANSFERRED_TCF = "transferredTCF"  # method 2 (§8.2): TCF is carried end to end; used with UDPTL


class UdpEC(enum.Enum):
    """``T38FaxUdpEC``: the UDPTL error recovery scheme (T.38 §9.1)."""

    NONE = "none"
    REDUNDANCY = "t38UDPRedundancy"
    FEC = "t38UDPFEC"

    @property
    def strength(self) -> int:
        """Order of fallback: an answerer may replace an offered scheme by a weaker one, never a stronger."""
        return _EC_STRENGTH[self]


_EC_STRENGTH: Final = {UdpEC.NONE: 0, UdpEC.REDUNDANCY: 1, UdpEC.FEC: 2}


@dataclass(frozen=True)
class T38Params:
    """Every T.38 SDP attribute of one side, typed; ``None`` means "not declared".

    ``max_buffer``, ``max_datagram`` and ``max_ifp`` are the *receive* limits of the side that sends them.
    ``udp_ec_depth_min/max`` are ``T38FaxUdpECDepth`` (minred, maxred) and ``udp_fec_max_span`` is
    ``T38FaxUdpFECMaxSpan``, both from T.38 version 4; ``vendor_info`` is ``T38VendorInfo`` verbatim
    (T.35 country code, extension and vendor code).
    """

    version: int = 0
    max_bit_rate: int | None = None
    rate_management: RateManagement = RateManagement.TRANSFERRED_TCF
    max_buffer: int | None = None
    max_datagram: int | None = None
    max_ifp: int | None = None
    udp_ec: UdpEC = UdpEC.NONE
    udp_ec_depth_min: int | None = None
    udp_ec_depth_max: int | None = None
    udp_fec_max_span: int | None = None
    fill_bit_removal: bool = False
    transcoding_mmr: bool = False
    transcoding_jbig: bool = False
    vendor_info: str | None = None

    def __post_init__(self) -> None:
        # Our own misuse of the API, not the peer's fault: plain ValueError/TypeError.
        _check_range("version", self.version, 0, MAX_VERSION)
        _check_optional("max_bit_rate", self.max_bit_rate, MAX_BIT_RATE)
        _check_optional("max_buffer", self.max_buffer, MAX_BUFFER)
        _check_optional("max_datagram", self.max_datagram, MAX_DATAGRAM)
        _check_optional("max_ifp", self.max_ifp, MAX_DATAGRAM)
        if not isinstance(self.rate_management, RateManagement):
            raise TypeError(f"rate_management must be a RateManagement, not {self.rate_management!r}")
        if not isinstance(self.udp_ec, UdpEC):
            raise TypeError(f"udp_ec must be a UdpEC, not {self.udp_ec!r}")
        if self.udp_ec_depth_min is None:
            if self.udp_ec_depth_max is not None:
                raise ValueError("udp_ec_depth_max needs udp_ec_depth_min")
        else:
            _check_range("udp_ec_depth_min", self.udp_ec_depth_min, 0, MAX_EC_DEPTH)
            if self.udp_ec_depth_max is not None:
                _check_range("udp_ec_depth_max", self.udp_ec_depth_max, self.udp_ec_depth_min, MAX_EC_DEPTH)
        _check_optional("udp_fec_max_span", self.udp_fec_max_span, MAX_FEC_SPAN)
        for name in ("fill_bit_removal", "transcoding_mmr", "transcoding_jbig"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool")
        if self.vendor_info is not None and (
            not isinstance(self.vendor_info, str)
            or not self.vendor_info.strip()
            or self.vendor_info != self.vendor_info.strip()
            or any(c in self.vendor_info for c in "\r\n\0")
        ):
            raise ValueError(
                f"vendor_info must be a non-empty single-line stripped string: {self.vendor_info!r}"
            )


@dataclass(frozen=True)
class NegotiatedT38:
    """The outcome of one offer/answer exchange: how the T.38 session runs, seen from our side.

    ``send_max_datagram`` is the peer's ``T38FaxMaxDatagram`` (or ``DEFAULT_PEER_MAX_DATAGRAM`` when it
    declared none): no UDPTL datagram we send may be larger. ``send_max_ifp`` is the peer's
    ``T38FaxMaxIFP`` if declared. ``udp_ec`` applies to both directions (Annex D: the answer's scheme).
    """

    version: int
    max_bit_rate: int
    rate_management: RateManagement
    udp_ec: UdpEC
    send_max_datagram: int
    send_max_ifp: int | None
    peer_max_buffer: int | None
    udp_ec_depth_min: int | None
    udp_ec_depth_max: int | None
    udp_fec_max_span: int | None
    fill_bit_removal: bool
    transcoding_mmr: bool
    transcoding_jbig: bool
    peer_vendor_info: str | None


DEFAULT_LOCAL: Final = T38Params(
    version=0,
    max_bit_rate=14400,
    rate_management=RateManagement.TRANSFERRED_TCF,
    max_buffer=1800,
    max_datagram=1400,
    udp_ec=UdpEC.REDUNDANCY,
)
"""What vfax offers: version 0 and V.17 like Asterisk, transferred TCF (UDPTL), redundancy (survives 10 %
loss in our tests where no error correction fails at 5 %), and a large receive datagram (1400 octets) so
the peer can pack plenty of redundancy into each packet."""


# --- reading ------------------------------------------------------------------------------------------

_NAME_VERSION = "T38FaxVersion"
_NAME_BIT_RATE = "T38MaxBitRate"
_NAME_RATE_MANAGEMENT = "T38FaxRateManagement"
_NAME_MAX_BUFFER = "T38FaxMaxBuffer"
_NAME_MAX_DATAGRAM = "T38FaxMaxDatagram"
_NAME_MAX_IFP = "T38FaxMaxIFP"
_NAME_UDP_EC = "T38FaxUdpEC"
_NAME_EC_DEPTH = "T38FaxUdpECDepth"
_NAME_FEC_SPAN = "T38FaxUdpFECMaxSpan"
_NAME_FILL_BIT_REMOVAL = "T38FaxFillBitRemoval"
_NAME_MMR = "T38FaxTranscodingMMR"
_NAME_JBIG = "T38FaxTranscodingJBIG"
_NAME_VENDOR_INFO = "T38VendorInfo"

# lower-case name on the wire -> canonical name
_NAMES: Final = {
    name.lower(): name
    for name in (
        _NAME_VERSION,
        _NAME_BIT_RATE,
        _NAME_RATE_MANAGEMENT,
        _NAME_MAX_BUFFER,
        _NAME_MAX_DATAGRAM,
        _NAME_MAX_IFP,
        _NAME_UDP_EC,
        _NAME_EC_DEPTH,
        _NAME_FEC_SPAN,
        _NAME_FILL_BIT_REMOVAL,
        _NAME_MMR,
        _NAME_JBIG,
        _NAME_VENDOR_INFO,
    )
} | {
    "t38faxmaxrate": _NAME_BIT_RATE,
    "t38faxmaxbitrate": _NAME_BIT_RATE,
    "t38maxdatagram": _NAME_MAX_DATAGRAM,
}

_RATE_MANAGEMENT_TOKENS: Final = {
    "localtcf": RateManagement.LOCAL_TCF,
    "transferredtcf": RateManagement.TRANSFERRED_TCF,
    "localtfc": RateManagement.LOCAL_TCF,  # rtpengine's typo
}

_EC_TOKENS: Final = {
    "t38udpredundancy": UdpEC.REDUNDANCY,
    "t38udpfec": UdpEC.FEC,
    "t38udpnoec": UdpEC.NONE,
}

_BOOLEAN_TOKENS: Final = {"": True, "1": True, "true": True, "0": False, "false": False}


def _shown(value: str) -> str:
    return repr(value if len(value) <= _VALUE_SHOWN else value[:_VALUE_SHOWN] + "...")


def _number(name: str, value: str, upper: int, *, zero_is_absent: bool) -> int | None:
    if not value:
        raise T38SdpError(f"{name}: value missing")
    if not _DIGITS.fullmatch(value):
        raise T38SdpError(f"{name}: not a non-negative decimal number ({_shown(value)})")
    number = int(value)
    if number == 0 and zero_is_absent:
        log.debug("%s:0 read as not declared", name)
        return None
    if number > upper:
        raise T38SdpError(f"{name}: {number} is out of range (at most {upper})")
    return number


def _ec_depth(value: str) -> tuple[int, int | None]:
    parts = value.split()
    if not 1 <= len(parts) <= 2:
        raise T38SdpError(f"{_NAME_EC_DEPTH}: expected '<minred> [<maxred>]' ({_shown(value)})")
    minred = _number(_NAME_EC_DEPTH, parts[0], MAX_EC_DEPTH, zero_is_absent=False)
    assert minred is not None
    if len(parts) == 1:
        return minred, None
    maxred = _number(_NAME_EC_DEPTH, parts[1], MAX_EC_DEPTH, zero_is_absent=False)
    assert maxred is not None
    if maxred < minred:
        raise T38SdpError(f"{_NAME_EC_DEPTH}: maxred {maxred} is below minred {minred}")
    return minred, maxred


def parse_t38_attributes(attrs: list[str] | tuple[str, ...]) -> T38Params:
    """Read the T.38 attributes of one ``m=image`` line; skip the others.

    Each item is one attribute without the line's ``a=`` (a leading ``a=`` is tolerated), e.g.
    ``"T38FaxMaxDatagram:1400"`` or a bare ``"T38FaxFillBitRemoval"``. Raises ``T38SdpError`` for a
    malformed T.38 value; the module docstring lists the lenient rules.
    """
    fields: dict[str, object] = {}
    for raw in attrs:
        text = raw.strip()
        if text[:2].lower() == "a=":
            text = text[2:]
        name, _, value = text.partition(":")
        canonical = _NAMES.get(name.strip().lower())
        if canonical is None:
            continue
        value = value.strip()
        if canonical == _NAME_VERSION:
            fields["version"] = _number(canonical, value, MAX_VERSION, zero_is_absent=False)
        elif canonical == _NAME_BIT_RATE:
            fields["max_bit_rate"] = _number(canonical, value, MAX_BIT_RATE, zero_is_absent=True)
        elif canonical == _NAME_MAX_BUFFER:
            fields["max_buffer"] = _number(canonical, value, MAX_BUFFER, zero_is_absent=True)
        elif canonical == _NAME_MAX_DATAGRAM:
            fields["max_datagram"] = _number(canonical, value, MAX_DATAGRAM, zero_is_absent=True)
        elif canonical == _NAME_MAX_IFP:
            fields["max_ifp"] = _number(canonical, value, MAX_DATAGRAM, zero_is_absent=True)
        elif canonical == _NAME_FEC_SPAN:
            fields["udp_fec_max_span"] = _number(canonical, value, MAX_FEC_SPAN, zero_is_absent=True)
        elif canonical == _NAME_EC_DEPTH:
            fields["udp_ec_depth_min"], fields["udp_ec_depth_max"] = _ec_depth(value)
        elif canonical == _NAME_RATE_MANAGEMENT:
            token = _RATE_MANAGEMENT_TOKENS.get(value.lower())
            if token is None:
                raise T38SdpError(f"{canonical}: expected localTCF or transferredTCF ({_shown(value)})")
            fields["rate_management"] = token
        elif canonical == _NAME_UDP_EC:
            ec = _EC_TOKENS.get(value.lower())
            if ec is None:
                log.debug("%s: unknown scheme %s read as no error correction", canonical, _shown(value))
                ec = UdpEC.NONE
            fields["udp_ec"] = ec
        elif canonical == _NAME_VENDOR_INFO:
            fields["vendor_info"] = value if value and value.isprintable() else None
        else:
            flag = _BOOLEAN_TOKENS.get(value.lower())
            if flag is None:
                raise T38SdpError(f"{canonical}: expected bare, :0 or :1 ({_shown(value)})")
            key = {_NAME_FILL_BIT_REMOVAL: "fill_bit_removal", _NAME_MMR: "transcoding_mmr"}.get(
                canonical, "transcoding_jbig"
            )
            fields[key] = flag
    try:
        return T38Params(**fields)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:  # every field was checked above; this is a safety net
        raise T38SdpError(f"T.38 attributes: {exc}") from exc


# --- writing ------------------------------------------------------------------------------------------


def format_t38_attributes(p: T38Params) -> list[str]:
    """Write ``p`` as attribute strings (without ``a=``) in the names and order Asterisk uses.

    Booleans are written bare when true and left out when false; ``UdpEC.NONE`` is written by leaving
    ``T38FaxUdpEC`` out (older peers do not know ``t38UDPNoEC``); undeclared sizes are left out.
    """
    out = [f"{_NAME_VERSION}:{p.version}"]
    if p.max_bit_rate is not None:
        out.append(f"{_NAME_BIT_RATE}:{p.max_bit_rate}")
    if p.fill_bit_removal:
        out.append(_NAME_FILL_BIT_REMOVAL)
    if p.transcoding_mmr:
        out.append(_NAME_MMR)
    if p.transcoding_jbig:
        out.append(_NAME_JBIG)
    out.append(f"{_NAME_RATE_MANAGEMENT}:{p.rate_management.value}")
    if p.max_buffer is not None:
        out.append(f"{_NAME_MAX_BUFFER}:{p.max_buffer}")
    if p.max_datagram is not None:
        out.append(f"{_NAME_MAX_DATAGRAM}:{p.max_datagram}")
    if p.max_ifp is not None:
        out.append(f"{_NAME_MAX_IFP}:{p.max_ifp}")
    if p.udp_ec is not UdpEC.NONE:
        out.append(f"{_NAME_UDP_EC}:{p.udp_ec.value}")
    if p.udp_ec_depth_min is not None:
        depth = str(p.udp_ec_depth_min)
        if p.udp_ec_depth_max is not None:
            depth += f" {p.udp_ec_depth_max}"
        out.append(f"{_NAME_EC_DEPTH}:{depth}")
    if p.udp_fec_max_span is not None:
        out.append(f"{_NAME_FEC_SPAN}:{p.udp_fec_max_span}")
    if p.vendor_info is not None:
        out.append(f"{_NAME_VENDOR_INFO}:{p.vendor_info}")
    return out


# --- negotiation --------------------------------------------------------------------------------------


def _lower(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def negotiate_answer(offer: T38Params, local: T38Params) -> T38Params:
    """Our answer to the peer's ``offer``, given what we support (``local``), per T.38 Annex D.

    ``local.udp_ec`` is the strongest scheme we run; we answer the offered scheme if it is not stronger,
    else ours. The sizes in the answer are our own receive limits from ``local``.
    """
    ec = offer.udp_ec if offer.udp_ec.strength <= local.udp_ec.strength else local.udp_ec
    depth_min = local.udp_ec_depth_min if ec is not UdpEC.NONE else None
    depth_max = local.udp_ec_depth_max if depth_min is not None else None
    return T38Params(
        version=min(offer.version, local.version),
        max_bit_rate=_lower(offer.max_bit_rate, local.max_bit_rate),
        rate_management=offer.rate_management,
        max_buffer=local.max_buffer,
        max_datagram=local.max_datagram,
        max_ifp=local.max_ifp,
        udp_ec=ec,
        udp_ec_depth_min=depth_min,
        udp_ec_depth_max=depth_max,
        udp_fec_max_span=local.udp_fec_max_span if ec is UdpEC.FEC else None,
        fill_bit_removal=offer.fill_bit_removal and local.fill_bit_removal,
        transcoding_mmr=offer.transcoding_mmr and local.transcoding_mmr,
        transcoding_jbig=offer.transcoding_jbig and local.transcoding_jbig,
        vendor_info=local.vendor_info,
    )


def _session(offer: T38Params, answer: T38Params, peer: T38Params) -> NegotiatedT38:
    rate = _lower(offer.max_bit_rate, answer.max_bit_rate)
    return NegotiatedT38(
        version=answer.version,
        max_bit_rate=DEFAULT_MAX_BIT_RATE if rate is None else rate,
        rate_management=offer.rate_management,
        udp_ec=answer.udp_ec,
        send_max_datagram=DEFAULT_PEER_MAX_DATAGRAM if peer.max_datagram is None else peer.max_datagram,
        send_max_ifp=peer.max_ifp,
        peer_max_buffer=peer.max_buffer,
        udp_ec_depth_min=answer.udp_ec_depth_min,
        udp_ec_depth_max=answer.udp_ec_depth_max,
        udp_fec_max_span=answer.udp_fec_max_span,
        fill_bit_removal=answer.fill_bit_removal,
        transcoding_mmr=answer.transcoding_mmr,
        transcoding_jbig=answer.transcoding_jbig,
        peer_vendor_info=peer.vendor_info,
    )


def negotiated_as_answerer(offer_received: T38Params, answer_sent: T38Params) -> NegotiatedT38:
    """The session when we answered: we send within the offerer's declared limits."""
    return _session(offer_received, answer_sent, peer=offer_received)


def accept_answer(offer_we_sent: T38Params, answer_received: T38Params) -> NegotiatedT38:
    """Check the peer's answer against our offer (T.38 Annex D) and return the session.

    Raises ``T38SdpError`` when the answer picks something we did not offer: a higher version, a different
    rate management, a stronger error correction scheme, or fill-bit removal / MMR / JBIG we left out.
    A lower bit rate or a weaker scheme is a legal answer.
    """
    o, a = offer_we_sent, answer_received
    if a.version > o.version:
        raise T38SdpError(f"{_NAME_VERSION}: answer {a.version} is higher than the offered {o.version}")
    if a.rate_management is not o.rate_management:
        raise T38SdpError(
            f"{_NAME_RATE_MANAGEMENT}: answer {a.rate_management.value} differs from the offered "
            f"{o.rate_management.value}"
        )
    if a.udp_ec.strength > o.udp_ec.strength:
        raise T38SdpError(
            f"{_NAME_UDP_EC}: answer {a.udp_ec.value} was not offered (offered {o.udp_ec.value})"
        )
    for name, offered, answered in (
        (_NAME_FILL_BIT_REMOVAL, o.fill_bit_removal, a.fill_bit_removal),
        (_NAME_MMR, o.transcoding_mmr, a.transcoding_mmr),
        (_NAME_JBIG, o.transcoding_jbig, a.transcoding_jbig),
    ):
        if answered and not offered:
            raise T38SdpError(f"{name}: in the answer but not offered")
    return _session(o, a, peer=a)
