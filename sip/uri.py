"""SIP addresses: SIP/SIPS/tel URIs (RFC 3261 §19.1, RFC 3966), name-addr (§20.10) and Via (§20.42, RFC 3581).

Parsing is a hand-written scan (split on the few delimiters the grammar has), no backtracking regex, so
any input costs time linear in its length. Everything malformed raises ``SipParseError`` naming the part.
Parameter names are case-insensitive (§19.1.4) and are stored lower-cased; values are kept as written, so
``str()`` of a parsed object re-parses to an equal object.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sip.errors import SipParseError

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "URI_SCHEMES",
    "NameAddr",
    "SipUri",
    "Via",
    "format_params",
    "is_token",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_params",
    "quote_string",
    "split_header_values",
    "unquote_string",
]

#: RFC 3261 §8.1.1.7: a branch starting with this cookie was made by an RFC 3261 element.
BRANCH_MAGIC_COOKIE = "z9hG4bK"

#: Schemes whose structure we parse; any other absolute URI (``mailto:``, ``urn:``) is kept opaque.
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
_SCHEME_CHARS = frozenset(string.ascii_lowercase + string.digits + "+-.")

#: RFC 3261 §25.1 ``token`` characters.
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-._")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
# Characters that never appear unescaped inside a SIP URI (RFC 3261 §25.1; RFC 2396 "unwise"/delims).
_URI_FORBIDDEN = frozenset(' \t\r\n"<>\x7f') | frozenset(chr(c) for c in range(32))

Params = dict[str, str | None]
_T = TypeVar("_T")

_MEMO_SIZE = 4096
"""Header values whose parse is remembered (per class): a dialog's From, To and Via strings come back in
every message and are read several times each; parsing them was a fifth of a call setup's SIP CPU."""


# The same sets as strings: ``not text.strip(chars)`` is an all-characters-in-set test that runs in C
# (URIs and parameters are parsed several times per SIP message; a generator per character showed up
# in the profile of a burst of calls).
_TOKEN_STR = "".join(sorted(TOKEN_CHARS))
_HOST_STR = "".join(sorted(_HOST_CHARS))
_IPV6_STR = "".join(sorted(_IPV6_CHARS))
_FORBIDDEN_RE = re.compile("[" + re.escape("".join(sorted(_URI_FORBIDDEN))) + "]")
_PARAM_VALUE_BAD_RE = re.compile(r"[ \t,;]")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return bool(text) and not text.strip(_TOKEN_STR)


def split_header_values(value: str, sep: str = ",") -> list[str]:
    """Split a header value on ``sep`` outside quoted strings and ``<...>`` (RFC 3261 §7.3.1).

    Empty elements are dropped (``a, ,b`` gives ``["a", "b"]``, as §7.3.1 lets lists have empty items).
    """
    if '"' not in value and "<" not in value:
        return [p for p in (part.strip(" \t") for part in value.split(sep)) if p]
    out: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == sep and not in_angle:
            out.append(value[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(f"unterminated quoted string in {value[:60]!r}")
    out.append(value[start:])
    return [p for p in (part.strip(" \t") for part in out) if p]


def unquote_string(text: str) -> str:
    """Return the content of an RFC 3261 ``quoted-string`` (``"a\\"b"`` gives ``a"b``)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise SipParseError(f"not a quoted string: {text[:60]!r}")
    content, end = _read_quoted(text, 0)
    if end != len(text):
        raise SipParseError(f"text after quoted string: {text[:60]!r}")
    return content


def quote_string(text: str) -> str:
    """Make an RFC 3261 ``quoted-string``, escaping ``"`` and ``\\`` (§25.1 ``quoted-pair``)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string whose ``"`` is at ``start``; return its content and the index after it."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SipParseError(f"unterminated quoted string in {text[:60]!r}")


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (generic-param, RFC 3261 §25.1) into an ordered dict.

    Names are lower-cased; a flag maps to ``None``; quoted values keep their quotes so that ``str()`` gives
    them back unchanged. Whitespace around ``;`` and ``=`` is allowed (SEMI and EQUAL carry SWS).
    """
    text = text.strip(" \t")
    if not text:
        return {}
    if text[0] != ";":
        raise SipParseError(f"expected ';' before parameters: {text[:60]!r}")
    params: Params = {}
    for part in split_header_values(text[1:], ";") if '"' in text else text[1:].split(";"):
        part = part.strip(" \t")
        if not part:
            raise SipParseError(f"empty parameter in {text[:60]!r}")
        name, eq, value = part.partition("=")
        name = name.rstrip(" \t")
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        if eq:
            value = value.lstrip(" \t")
            if value.startswith('"'):
                unquote_string(value)  # validates
            elif _PARAM_VALUE_BAD_RE.search(value):
                raise SipParseError(f"bad value of parameter {name!r}: {value[:40]!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: Params) -> str:
    """Serialize parameters as ``;name=value;flag``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (RFC 3261 §25.1 ``hostport``); an IPv6 reference keeps its brackets."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SipParseError(f"{what}: unterminated IPv6 reference {text[:60]!r}")
        host = text[: close + 1]
        inner = host[1:-1]
        if not inner or ":" not in inner or inner.strip(_IPV6_STR):
            raise SipParseError(f"{what}: bad IPv6 address {host[:60]!r}")
        rest = text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"{what}: junk after IPv6 address {text[:60]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
        if not host or host.strip(_HOST_STR):
            raise SipParseError(f"{what}: bad host {host[:60]!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise SipParseError(f"{what}: bad port {port_text[:20]!r}")
        port = int(port_text)
        if port > 65535:
            raise SipParseError(f"{what}: port {port} out of range")
    return host, port


@dataclass(slots=True, kw_only=True)
class SipUri:
    """A ``sip:``/``sips:`` URI (RFC 3261 §19.1.1) or a ``tel:`` URI (RFC 3966, number in ``user``).

    Any other scheme (``mailto:``, ``urn:``...) parses as an opaque URI: ``user`` holds everything after
    the colon, ``host`` is empty; ``is_sip`` tells them apart. A UAS answers 416 to such a Request-URI
    (§8.2.2.1, see ``validate_request``) but must accept it in To/From (RFC 4475 §3.1.1.11 unksm2).

    ``host`` is as written, an IPv6 reference with its brackets (``[2001:db8::1]``); ``host_ip`` strips
    them for socket calls. ``user`` and ``password`` keep their %-escapes.
    """

    host: str = ""
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raises ``SipParseError`` for anything that is not sip/sips/tel or is malformed."""
        text = text.strip(" \t")
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not scheme[:1].isalpha() or not all(c in _SCHEME_CHARS for c in scheme):
            raise SipParseError(f"no URI scheme in {text[:60]!r}")
        if not rest or _FORBIDDEN_RE.search(rest):
            raise SipParseError(f"bad characters in URI {text[:60]!r}")
        if scheme not in URI_SCHEMES:
            return cls(scheme=scheme, user=rest)  # opaque: RFC 3261 §19.1 absoluteURI, e.g. a To we only echo
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number:
                raise SipParseError(f"tel URI without number: {text[:60]!r}")
            return cls(scheme="tel", user=number, params=parse_params(";" + ptext) if ptext else {})
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, pcolon, pw = userinfo.partition(":")
            password = pw if pcolon else None
        rest, qmark, htext = rest.partition("?")
        hostport, semi, ptext = rest.partition(";")
        host, port = _parse_hostport(hostport, "URI")
        params = parse_params(";" + ptext) if semi else {}
        headers: dict[str, str] = {}
        if qmark:
            for item in htext.split("&"):
                if not item:
                    raise SipParseError(f"empty URI header in {text[:60]!r}")
                hname, _, hvalue = item.partition("=")
                headers[hname] = hvalue
        return cls(
            scheme=scheme, user=user, password=password, host=host, port=port, params=params, headers=headers
        )

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.user or ''}{format_params(self.params)}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += [":", self.password]
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += [":", str(self.port)]
        parts.append(format_params(self.params))
        if self.headers:
            parts += ["?", "&".join(f"{k}={v}" for k, v in self.headers.items())]
        return "".join(parts)

    @property
    def is_sip(self) -> bool:
        """True for ``sip:`` and ``sips:`` URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def host_ip(self) -> str:
        """The host without IPv6 brackets, for socket addresses."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter lower-cased (``udp``, ``tcp``, ``tls``), or None."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """True for a loose-routing URI (``;lr``, RFC 3261 §16.12.1)."""
        return "lr" in self.params

    def copy(self) -> SipUri:
        """A copy whose params and headers can be changed without touching this URI."""
        return SipUri(
            scheme=self.scheme,
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            params=dict(self.params),
            headers=dict(self.headers),
        )


@dataclass(slots=True)
class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters: From, To, Contact, Route (RFC 3261 §20.10).

    In the bare form ``sip:a@b;tag=x`` the parameters after the URI belong to the header, not to the URI
    (§20.10); ``str()`` always writes the bracketed form, which means the same.
    """

    uri: SipUri
    display: str | None = None
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse a From/To/Contact/Route value; every call returns a new object the caller may change."""
        return _memoised(_NAME_ADDR_MEMO, text, cls._parse).copy()

    @classmethod
    def check(cls, text: str) -> None:
        """Raise ``SipParseError`` as ``parse`` would, without the copy (for validators, which only read)."""
        _memoised(_NAME_ADDR_MEMO, text, cls._parse)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        s = text.strip(" \t")
        if not s:
            raise SipParseError("empty address")
        display: str | None
        if s[0] == '"':
            display, end = _read_quoted(s, 0)
            rest = s[end:].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError(f"expected '<' after display name in {s[:60]!r}")
            uri_text, after = _bracketed(rest, s)
        elif "<" in s:
            lt = s.index("<")
            name = s[:lt].strip(" \t")
            if any(c in '"<>;,' for c in name):
                raise SipParseError(f"bad display name in {s[:60]!r}")
            display = " ".join(name.split()) or None
            uri_text, after = _bracketed(s[lt:], s)
        else:
            display = None
            uri_text, semi, ptext = s.partition(";")
            if any(c in " \t" for c in uri_text.strip(" \t")):
                raise SipParseError(f"bad address {s[:60]!r}")
            after = semi + ptext
        return cls(uri=SipUri.parse(uri_text), display=display, params=parse_params(after))

    def __str__(self) -> str:
        head = f"{quote_string(self.display)} " if self.display is not None else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def copy(self) -> NameAddr:
        return NameAddr(uri=self.uri.copy(), display=self.display, params=dict(self.params))


def _bracketed(text: str, whole: str) -> tuple[str, str]:
    """Split ``<uri>rest`` into the URI text and what follows ``>``."""
    gt = text.find(">")
    if gt < 0:
        raise SipParseError(f"missing '>' in {whole[:60]!r}")
    return text[1:gt], text[gt + 1 :]


@dataclass(slots=True)
class Via:
    """One Via entry (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``.

    ``transport`` is upper-cased. rport (RFC 3581) is ``rport_requested`` (the parameter is there, with or
    without value) and ``rport`` (its value once a server filled it in).
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value; every call returns a new object the caller may change."""
        known = _memoised(_VIA_MEMO, text, cls._parse)
        return Via(known.transport, known.host, known.port, dict(known.params))

    @classmethod
    def check(cls, text: str) -> None:
        """Raise ``SipParseError`` as ``parse`` would, without the copy (for validators, which only read)."""
        _memoised(_VIA_MEMO, text, cls._parse)

    @classmethod
    def _parse(cls, text: str) -> Via:
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise SipParseError(f"Via: bad sent-protocol in {text[:60]!r}")
        name, version, rest = parts
        if name.strip(" \t").upper() != "SIP" or version.strip(" \t") != "2.0":
            raise SipParseError(f"Via: unsupported protocol {text[:30]!r}")
        rest = rest.lstrip(" \t")
        sent_by, semi, ptext = rest.partition(";")
        fields = sent_by.split(None, 1)
        if len(fields) != 2 or not is_token(fields[0]):
            raise SipParseError(f"Via: bad transport or sent-by in {text[:60]!r}")
        host, port = _parse_hostport(":".join(p.strip(" \t") for p in fields[1].split(":")), "Via")
        params = parse_params(semi + ptext)
        return cls(transport=fields[0].upper(), host=host, port=port, params=params)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the magic cookie, so it alone identifies the transaction (§17.2.3)."""
        b = self.params.get("branch")
        return b is not None and b.startswith(BRANCH_MAGIC_COOKIE)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport_requested(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The value of ``rport`` filled in by a server (RFC 3581 §4), None if absent, flag or malformed."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() and value.isascii() and len(value) <= 5 else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def stamp_source(self, host: str, port: int) -> None:
        """Record where the request really came from (RFC 3261 §18.2.1, RFC 3581 §4).

        ``received`` is added when the source address differs from sent-by, or always when rport was asked
        for; ``rport`` gets the source port when asked for.
        """
        bare = self.host[1:-1] if self.host.startswith("[") else self.host
        if self.rport_requested:
            self.params["received"] = host
            self.params["rport"] = str(port)
        elif bare != host:
            self.params["received"] = host

    def response_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where to send responses for this Via over UDP (RFC 3261 §18.2.2, RFC 3581 §4); no DNS."""
        host = self.received or (self.host[1:-1] if self.host.startswith("[") else self.host)
        port = self.rport or self.port or default_port
        return host, port

    def copy(self) -> Via:
        return Via(transport=self.transport, host=self.host, port=self.port, params=dict(self.params))


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie plus 64 random bits (§8.1.1.7)."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag: 64 random bits, more than the 32 that §19.3 asks for."""
    return secrets.token_hex(8)


def new_call_id(host: str | None = None) -> str:
    """A fresh Call-ID (§8.1.1.4): 128 random bits, ``@host`` appended when given."""
    value = secrets.token_hex(16)
    return f"{value}@{host}" if host else value


_NAME_ADDR_MEMO: dict[str, NameAddr] = {}
_VIA_MEMO: dict[str, Via] = {}


def _memoised(memo: dict[str, _T], text: str, parse: Callable[[str], _T]) -> _T:
    """``parse(text)``, remembered in ``memo`` (emptied when full). The caller copies the result:
    the remembered object itself must never be handed out."""
    known = memo.get(text)
    if known is None:
        known = parse(text)  # a parse error raises and is not remembered
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[text] = known
    return known
