"""Console sessions and CSRF tokens: stateless, derived from the API token with HMAC.

Why stateless: ``vfax serve --workers N`` runs the API in several processes behind one socket, and a
cluster runs several nodes; a session made by one must be accepted by all of them without shared memory.
A session cookie is ``<issued>.<nonce>.<mac>`` where ``mac = HMAC(key, "<issued>.<nonce>")`` and ``key`` is
derived from the API token, so a session is worth no more than the token it was made from, and changing
the token ends every session. The CSRF token of a session is ``HMAC(key, "csrf" + session)``: a page
gets it in a ``<meta>`` element, scripts send it as ``X-CSRF-Token``, forms as the ``csrf`` field.
A request that carries ``Authorization: Bearer`` needs no CSRF token (a browser never adds that header
on its own). Pure functions: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie

#: The name of the session cookie.
COOKIE = "vfax_session"
#: The header (lower case, as ASGI gives it) and the form field that carry the CSRF token.
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf"
#: A session lasts this long from the login (the cookie's Max-Age as well).
SESSION_SECONDS = 12 * 3600


def _key(token: str) -> bytes:
    return hashlib.sha256(b"vfax console session key\0" + token.encode()).digest()


def _mac(token: str, text: str) -> str:
    digest = hmac.new(_key(token), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_session(token: str, now: float) -> str:
    """A fresh session cookie value for a login with ``token`` at ``now``."""
    body = f"{int(now)}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_mac(token, body)}"


def check_session(value: str | None, token: str, now: float) -> str | None:
    """The session (the cookie value) if it was made from ``token`` and has not expired; else None."""
    if not value or value.count(".") != 2:
        return None
    issued, nonce, mac = value.split(".")
    if not issued.isdigit() or not nonce:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(token, f"{issued}.{nonce}").encode()):
        return None
    if not int(issued) <= now < int(issued) + SESSION_SECONDS:
        return None
    return value


def csrf_token(token: str, session: str) -> str:
    """The CSRF token of ``session``."""
    return _mac(token, "csrf\0" + session)


def csrf_matches(token: str, session: str, given: str | bytes | None) -> bool:
    """Constant-time check of a CSRF token a request sent."""
    if not given:
        return False
    text = given.decode("latin-1") if isinstance(given, bytes) else given
    return hmac.compare_digest(text.strip().encode(), csrf_token(token, session).encode())


def session_cookie(header: bytes | None) -> str | None:
    """The session cookie's value out of a ``Cookie:`` header (None if absent or unparsable)."""
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def token_equals(given: str, token: str) -> bool:
    """Constant-time comparison of a token typed into the login form with the API token."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


# --------------------------------------------------------------------------------------------------
# Which console paths the API's guard lets through without a session
# --------------------------------------------------------------------------------------------------

#: The login page (GET shows the form, POST checks the token).
LOGIN_PATH = "/login"
#: The console's own scripts and style sheet: public, they hold nothing secret.
STATIC_PREFIX = "/static/"
#: Console form posts that check the CSRF form field themselves (the guard cannot read a form body).
FORM_CSRF_PATHS = frozenset({"/logout"})


def auth_free(path: str) -> bool:
    """Paths that need neither token nor session: the login form and the static files."""
    return path == LOGIN_PATH or path.startswith(STATIC_PREFIX)


def checks_form_csrf(path: str) -> bool:
    return path in FORM_CSRF_PATHS


def safe_next(value: str | None) -> str:
    """Where to go after the login: a path on this site only (no ``//host`` or ``https://``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value
