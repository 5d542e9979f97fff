"""What a destination typed by a user becomes on the wire: a SIP URI, a telephone number or an extension.

A SIP URI is dialled as written. A telephone number is what users type: ``+49 (30) 123-456``, ``030/1234``,
``tel:+49-30-123``; the visual separators (space, ``-``, ``.``, ``(``, ``)``, ``/``; RFC 3966 §5.1.1) are
dropped, and the line's dial plan says how a trunk wants it: ``prefix`` replaces the ``+`` of an E.164
number (``00`` for a carrier that wants international format without ``+``, ``""`` for none; by default
``+`` stays) and ``user_phone`` adds ``;user=phone`` to the Request-URI (RFC 3261 §19.1.1: the user part
is a telephone number). An extension (``2000``, ``fax``, ``*97``) goes to the line's server as is.
Anything else is refused with ``BadDestination``: the user's input, not the network's fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from sip.errors import SipError
from sip.registration import normalize_registrar
from sip.uri import SipUri

__all__ = ["BadDestination", "DialPlan", "dial_uri", "normalize_number"]

#: E.164 §6.1: at most 15 digits after the country code's ``+``.
MAX_E164_DIGITS = 15
_SEPARATORS = re.compile(r"[\s\-.()/]")
_NUMBER = re.compile(r"^\+?[0-9]+$")
_EXTENSION = re.compile(r"^[A-Za-z0-9*#][A-Za-z0-9*#_.!~'-]*$")
_PREFIX = re.compile(r"^(\+|[0-9*#]{0,8})$")


class BadDestination(ValueError):
    """A destination that cannot be dialled (the user's input, not the network's fault)."""


@dataclass(frozen=True, slots=True)
class DialPlan:
    """How a line dials telephone numbers: ``prefix`` replaces the ``+`` of an E.164 number (None keeps
    it), ``user_phone`` marks a dialled number with ``;user=phone``."""

    prefix: str | None = None
    user_phone: bool = False

    def __post_init__(self) -> None:
        if self.prefix is not None and not _PREFIX.match(self.prefix):
            raise ValueError(f"a dial prefix is '+' or up to 8 digits (* and # allowed), not {self.prefix!r}")

    def number(self, number: str) -> str:
        """A normalised number (``+4930123``, ``030123``) as this plan dials it."""
        if number.startswith("+") and self.prefix is not None:
            return self.prefix + number[1:]
        return number


def normalize_number(text: str) -> str | None:
    """``text`` as a telephone number without visual separators (``+4930123456``), or None when it is not
    one. Raises ``BadDestination`` for a ``+`` number longer than E.164 allows."""
    body = text.strip()
    if body.lower().startswith("tel:"):
        body = body[4:]
        if ";" in body:
            raise BadDestination(f"{text!r}: a tel: URI with parameters is not dialled: give the number")
    digits = _SEPARATORS.sub("", body)
    if not _NUMBER.match(digits):
        return None
    if digits.startswith("+") and len(digits) - 1 > MAX_E164_DIGITS:
        raise BadDestination(f"{text!r} has {len(digits) - 1} digits; an E.164 number has at most 15")
    return digits


def dial_uri(to: str, server: str | None, line: str = "the line", plan: DialPlan | None = None) -> str:
    """``to`` as a SIP URI: a number or an extension goes to the line's ``server`` (``sip:2000@pbx``).

    Raises BadDestination for anything that cannot be dialled."""
    plan = plan or DialPlan()
    to = to.strip()
    if to.lower().startswith(("sip:", "sips:")):
        try:
            SipUri.parse(to)
        except SipError as exc:
            raise BadDestination(f"destination {to!r} is not a valid SIP URI: {exc}") from None
        return to
    number = normalize_number(to)
    if number is None and (not to or not _EXTENSION.match(to)):
        hint = f" (a SIP URI is written sip:{to})" if "@" in to and " " not in to else ""
        raise BadDestination(
            f"destination {to!r} is neither a SIP URI, a telephone number nor an extension{hint}"
        )
    if not server:
        raise BadDestination(f"destination {to!r} is not a SIP URI and {line} has no server")
    registrar = normalize_registrar(server)
    host = f"{registrar.host}:{registrar.port}" if registrar.port else registrar.host
    if number is None:  # an extension; '#' must be escaped in a user part (RFC 3261 §25.1)
        return f"sip:{quote(to, safe='*_.!~-' + chr(39))}@{host}"
    user = plan.number(number)
    return f"sip:{quote(user, safe='+*')}@{host}" + (";user=phone" if plan.user_phone else "")
