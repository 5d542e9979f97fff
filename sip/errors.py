"""Error classes of the SIP layer.

Two kinds of fault, after the h11 split: the peer sent bytes that are not SIP (``SipParseError``: drop the
datagram or close the stream), or the peer sent a request that parses but breaks a rule of RFC 3261 §8.2
(``InvalidRequest``: answer it with ``status`` and ``reason``, e.g. ``400 Missing Call-ID``).
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error raised by the ``sip`` package."""


class SipParseError(SipError, ValueError):
    """The peer sent something that is not a well-formed SIP message, URI or header.

    The message says what is wrong (``"Via: missing branch"``, ``"Content-Length 120 exceeds body of 12
    bytes"``) so the drop can be logged usefully.
    """


class InvalidRequest(SipError):
    """A request parsed but may not be processed (RFC 3261 §8.2); answer it with ``status`` ``reason``.

    ``status`` is 400 unless a more precise code applies (505 for a SIP version other than 2.0, 416 for an
    unsupported Request-URI scheme). ``reason`` is short enough to be the reason phrase of the response.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
