"""SIP digest authentication (RFC 3261 §22, RFC 7616 computations, RFC 8760 SHA-256 for SIP).

``DigestClient`` answers 401 (WWW-Authenticate → Authorization) and 407 (Proxy-Authenticate →
Proxy-Authorization) challenges: MD5, MD5-sess, SHA-256, SHA-256-sess (and SHA-512-256 where hashlib has
it), qop ``auth``/``auth-int`` with a per-nonce nonce-count, and the no-qop RFC 2069 form. It also says what
a new challenge means: first challenge, stale nonce (resend without asking anyone), or refused credentials
(give up). ``DigestVerifier`` is the server half, for tests and fake registrars.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sip.errors import SipParseError
from sip.message import Request, Response
from sip.uri import is_token, quote_string, split_header_values, unquote_string

__all__ = [
    "AuthVerdict",
    "DigestChallenge",
    "DigestClient",
    "DigestVerifier",
    "VerifyResult",
    "digest_response",
    "parse_auth_params",
]

log = logging.getLogger(__name__)

_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
if "sha512_256" in hashlib.algorithms_available:  # pragma: no branch - depends on the OpenSSL build
    _HASHES["SHA-512-256"] = "sha512_256"

#: Preference when a server offers several algorithms in one realm: the strongest we know.
SUPPORTED_ALGORITHMS = tuple(
    a + s for a in ("SHA-512-256", "SHA-256", "MD5") if a in _HASHES for s in ("", "-SESS")
)


def _base_algorithm(algorithm: str) -> tuple[str, bool]:
    """``("SHA-256", True)`` for ``sha-256-sess``; raises ``SipParseError`` for unknown algorithms."""
    alg = algorithm.upper()
    sess = alg.endswith("-SESS")
    base = alg[:-5] if sess else alg
    if base not in _HASHES:
        raise SipParseError(f"unsupported digest algorithm {algorithm[:30]!r}")
    return base, sess


def _h(base: str, data: str) -> str:
    return hashlib.new(_HASHES[base], data.encode("utf-8")).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 for no qop).

    ``username`` is what goes in the header (already hashed if userhash is in use: RFC 7616 §3.4.4 hashes
    only the transmitted name, A1 keeps the plain one, so pass the plain name here).
    """
    base, sess = _base_algorithm(algorithm)
    ha1 = _h(base, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        a2 = f"{method}:{uri}:{hashlib.new(_HASHES[base], body).hexdigest()}"
    else:
        a2 = f"{method}:{uri}"
    ha2 = _h(base, a2)
    if qop:
        return _h(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(base, f"{ha1}:{nonce}:{ha2}")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest realm="a", nonce="b", qop=auth`` into the scheme and unquoted, lower-cased params."""
    value = value.strip(" \t")
    scheme, _, rest = value.partition(" ")
    if not is_token(scheme):
        raise SipParseError(f"bad auth scheme in {value[:60]!r}")
    params: dict[str, str] = {}
    for item in split_header_values(rest):
        name, eq, raw = item.partition("=")
        name = name.strip(" \t").lower()
        raw = raw.strip(" \t")
        if not eq or not is_token(name):
            raise SipParseError(f"bad auth parameter {item[:40]!r}")
        params[name] = unquote_string(raw) if raw.startswith('"') else raw
    return scheme, params


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge (RFC 7616 §3.3). ``proxy`` is True when it came in Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    proxy: bool = False

    @classmethod
    def parse(cls, value: str, proxy: bool = False) -> DigestChallenge:
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise SipParseError(f"not a Digest challenge: {scheme[:20]!r}")
        if "realm" not in p or "nonce" not in p:
            raise SipParseError("Digest challenge without realm or nonce")
        qop = tuple(q.strip(" \t").lower() for q in p.get("qop", "").split(",") if q.strip(" \t"))
        return cls(
            realm=p["realm"],
            nonce=p["nonce"],
            algorithm=p.get("algorithm", "MD5"),
            qop=qop,
            opaque=p.get("opaque"),
            stale=p.get("stale", "").lower() == "true",
            userhash=p.get("userhash", "").lower() == "true",
            proxy=proxy,
        )

    def __str__(self) -> str:
        parts = [f"realm={quote_string(self.realm)}", f"nonce={quote_string(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f'qop="{",".join(self.qop)}"')
        if self.stale:
            parts.append("stale=TRUE")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    @property
    def header_name(self) -> str:
        """The request header that answers this challenge (RFC 3261 §22.2, §22.3)."""
        return "Proxy-Authorization" if self.proxy else "Authorization"

    @property
    def supported(self) -> bool:
        """True when we can answer it: known algorithm and, if qop is offered, ``auth`` or ``auth-int``."""
        try:
            _base_algorithm(self.algorithm)
        except SipParseError:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop


class AuthVerdict(enum.Enum):
    """What a 401/407 means for the request it answers."""

    RETRY = "retry"  # credentials not sent yet for this challenge: resend the request with them
    STALE = "stale"  # the credentials were right, the nonce expired: resend at once (RFC 7616 §3.3 stale)
    REJECTED = "rejected"  # the credentials were refused: give up, do not loop (wrong user or password)
    UNSUPPORTED = "unsupported"  # no challenge we can answer (scheme, algorithm or qop unknown)


class DigestClient:
    """Credentials of one SIP account and the digest state that goes with them.

    Usage: on a 401/407 call ``handle_challenge(request, response)``; on RETRY or STALE build the new
    request (new CSeq, new branch) and call ``authorize(new_request)``, which adds an Authorization or
    Proxy-Authorization for each challenge seen so far (also pre-emptively for later requests such as a
    registration refresh, with the nonce-count incremented, RFC 7616 §3.4).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        realm: str | None = None,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.realm = realm  # answer only this realm when set (never send a digest to a stranger)
        self._cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._challenges: dict[tuple[bool, str], DigestChallenge] = {}
        self._nc: dict[str, int] = {}

    @property
    def challenges(self) -> list[DigestChallenge]:
        """The challenges ``authorize`` currently answers."""
        return list(self._challenges.values())

    def handle_challenge(self, request: Request, response: Response) -> AuthVerdict:
        """Record the challenges of a 401/407 ``response`` to ``request`` and say whether to resend.

        REJECTED when ``request`` carried our first answer to a nonce and the server did not call it stale,
        or called the very nonce we used stale again (RFC 7616 §3.3). Credentials sent pre-emptively with an
        older nonce (a registration refresh after a server restart) get one RETRY with the new nonce.
        """
        if response.status not in (401, 407):
            raise ValueError(f"not a challenge: {response.status}")
        proxy = response.status == 407
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        chosen: dict[str, DigestChallenge] = {}
        for value in response.headers.get_all(header):
            try:
                ch = DigestChallenge.parse(value, proxy=proxy)
            except SipParseError as exc:
                log.debug("ignoring %s %r: %s", header, value[:80], exc)
                continue
            if not ch.supported or (self.realm is not None and ch.realm != self.realm):
                continue
            best = chosen.get(ch.realm)
            if best is None or _rank(ch) < _rank(best):
                chosen[ch.realm] = ch
        if not chosen:
            return AuthVerdict.UNSUPPORTED
        sent = self._sent_credentials(request, proxy)
        verdict = AuthVerdict.RETRY
        for realm, ch in chosen.items():
            self._challenges[(proxy, realm)] = ch
            used = sent.get(realm)
            if used is None:
                continue
            used_nonce, first_use = used
            if ch.stale and ch.nonce != used_nonce:
                if verdict is AuthVerdict.RETRY:
                    verdict = AuthVerdict.STALE
            elif ch.stale or first_use:
                verdict = AuthVerdict.REJECTED
        return verdict

    def _sent_credentials(self, request: Request, proxy: bool) -> dict[str, tuple[str, bool]]:
        """realm -> (nonce, was it the first answer to that nonce) of the credentials ``request`` carried."""
        out: dict[str, tuple[str, bool]] = {}
        for value in request.headers.get_all("Proxy-Authorization" if proxy else "Authorization"):
            try:
                scheme, p = parse_auth_params(value)
            except SipParseError:
                continue
            if scheme.lower() == "digest" and "realm" in p:
                nonce = p.get("nonce", "")
                nc = p.get("nc")
                first = nc.lstrip("0") == "1" if nc is not None else self._nc.get(nonce, 1) <= 1
                out[p["realm"]] = (nonce, first)
        return out

    def authorize(self, request: Request) -> None:
        """Add (replacing our earlier ones) an Authorization/Proxy-Authorization per known challenge."""
        for name in ("Authorization", "Proxy-Authorization"):
            realms = {r for (proxy, r) in self._challenges if proxy == (name == "Proxy-Authorization")}
            if not realms:
                continue
            keep = [v for v in request.headers.get_all(name) if _realm_of(v) not in realms]
            request.headers.remove(name)
            for v in keep:
                request.headers.add(name, v)
        for ch in self._challenges.values():
            value = self.authorization(ch, request.method, str(request.uri), request.body)
            request.headers.add(ch.header_name, value)

    def authorization(self, challenge: DigestChallenge, method: str, uri: str, body: bytes = b"") -> str:
        """The credentials for one request (RFC 7616 §3.4); uses the next nonce-count of that nonce."""
        algorithm = challenge.algorithm
        base, _ = _base_algorithm(algorithm)
        qop = ("auth" if "auth" in challenge.qop else "auth-int") if challenge.qop else None
        nc = cnonce = ""
        count = self._nc.get(challenge.nonce, 0) + 1  # uses of this nonce, counted with or without qop
        if len(self._nc) > 64 and challenge.nonce not in self._nc:
            self._nc.clear()  # old nonces are never answered again
        self._nc[challenge.nonce] = count
        if qop:
            nc = f"{count:08x}"
            cnonce = self._cnonce()
        elif "-SESS" in algorithm.upper():
            cnonce = self._cnonce()
        response = digest_response(
            algorithm=algorithm,
            username=self.username,
            realm=challenge.realm,
            password=self.password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            nc=nc,
            cnonce=cnonce,
            qop=qop,
            body=body,
        )
        username = _h(base, f"{self.username}:{challenge.realm}") if challenge.userhash else self.username
        parts = [
            f"username={quote_string(username)}",
            f"realm={quote_string(challenge.realm)}",
            f"nonce={quote_string(challenge.nonce)}",
            f"uri={quote_string(uri)}",
            f"response={quote_string(response)}",
            f"algorithm={algorithm}",
        ]
        if cnonce:
            parts.append(f"cnonce={quote_string(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={quote_string(challenge.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _rank(ch: DigestChallenge) -> int:
    """Lower is stronger; a local policy that RFC 8760 §2.4 allows over "topmost supported"."""
    alg = ch.algorithm.upper()
    return SUPPORTED_ALGORITHMS.index(alg) if alg in SUPPORTED_ALGORITHMS else len(SUPPORTED_ALGORITHMS)


def _realm_of(value: str) -> str | None:
    try:
        return parse_auth_params(value)[1].get("realm")
    except SipParseError:
        return None


class VerifyResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, nonce no longer valid: challenge again with stale=true
    BAD = "bad"  # wrong credentials, unknown user, replayed nonce-count or malformed header


class DigestVerifier:
    """The server side of digest (RFC 7616 §3.3/§3.5), for tests and fake registrars: issues nonces,
    checks credentials and nonce-counts (a replayed ``nc`` is refused).
    """

    def __init__(
        self,
        realm: str,
        passwords: Mapping[str, str],
        *,
        algorithm: str = "MD5",
        qop: tuple[str, ...] = ("auth",),
        opaque: str | None = None,
        nonce_factory: Callable[[], str] | None = None,
    ) -> None:
        _base_algorithm(algorithm)
        self.realm = realm
        self.passwords = dict(passwords)
        self.algorithm = algorithm
        self.qop = qop
        self.opaque = opaque
        self._new_nonce = nonce_factory or (lambda: secrets.token_urlsafe(24))
        self._nonces: dict[str, int] = {}  # valid nonce -> highest nc seen
        self._expired: set[str] = set()

    def challenge(self, *, stale: bool = False) -> str:
        """A WWW-Authenticate/Proxy-Authenticate value with a fresh nonce."""
        nonce = self._new_nonce()
        self._nonces[nonce] = 0
        ch = DigestChallenge(
            realm=self.realm,
            nonce=nonce,
            algorithm=self.algorithm,
            qop=self.qop,
            opaque=self.opaque,
            stale=stale,
        )
        return str(ch)

    def expire(self, nonce: str) -> None:
        """Make ``nonce`` stale: correct credentials with it now get ``STALE``."""
        if self._nonces.pop(nonce, None) is not None:
            self._expired.add(nonce)

    def verify(self, method: str, value: str, body: bytes = b"") -> VerifyResult:
        try:
            scheme, p = parse_auth_params(value)
        except SipParseError:
            return VerifyResult.BAD
        need = ("username", "realm", "nonce", "uri", "response")
        if scheme.lower() != "digest" or any(k not in p for k in need) or p["realm"] != self.realm:
            return VerifyResult.BAD
        password = self.passwords.get(p["username"])
        algorithm = p.get("algorithm", "MD5")
        if password is None or algorithm.upper() != self.algorithm.upper():
            return VerifyResult.BAD
        qop = p.get("qop")
        if (qop or self.qop) and qop not in self.qop:
            return VerifyResult.BAD
        nc = p.get("nc", "")
        expected = digest_response(
            algorithm=algorithm,
            username=p["username"],
            realm=self.realm,
            password=password,
            method=method,
            uri=p["uri"],
            nonce=p["nonce"],
            nc=nc,
            cnonce=p.get("cnonce", ""),
            qop=qop,
            body=body,
        )
        if not hmac.compare_digest(expected, p["response"].lower()):
            return VerifyResult.BAD
        nonce = p["nonce"]
        if nonce in self._expired:
            return VerifyResult.STALE
        if nonce not in self._nonces:
            return VerifyResult.BAD
        if qop:
            try:
                count = int(nc, 16)
            except ValueError:
                return VerifyResult.BAD
            if count <= self._nonces[nonce]:
                return VerifyResult.BAD
            self._nonces[nonce] = count
        return VerifyResult.OK
