"""Who is calling: the From display name and user we send, P-Asserted-Identity (RFC 3325), and what a
received request says about its caller.

A SIP trunk shows the callee the From display name and user (RFC 3261 §20.20) and, between trusted
nodes, the P-Asserted-Identity (RFC 3325 §9.1). Values come from configuration, so they are checked
here once: a display name is written as a ``quoted-string`` (§25.1: ``"`` and ``\\`` escaped), which can
carry any printable character, UTF-8 included, but no control character (CR/LF would end the header
line); a user part is limited to the characters §25.1 allows unescaped (``unreserved``,
``user-unreserved``); an asserted identity is a ``sip:``/``sips:`` URI or a global ``tel:`` number
(RFC 3966). A value that cannot be written safely raises ``IdentityError`` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sip.errors import SipError
from sip.message import Request
from sip.uri import NameAddr, SipUri, quote_string

__all__ = ["CallerIdentity", "IdentityError", "caller_of", "check_display_name", "check_user"]

MAX_DISPLAY_NAME = 100
MAX_USER = 64
#: RFC 3261 §25.1 user: unreserved / user-unreserved (``;``, ``?``, ``/`` left out: they read as the
#: start of parameters or headers to many parsers).
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,]+$")
#: RFC 3966 global-number: ``+`` then digits with visual separators, then optional parameters.
_TEL_RE = re.compile(
    r"^tel:\+[0-9().\-]*[0-9][0-9().\-]*(;[A-Za-z0-9\-]+(=[A-Za-z0-9\-_.!~*'()+%\[\]/:&$]+)?)*$"
)


class IdentityError(SipError, ValueError):
    """A caller identity value that cannot be written into a SIP header; ``field`` names it
    (``name``, ``user`` or ``asserted``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_display_name(name: str) -> str:
    """``name`` trimmed, if a ``quoted-string`` can carry it (§25.1 qdtext: no control characters)."""
    text = name.strip()
    if not text:
        raise IdentityError("name", "a display name must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise IdentityError("name", f"a display name cannot carry control characters: {name!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise IdentityError("name", f"a display name must be valid Unicode text: {name!r}") from None
    if len(text) > MAX_DISPLAY_NAME:
        raise IdentityError("name", f"a display name is at most {MAX_DISPLAY_NAME} characters")
    return text


def check_user(user: str) -> str:
    """``user`` if it can be a SIP URI's user part as written (a number such as ``+4930123``, a name)."""
    if not _USER_RE.match(user):
        raise IdentityError(
            "user",
            f"a SIP user part may hold letters, digits and - _ . ! ~ * ' ( ) & = + $ , only, not {user!r}",
        )
    if len(user) > MAX_USER:
        raise IdentityError("user", f"a SIP user part is at most {MAX_USER} characters")
    return user


def check_asserted(uri: str) -> str:
    """``uri`` if it is a ``sip:``/``sips:`` URI with a user or a global ``tel:`` number (RFC 3325 §9.1)."""
    text = uri.strip()
    scheme = text.partition(":")[0].lower()
    if scheme == "tel":
        if not _TEL_RE.match(text):
            raise IdentityError(
                "asserted", f"a tel: identity must be a global number such as tel:+4930123456, not {uri!r}"
            )
        return text
    if scheme not in ("sip", "sips"):
        raise IdentityError(
            "asserted", f"an asserted identity is a sip:, sips: or tel: URI (the display name comes from "
            f"the caller name), not {uri!r}",
        )  # fmt: skip
    try:
        parsed = SipUri.parse(text)
    except SipError as exc:
        raise IdentityError("asserted", f"not a valid SIP URI {uri!r}: {exc}") from None
    if not parsed.user or parsed.headers or not parsed.host:
        raise IdentityError("asserted", f"an asserted identity names a user at a host, not {uri!r}")
    return str(parsed)


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """What we tell the callee about us: From display ``name`` and ``user``, and the ``asserted``
    identity (P-Asserted-Identity). Each is optional; every given one is checked at construction."""

    name: str | None = None
    user: str | None = None
    asserted: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            object.__setattr__(self, "name", check_display_name(self.name))
        if self.user is not None:
            object.__setattr__(self, "user", check_user(self.user))
        if self.asserted is not None:
            object.__setattr__(self, "asserted", check_asserted(self.asserted))

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.name, self.user, self.asserted))

    def from_address(self, default_user: str, host: str) -> NameAddr | None:
        """The From of our requests (§8.1.1.3), or None when neither a name nor a user is configured
        (the user agent then writes its own)."""
        if self.name is None and self.user is None:
            return None
        return NameAddr(SipUri(user=self.user or default_user, host=host), display=self.name)

    def headers(self) -> list[tuple[str, str]]:
        """``P-Asserted-Identity: "name" <uri>`` when an asserted identity is configured (RFC 3325 §9.1)."""
        if self.asserted is None:
            return []
        head = f"{quote_string(self.name)} " if self.name is not None else ""
        return [("P-Asserted-Identity", f"{head}<{self.asserted}>")]


def caller_of(request: Request) -> dict[str, Any]:
    """What an incoming request says about its caller and its path, for the call report: From display
    name, URI and user, P-Asserted-Identity values, and the hops (Via, Record-Route) it came through."""
    try:
        from_ = request.from_
        display, uri, user = from_.display, str(from_.uri), from_.uri.user
    except SipError:
        display, uri, user = None, request.headers.get("From", ""), None
    return {
        "name": display,
        "uri": uri,
        "user": user,
        "asserted_identity": request.headers.values("P-Asserted-Identity"),
        "via": request.headers.values("Via"),
        "record_route": request.headers.values("Record-Route"),
    }
