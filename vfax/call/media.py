"""Media policy and the T.38 SDP glue between ``sip/`` (which carries lines) and ``t38/`` (which reads them).

The policy says when a call moves from G.711 to T.38, per device and per call:

* ``auto``   the receiving side re-INVITEs to T.38 as soon as the call is answered; the sending side
             accepts a peer's T.38 re-INVITE at any moment before T.30 phase C. A refused or unanswered
             T.38 re-INVITE leaves the call on G.711 and the fax goes on.
* ``off``    G.711 only; T.38 offers get 488 (or their image line is rejected with port 0).
* ``only``   T.38 or nothing: where ``auto`` would fall back to G.711, the call fails instead.
* ``direct`` the image line is offered in the first INVITE; a 488 makes us call again with audio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sip.sdp import MediaDescription
from t38 import sdp as t38sdp
from t38.sdp import NegotiatedT38, T38Params, T38SdpError

LOCAL_T38: T38Params = t38sdp.DEFAULT_LOCAL

# Final responses to our T.38 re-INVITE that mean "no T.38 here, stay on audio" (the brief and
# DESIGN.md); any other failure is treated the same way, but these are the expected ones.
T38_REFUSALS = frozenset({415, 488, 606})


class T38Policy(enum.StrEnum):
    AUTO = "auto"
    OFF = "off"
    ONLY = "only"
    DIRECT = "direct"

    @classmethod
    def parse(cls, value: str) -> T38Policy:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"t38 must be one of auto, off, only, direct, not {value!r}") from None


def our_image_attributes() -> list[str]:
    """The T.38 attributes of an image line we offer (T.38 Annex D)."""
    return t38sdp.format_t38_attributes(LOCAL_T38)


@dataclass(frozen=True)
class ImageDeal:
    """A settled T.38 negotiation: both sides' attributes and what it means for our sending side."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    session: NegotiatedT38


def answer_image(line: MediaDescription) -> tuple[list[str], ImageDeal] | None:
    """Our answer to an offered image line, or None to reject it (malformed T.38 attributes are the
    peer's fault: the line is refused and the call stays on audio, nothing else happens)."""
    theirs = line.attribute_strings()
    try:
        offer = t38sdp.parse_t38_attributes(theirs)
        answer = t38sdp.negotiate_answer(offer, LOCAL_T38)
        session = t38sdp.negotiated_as_answerer(offer, answer)
    except (T38SdpError, ValueError):
        return None
    ours = t38sdp.format_t38_attributes(answer)
    return ours, ImageDeal(tuple(ours), tuple(theirs), session)


def accept_image_answer(ours: list[str], theirs: tuple[str, ...] | list[str]) -> ImageDeal:
    """The session when the peer answered our image offer; raises T38SdpError for an answer that
    picks what we did not offer (T.38 Annex D)."""
    session = t38sdp.accept_answer(
        t38sdp.parse_t38_attributes(ours), t38sdp.parse_t38_attributes(list(theirs))
    )
    return ImageDeal(tuple(ours), tuple(theirs), session)
