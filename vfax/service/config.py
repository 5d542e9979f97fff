"""The service configuration of ``vfax serve``: one TOML file, overridable from the environment.

A fax server runs unattended, so a configuration mistake must stop it at start-up with a message that
names the key (``devices[1].t38: must be one of auto, off, only, direct, not 'maybe'``), never run with a
typo silently ignored: unknown keys are refused, every value is type-checked, listen addresses are parsed,
device names must be unique, and an API that listens beyond the loopback interface must have a token.

File layout (every key, with its default, is in ``vfax/samples/vfax.example.toml``)::

    data_dir = "/var/lib/vfax"        # required; relative paths are relative to the config file
    inbox = "..."                     # default: <data_dir>/inbox
    database = "..."                  # default: <data_dir>/vfax.db; or postgresql://USER@HOST[:PORT]/DB
    spool = "..."                     # default: <data_dir>/spool (uploaded documents of queued jobs)
    log_level = "info"
    [api]      listen, token, cors_origins, max_upload_mb
    [retry]    max_attempts, backoff, jitter, fallback_after, fallback_bitrate, fallback_ecm
    [service]  node_id, lease_seconds, heartbeat_seconds, give_up_seconds (this node of a cluster),
               forget_nodes_after (stopped or lost nodes are removed after it; default 7 days),
               worker_port_stride (vfax serve --workers: worker K's devices listen on port + K * stride)
    [[devices]] name, listen, transports, server, user, password, register, expires, keepalive_interval,
                channels, t38, ecm, max_bit_rate, ident, page_header, allow_invite_from, media_timeout,
                max_call_seconds, symmetric_media, tls_ca, tls_verify, tls_cert, tls_key, advertise,
                nameservers, outbound_proxy, caller_name, caller_number, asserted_identity, dial_prefix,
                user_phone
    [[sinks]]  type = "jsonl" (path) | "webhook" (url, secret) | "stdout"; optional name

Environment overrides (applied after the file, before validation; values are parsed as the key's type:
booleans ``true/false/1/0/yes/no/on/off``, lists comma-separated)
-------------------------------------------------------------------------------------------------
- ``VFAX_<KEY>`` for a top-level key: ``VFAX_DATA_DIR``, ``VFAX_INBOX``, ``VFAX_DATABASE``, ``VFAX_SPOOL``,
  ``VFAX_LOG_LEVEL``.
- ``VFAX_<SECTION>_<KEY>`` for the ``[api]``, ``[retry]`` and ``[service]`` tables: ``VFAX_API_TOKEN``,
  ``VFAX_API_LISTEN``, ``VFAX_RETRY_MAX_ATTEMPTS``, ``VFAX_RETRY_BACKOFF=30,60,300``,
  ``VFAX_SERVICE_LEASE_SECONDS`` ...; ``VFAX_NODE_ID`` is ``service.node_id``.
- ``VFAX_DEVICE_<NAME>_<KEY>`` for the device named NAME (matched without case; characters other than
  letters and digits in the name become ``_``): ``VFAX_DEVICE_LINE1_PASSWORD``. Devices are declared in the
  file only; a variable naming no configured device is an error.
- ``VFAX_SINK_<NAME>_<KEY>`` for a sink that has a ``name`` (e.g. ``VFAX_SINK_CRM_SECRET``).

A variable under one of these prefixes whose key is unknown (``VFAX_API_TOKNE``) is refused like an unknown
key in the file. Other ``VFAX_*`` variables (``VFAX_API`` of the CLI client, ``VFAX_SIP_PASSWORD``) are
not configuration and are ignored.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sip.errors import SipError
from sip.identity import CallerIdentity, IdentityError
from sip.registration import normalize_registrar
from vfax.call.dialing import BadDestination, DialPlan, normalize_number
from vfax.call.fax_call import CallOptions
from vfax.call.line import DEFAULT_KEEPALIVE_SECONDS, LineConfig, parse_advertise, parse_nameserver
from vfax.call.media import T38Policy
from vfax.call.tls import TlsConfigError, TlsSettings, check_tls_settings
from vfax.service.events import JsonLinesSink, Sink, WebhookSink
from vfax.store.retry import RetryPolicy

__all__ = [
    "ApiConfig",
    "ConfigError",
    "DeviceConfig",
    "NodeConfig",
    "ServiceConfig",
    "SinkConfig",
    "build_sinks",
    "device_call_options",
    "device_line_config",
    "is_loopback",
    "load_config",
    "parse_config",
    "parse_listen",
    "redact_url",
]

DEFAULT_API_LISTEN = "127.0.0.1:8025"
DEFAULT_SIP_LISTEN = "127.0.0.1:5060"
T38_CHOICES = ("auto", "off", "only", "direct")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRANSPORTS = ("udp", "tcp", "tls")
SINK_TYPES = ("jsonl", "webhook", "stdout")
#: T.30 signalling rates (V.27ter, V.29, V.17) a device may be limited to.
BIT_RATES = (2400, 4800, 7200, 9600, 12000, 14400)
MIN_TOKEN_LENGTH = 16
MAX_IDENT = 20  # T.30 §5.3.6.2.4: TSI/CSI carry 20 characters
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """An invalid configuration; ``str()`` starts with the key path (``api.listen: ...``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


# --------------------------------------------------------------------------------------------------
# The configuration records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The local HTTP API. ``token`` None means no authentication (allowed on loopback only);
    ``cors_origins`` empty means CORS off."""

    listen: str = DEFAULT_API_LISTEN
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_mb: float = 50.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def host(self) -> str:
        return parse_listen(self.listen, "api.listen")[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen, "api.listen")[1]


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One fax device: a SIP identity with its channels and fax defaults (a job may override some)."""

    name: str
    listen: str = DEFAULT_SIP_LISTEN
    transports: tuple[str, ...] = ("udp", "tcp")
    server: str | None = None
    user: str | None = None
    password: str | None = None
    register: bool = False
    expires: int = 3600
    #: OPTIONS to the registrar every so many seconds while registered; one unanswered makes the device
    #: unregistered at once (what `vfax health` reports). 0: no keep-alives.
    keepalive_interval: float = DEFAULT_KEEPALIVE_SECONDS
    channels: int = 4
    t38: str = "auto"
    ecm: bool = True
    max_bit_rate: int = 14400
    ident: str = ""  # TSI when sending, CSI when receiving
    page_header: str | None = None
    allow_invite_from: tuple[str, ...] | None = None
    media_timeout: float = 20.0
    max_call_seconds: float = 1800.0
    #: Symmetric RTP/UDPTL (send media to where the peer's comes from, learned with strict-RTP probation);
    #: None ("auto"): on when the device has a server, off otherwise (vfax.call.fax_call.CallOptions).
    symmetric_media: bool | None = None
    #: SIP over TLS: the CA file trusted for peers (None: the system's trust store), whether to verify
    #: the peer at all, our certificate (client one, and the server one of a ``tls`` listener) and its key.
    tls_ca: Path | None = None
    tls_verify: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Public address behind a NAT with forwarded ports: ``IP`` or ``IP:PORT``, written in Via, Contact
    #: and SDP (vfax.call.line.parse_advertise). Without it a registering device learns its public
    #: SIP address from the registrar (RFC 3581) and relies on symmetric media at the far end.
    advertise: str | None = None
    #: DNS servers (``IP`` or ``IP:PORT``) for RFC 3263 lookups of names in server/destinations; empty:
    #: the system's resolv.conf.
    nameservers: tuple[str, ...] = ()
    #: SIP trunk: the outbound proxy (HOST[:PORT] or a SIP URI), the From display name and user, the
    #: P-Asserted-Identity (sip:/tel: URI), what replaces the + of an E.164 number, and ;user=phone.
    outbound_proxy: str | None = None
    caller_name: str | None = None
    caller_number: str | None = None
    asserted_identity: str | None = None
    dial_prefix: str | None = None
    user_phone: bool = False

    def __repr__(self) -> str:  # never print the SIP password into a log
        shown = "***" if self.password else None
        return (
            f"DeviceConfig(name={self.name!r}, listen={self.listen!r}, server={self.server!r},"
            f" password={shown})"
        )


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Where events go: ``jsonl`` (``path``), ``webhook`` (``url`` + ``secret``) or ``stdout``.
    ``name`` keys the delivery records in the store: keep it stable across restarts."""

    type: str
    path: Path | None = None
    url: str | None = None
    secret: str | None = None
    name: str | None = None

    def __repr__(self) -> str:
        return f"SinkConfig(type={self.type!r}, path={self.path!r}, url={self.url!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """This ``vfax serve`` as a node of a cluster sharing one database (``[service]``).

    ``node_id`` None: ``host:pid:token``, new at each start (the form crash recovery can check for a dead
    pid on this host). A node that cannot heartbeat for ``give_up_seconds`` aborts its calls itself, before
    its leases (``lease_seconds``) expire and another node may retry them: hence give-up < lease."""

    node_id: str | None = None
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 10.0
    give_up_seconds: float = 30.0
    #: ``vfax serve --workers N``: worker K's devices listen on their port + K * stride (a port 0 stays 0).
    worker_port_stride: int = 10
    #: Nodes stopped or lost for longer than this are removed from the store (and from ``vfax nodes``).
    forget_nodes_after: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    data_dir: Path
    inbox: Path
    #: A SQLite file (a Path), or a PostgreSQL URL (a str starting with postgresql:// or postgres://).
    database: Path | str
    spool: Path
    api: ApiConfig = field(default_factory=ApiConfig)
    devices: tuple[DeviceConfig, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sinks: tuple[SinkConfig, ...] = ()
    log_level: str = "info"
    node: NodeConfig = field(default_factory=NodeConfig)

    @property
    def is_postgres(self) -> bool:
        return isinstance(self.database, str)

    @property
    def database_shown(self) -> str:
        """The database for messages and logs: the path, or the URL without its password."""
        return redact_url(self.database) if isinstance(self.database, str) else str(self.database)

    def device(self, name: str) -> DeviceConfig:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# Value checks (each names the key path)
# --------------------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _str(key: str, value: object, *, empty: bool = True, max_len: int = 1024) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, not {_type_name(value)}")
    if not empty and not value.strip():
        raise ConfigError(key, "must not be empty")
    if len(value) > max_len:
        raise ConfigError(key, f"must be at most {max_len} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(key, "must not contain control characters")
    return value


def _int(key: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, not {_type_name(value)}")
    if lo is not None and value < lo:
        raise ConfigError(key, f"must be >= {lo}, not {value}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be <= {hi}, not {value}")
    return value


def _float(key: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, not {value}")
    if lo is not None and number < lo:
        raise ConfigError(key, f"must be >= {lo:g}, not {value}")
    if hi is not None and number > hi:
        raise ConfigError(key, f"must be <= {hi:g}, not {value}")
    return number


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {_type_name(value)}")
    return value


def _auto_bool(key: str, value: object) -> bool | None:
    """``"auto"`` (None: decided elsewhere), true or false."""
    if value == "auto":
        return None
    if not isinstance(value, bool):
        got = repr(value) if isinstance(value, str) else _type_name(value)
        raise ConfigError(key, f"must be \"auto\", true or false, not {got}")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    text = _str(key, value)
    if text not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}, not {text!r}")
    return text


def _list(key: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list, not {_type_name(value)}")
    return value


def _str_list(key: str, value: object) -> tuple[str, ...]:
    return tuple(_str(f"{key}[{i}]", v, empty=False) for i, v in enumerate(_list(key, value)))


def _table(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table, not {_type_name(value)}")
    return value


def _no_unknown(prefix: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for name in table:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(where, f"unknown key (known keys: {', '.join(known)})")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses of the loopback interface (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into ``(host, port)``; the host is an IP address or
    ``localhost``, the port 0..65535 (0: any free port)."""
    text = _str(key, value, empty=False)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(key, f"must be HOST:PORT ([ADDRESS]:PORT for IPv6), not {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(key, f"must be HOST:PORT ([ADDRESS]:PORT for IPv6), not {text!r}")
    if host.lower() != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(key, f"host must be an IP address or localhost, not {host!r}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"port must be a number 0..65535, not {port!r}")
    return host, int(port)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------

_TOP_KEYS = (
    "data_dir", "inbox", "database", "spool", "log_level", "api", "retry", "service", "devices", "sinks",
)  # fmt: skip
_SERVICE_KEYS = (
    "database", "node_id", "lease_seconds", "heartbeat_seconds", "give_up_seconds", "worker_port_stride",
    "forget_nodes_after",
)  # fmt: skip
_API_KEYS = ("listen", "token", "cors_origins", "max_upload_mb")
_RETRY_KEYS = ("max_attempts", "backoff", "jitter", "fallback_after", "fallback_bitrate", "fallback_ecm")
_DEVICE_KEYS = (
    "name",
    "listen",
    "transports",
    "server",
    "user",
    "password",
    "register",
    "expires",
    "keepalive_interval",
    "channels",
    "t38",
    "ecm",
    "max_bit_rate",
    "ident",
    "page_header",
    "allow_invite_from",
    "media_timeout",
    "max_call_seconds",
    "symmetric_media",
    "tls_ca",
    "tls_verify",
    "tls_cert",
    "tls_key",
    "advertise",
    "nameservers",
    "outbound_proxy",
    "caller_name",
    "caller_number",
    "asserted_identity",
    "dial_prefix",
    "user_phone",
)
_SINK_KEYS = ("type", "name", "path", "url", "secret")

# How an environment value is parsed, per key (anything not listed is a string).
_ENV_KINDS: dict[str, str] = {
    "max_upload_mb": "float",
    "cors_origins": "list",
    "max_attempts": "int",
    "backoff": "floats",
    "jitter": "float",
    "fallback_after": "int",
    "fallback_bitrate": "int",
    "fallback_ecm": "bool",
    "transports": "list",
    "register": "bool",
    "expires": "int",
    "keepalive_interval": "float",
    "channels": "int",
    "ecm": "bool",
    "max_bit_rate": "int",
    "allow_invite_from": "list",
    "nameservers": "list",
    "media_timeout": "float",
    "max_call_seconds": "float",
    "symmetric_media": "autobool",
    "tls_verify": "bool",
    "user_phone": "bool",
    "lease_seconds": "float",
    "heartbeat_seconds": "float",
    "give_up_seconds": "float",
    "worker_port_stride": "int",
    "forget_nodes_after": "float",
}
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")


def _path(key: str, value: object, base: Path) -> Path:
    path = Path(os.path.expanduser(_str(key, value, empty=False)))
    return path if path.is_absolute() else base / path


def _api(table: dict[str, Any]) -> ApiConfig:
    _no_unknown("api", table, _API_KEYS)
    listen = _str("api.listen", table.get("listen", DEFAULT_API_LISTEN))
    host, _ = parse_listen(listen, "api.listen")
    token = table.get("token")
    if token is not None:
        token = _str("api.token", token)
        if not token:
            token = None
        elif len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError("api.token", f"must be at least {MIN_TOKEN_LENGTH} characters")
        elif any(c.isspace() for c in token):
            raise ConfigError("api.token", "must not contain white space")
    if token is None and not is_loopback(host):
        raise ConfigError("api.token", f"required when the API listens on a non-loopback address ({listen})")
    origins = _str_list("api.cors_origins", table.get("cors_origins", []))
    for i, origin in enumerate(origins):
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"api.cors_origins[{i}]", f"must be an origin like http://host:port, not {origin!r}"
            )
    max_upload = _float("api.max_upload_mb", table.get("max_upload_mb", 50.0), lo=0.001, hi=4096)
    return ApiConfig(listen=listen, token=token, cors_origins=origins, max_upload_mb=max_upload)


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://vfax:***@host/db``): for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return "<unparsable URL>"


def parse_database(key: str, value: object, base: Path) -> Path | str:
    """A PostgreSQL URL (kept as a string) or a SQLite file path (a Path, relative to ``base``).

    Anything else (another URL scheme, a directory, a path under a file) is refused here, naming ``key``;
    whether the database can really be opened is checked when the service opens it."""
    text = _str(key, value, empty=False)
    scheme = _URL_SCHEME.match(text)
    if scheme is not None and scheme.group(1).lower() in _POSTGRES_SCHEMES:
        shown = redact_url(text)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(key, f"not a valid PostgreSQL URL ({exc}): {shown!r}") from None
        if not parts.path.strip("/") and "dbname=" not in parts.query:
            raise ConfigError(key, f"names no database (postgresql://USER@HOST[:PORT]/DATABASE): {shown!r}")
        if port == 0:
            raise ConfigError(key, f"port must be 1..65535: {shown!r}")
        return text
    if scheme is not None and ("://" in text or scheme.group(1).lower() in ("sqlite", "mysql", "file")):
        raise ConfigError(
            key,
            f"must be a SQLite file path or a PostgreSQL URL (postgresql://USER@HOST[:PORT]/DATABASE),"
            f" not a {scheme.group(1)}: URL ({redact_url(text)!r})",
        )
    path = _path(key, text, base)
    if path.is_dir():
        raise ConfigError(key, f"{path} is a directory, not a SQLite database file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(key, f"{path} is not usable: {parent} is a file, not a directory")
            break
    return path


def _node(table: dict[str, Any]) -> NodeConfig:
    _no_unknown("service", table, _SERVICE_KEYS)
    d = NodeConfig()
    node_id = table.get("node_id")
    if node_id is not None:
        node_id = _str("service.node_id", node_id, empty=False, max_len=100)
        if not _NODE_ID.match(node_id):
            raise ConfigError(
                "service.node_id",
                f"must be 1-100 letters, digits, '.', '_', ':', '@' or '-' (starting with a letter or digit),"
                f" not {node_id!r}",
            )
    lease = _float("service.lease_seconds", table.get("lease_seconds", d.lease_seconds), 2.0, 86400)
    beat = _float("service.heartbeat_seconds", table.get("heartbeat_seconds", d.heartbeat_seconds), 0.1, 3600)
    give_up = _float("service.give_up_seconds", table.get("give_up_seconds", d.give_up_seconds), 0.5, 86400)
    if give_up >= lease:
        raise ConfigError(
            "service.give_up_seconds",
            f"must be less than service.lease_seconds ({lease:g}), not {give_up:g}: a node cut off from the"
            " database must stop its calls before another node may take its jobs over",
        )
    if beat >= give_up:
        raise ConfigError(
            "service.heartbeat_seconds",
            f"must be less than service.give_up_seconds ({give_up:g}), not {beat:g}",
        )
    stride = _int(
        "service.worker_port_stride", table.get("worker_port_stride", d.worker_port_stride), 1, 1000
    )
    forget = _float(
        "service.forget_nodes_after", table.get("forget_nodes_after", d.forget_nodes_after), 60.0, 3.2e8
    )
    if forget <= lease:
        raise ConfigError(
            "service.forget_nodes_after",
            f"must be more than service.lease_seconds ({lease:g}), not {forget:g}: a node is forgotten only"
            " well after it was declared lost",
        )
    return NodeConfig(
        node_id=node_id,
        lease_seconds=lease,
        heartbeat_seconds=beat,
        give_up_seconds=give_up,
        worker_port_stride=stride,
        forget_nodes_after=forget,
    )


def _retry(table: dict[str, Any]) -> RetryPolicy:
    _no_unknown("retry", table, _RETRY_KEYS)
    d = RetryPolicy()
    backoff = _list("retry.backoff", table.get("backoff", list(d.backoff)))
    if not backoff:
        raise ConfigError("retry.backoff", "must list at least one delay in seconds")
    return RetryPolicy(
        max_attempts=_int("retry.max_attempts", table.get("max_attempts", d.max_attempts), 1, 100),
        backoff=tuple(_float(f"retry.backoff[{i}]", b, 0.0, 7 * 86400) for i, b in enumerate(backoff)),
        jitter=_float("retry.jitter", table.get("jitter", d.jitter), 0.0, 0.99),
        fallback_after=_int("retry.fallback_after", table.get("fallback_after", d.fallback_after), 1, 100),
        fallback_bitrate=_choice_int(
            "retry.fallback_bitrate", table.get("fallback_bitrate", d.fallback_bitrate), BIT_RATES
        ),
        fallback_ecm=_bool("retry.fallback_ecm", table.get("fallback_ecm", d.fallback_ecm)),
    )


def _choice_int(key: str, value: object, choices: tuple[int, ...]) -> int:
    number = _int(key, value)
    if number not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(str, choices))}, not {number}")
    return number


def _device(key: str, table: dict[str, Any], base: Path) -> DeviceConfig:
    _no_unknown(key, table, _DEVICE_KEYS)
    if "name" not in table:
        raise ConfigError(f"{key}.name", "required")
    name = _str(f"{key}.name", table["name"], empty=False)
    if not _NAME.match(name):
        raise ConfigError(
            f"{key}.name",
            f"must be 1-32 letters, digits, - or _ (starting with a letter or digit), not {name!r}",
        )
    d = DeviceConfig(name=name)
    listen = _str(f"{key}.listen", table.get("listen", d.listen))
    parse_listen(listen, f"{key}.listen")
    transports = _str_list(f"{key}.transports", table.get("transports", list(d.transports)))
    if not transports:
        raise ConfigError(f"{key}.transports", f"must list at least one of {', '.join(TRANSPORTS)}")
    for i, t in enumerate(transports):
        _choice(f"{key}.transports[{i}]", t, TRANSPORTS)
    if len(set(transports)) != len(transports):
        raise ConfigError(f"{key}.transports", "lists a transport twice")

    def opt_str(k: str, **kw: Any) -> str | None:
        v = table.get(k)
        return None if v is None else _str(f"{key}.{k}", v, **kw)

    server = opt_str("server", empty=False)
    user = opt_str("user", empty=False, max_len=128)
    password = opt_str("password", max_len=256)
    register = _bool(f"{key}.register", table.get("register", d.register))
    if register:
        for k, v in (("server", server), ("user", user), ("password", password)):
            if v is None:
                raise ConfigError(f"{key}.{k}", "required when register = true")
    ident = _str(f"{key}.ident", table.get("ident", d.ident), max_len=MAX_IDENT)
    if not ident.isascii():
        raise ConfigError(f"{key}.ident", f"must be ASCII (a T.30 TSI/CSI), not {ident!r}")
    allow = table.get("allow_invite_from")
    ka_key = f"{key}.keepalive_interval"
    keepalive = _float(ka_key, table.get("keepalive_interval", d.keepalive_interval), 0, 3600)
    if 0 < keepalive < 1:
        raise ConfigError(ka_key, f"must be 0 (off) or at least 1 second, not {keepalive:g}")

    def opt_path(k: str) -> Path | None:  # "" (the sample's) is the same as leaving the key out
        v = opt_str(k)
        return (base / Path(v).expanduser()) if v else None

    tls = TlsSettings(
        ca=opt_path("tls_ca"), verify=_bool(f"{key}.tls_verify", table.get("tls_verify", True)),
        cert=opt_path("tls_cert"), key=opt_path("tls_key"),
    )  # fmt: skip
    if "tls" in transports and tls.cert is None:
        raise ConfigError(f"{key}.tls_cert", "required when transports lists tls")
    advertise = opt_str("advertise") or None
    if advertise is not None:
        try:
            parse_advertise(advertise)
        except ValueError as exc:
            raise ConfigError(f"{key}.advertise", str(exc)) from None
    nameservers = _str_list(f"{key}.nameservers", table.get("nameservers", []))
    for i, dns in enumerate(nameservers):
        try:
            parse_nameserver(dns)
        except ValueError as exc:
            raise ConfigError(f"{key}.nameservers[{i}]", str(exc)) from None
    try:  # the files are read now: a bad one is a config error naming its key, not a failure at start
        check_tls_settings(tls)
    except TlsConfigError as exc:
        raise ConfigError(f"{key}.{exc.key}", str(exc).removeprefix(f"{exc.key}: ")) from None
    trunk = _trunk(key, opt_str)
    return DeviceConfig(
        name=name,
        listen=listen,
        transports=transports,
        server=server,
        user=user,
        password=password,
        register=register,
        expires=_int(f"{key}.expires", table.get("expires", d.expires), 60, 86400),
        keepalive_interval=keepalive,
        channels=_int(f"{key}.channels", table.get("channels", d.channels), 1, 1000),
        t38=_choice(f"{key}.t38", table.get("t38", d.t38), T38_CHOICES),
        ecm=_bool(f"{key}.ecm", table.get("ecm", d.ecm)),
        max_bit_rate=_choice_int(f"{key}.max_bit_rate", table.get("max_bit_rate", d.max_bit_rate), BIT_RATES),
        ident=ident,
        page_header=opt_str("page_header", max_len=100),
        allow_invite_from=None if allow is None else _str_list(f"{key}.allow_invite_from", allow),
        advertise=advertise,
        nameservers=tuple(nameservers),
        media_timeout=_float(f"{key}.media_timeout", table.get("media_timeout", d.media_timeout), 1.0, 3600),
        max_call_seconds=_float(
            f"{key}.max_call_seconds", table.get("max_call_seconds", d.max_call_seconds), 10.0, 86400
        ),
        symmetric_media=_auto_bool(f"{key}.symmetric_media", table.get("symmetric_media", "auto")),
        tls_ca=tls.ca,
        tls_verify=tls.verify,
        tls_cert=tls.cert,
        tls_key=tls.key,
        user_phone=_bool(f"{key}.user_phone", table.get("user_phone", False)),
        **trunk,
    )


_IDENTITY_KEYS = {"name": "caller_name", "user": "caller_number", "asserted": "asserted_identity"}


def _trunk(key: str, opt_str: Callable[..., str | None]) -> dict[str, Any]:
    """The SIP trunk keys of a device, each checked as the line will use it ("" is the same as unset)."""
    values = {k: opt_str(k, max_len=256) or None for k in (*_IDENTITY_KEYS.values(), "outbound_proxy")}
    prefix = opt_str("dial_prefix", max_len=16)
    proxy = values["outbound_proxy"]
    if proxy is not None:
        try:
            normalize_registrar(proxy)
        except SipError as exc:
            raise ConfigError(f"{key}.outbound_proxy", f"must be HOST[:PORT] or a SIP URI: {exc}") from None
    number = values["caller_number"]
    if number is not None:
        try:  # a number as people write it ("+49 30 123-456") is sent without its separators
            values["caller_number"] = normalize_number(number) or number
        except BadDestination as exc:
            raise ConfigError(f"{key}.caller_number", str(exc)) from None
    try:
        CallerIdentity(values["caller_name"], values["caller_number"], values["asserted_identity"])
    except IdentityError as exc:
        raise ConfigError(f"{key}.{_IDENTITY_KEYS[exc.field]}", str(exc)) from None
    try:
        DialPlan(prefix=prefix)
    except ValueError as exc:
        raise ConfigError(f"{key}.dial_prefix", str(exc)) from None
    return values | {"dial_prefix": prefix}


def _sink(key: str, table: dict[str, Any], base: Path) -> SinkConfig:
    _no_unknown(key, table, _SINK_KEYS)
    if "type" not in table:
        raise ConfigError(f"{key}.type", f"required (one of {', '.join(SINK_TYPES)})")
    kind = _choice(f"{key}.type", table["type"], SINK_TYPES)
    name = table.get("name")
    if name is not None:
        name = _str(f"{key}.name", name, empty=False)
        if not _NAME.match(name):
            raise ConfigError(f"{key}.name", f"must be 1-32 letters, digits, '-' or '_', not {name!r}")
    allowed = {"jsonl": ("path",), "webhook": ("url", "secret"), "stdout": ()}[kind]
    for k in ("path", "url", "secret"):
        if k in table and k not in allowed:
            raise ConfigError(f"{key}.{k}", f"not used by a {kind} sink")
        if k not in table and k in allowed:
            raise ConfigError(f"{key}.{k}", f"required for a {kind} sink")
    path = _path(f"{key}.path", table["path"], base) if kind == "jsonl" else None
    url = secret = None
    if kind == "webhook":
        url = _str(f"{key}.url", table["url"], empty=False)
        if not re.match(r"^https?://[^/\s?#]+", url):
            raise ConfigError(f"{key}.url", f"must be an http:// or https:// URL, not {url!r}")
        secret = _str(f"{key}.secret", table["secret"], empty=False)
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{key}.secret", f"must be at least {MIN_TOKEN_LENGTH} characters")
    return SinkConfig(type=kind, path=path, url=url, secret=secret, name=name)


# --------------------------------------------------------------------------------------------------
# Environment overrides
# --------------------------------------------------------------------------------------------------


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _env_value(var: str, key: str, text: str) -> Any:
    kind = _ENV_KINDS.get(key, "str")
    try:
        if kind == "int":
            return int(text.strip())
        if kind == "float":
            return float(text.strip())
        if kind == "floats":
            return [float(x) for x in text.split(",") if x.strip()]
        if kind == "list":
            return [x.strip() for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(var, f"{text!r} is not a valid value for {key}") from None
    if kind == "autobool" and text.strip().lower() == "auto":
        return "auto"
    if kind in ("bool", "autobool"):
        flag = text.strip().lower()
        if flag in ("1", "true", "yes", "on"):
            return True
        if flag in ("0", "false", "no", "off"):
            return False
        raise ConfigError(var, f"must be {'auto, ' if kind == 'autobool' else ''}true or false, not {text!r}")
    return text


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Write the ``VFAX_*`` overrides into the parsed TOML (see the module docstring)."""
    for var in sorted(environ):
        if not var.startswith("VFAX_"):
            continue
        rest = var[len("VFAX_") :]
        text = environ[var]
        top = rest.lower()
        if top in ("data_dir", "inbox", "database", "spool", "log_level"):
            service = data.get("service")
            if top == "database" and isinstance(service, dict):
                service.pop("database", None)  # the variable replaces the file's value, wherever it is
            data[top] = text
            continue
        if top == "node_id":
            table = data.setdefault("service", {})
            if isinstance(table, dict):
                table["node_id"] = text
            continue
        for section, keys in (("api", _API_KEYS), ("retry", _RETRY_KEYS), ("service", _SERVICE_KEYS)):
            if top.startswith(section + "_"):
                key = top[len(section) + 1 :]
                if key not in keys:
                    raise ConfigError(var, f"unknown key {section}.{key} (known keys: {', '.join(keys)})")
                table = data.setdefault(section, {})
                if isinstance(table, dict):
                    table[key] = _env_value(var, key, text)
                break
        else:
            for prefix, listname, keys in (
                ("DEVICE_", "devices", _DEVICE_KEYS),
                ("SINK_", "sinks", _SINK_KEYS),
            ):
                if rest.startswith(prefix):
                    _apply_list_env(data, var, rest[len(prefix) :], listname, keys, text)


def _apply_list_env(
    data: dict[str, Any], var: str, rest: str, listname: str, keys: tuple[str, ...], text: str
) -> None:
    entries = data.get(listname)
    best: dict[str, Any] | None = None
    best_len = -1
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        prefix = _env_key(name) + "_"
        if rest.startswith(prefix) and len(prefix) > best_len:
            best, best_len = entry, len(prefix)
    what = listname[:-1]
    if best is None:
        raise ConfigError(var, f"no {what} with a matching name is configured (set {listname} in the file)")
    key = rest[best_len:].lower()
    if key not in keys or key == "name":
        raise ConfigError(
            var, f"unknown {what} key {key!r} (known keys: {', '.join(k for k in keys if k != 'name')})"
        )
    best[key] = _env_value(var, key, text)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path | str = ".", environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Validate parsed TOML (plus ``environ`` overrides) into a :class:`ServiceConfig`."""
    raw: dict[str, Any] = _deep_copy(dict(data))
    if environ is not None:
        _apply_env(raw, environ)
    base = Path(base_dir).resolve()
    _no_unknown("", raw, _TOP_KEYS)
    if "data_dir" not in raw:
        raise ConfigError("data_dir", "required (where the database, inbox and spool live)")
    data_dir = _path("data_dir", raw["data_dir"], base)
    inbox = _path("inbox", raw["inbox"], base) if "inbox" in raw else data_dir / "inbox"
    service = _table("service", raw.get("service", {}))
    if "database" in raw and "database" in service:
        raise ConfigError("service.database", "set either database or service.database, not both")
    if "database" in service:
        database = parse_database("service.database", service.pop("database"), base)
    elif "database" in raw:
        database = parse_database("database", raw["database"], base)
    else:
        database = data_dir / "vfax.db"
    node = _node(service)
    spool = _path("spool", raw["spool"], base) if "spool" in raw else data_dir / "spool"
    log_level = _choice("log_level", raw.get("log_level", "info"), LOG_LEVELS)
    api = _api(_table("api", raw.get("api", {})))
    retry = _retry(_table("retry", raw.get("retry", {})))
    devices: list[DeviceConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(_list("devices", raw.get("devices", []))):
        dev = _device(f"devices[{i}]", _table(f"devices[{i}]", entry), base)
        folded = _env_key(dev.name)
        if folded in seen:
            raise ConfigError(
                f"devices[{i}].name",
                f"duplicate device name {dev.name!r} (same as devices[{seen[folded]}],"
                " names are compared without case and with '-' = '_')",
            )
        seen[folded] = i
        devices.append(dev)
    sinks: list[SinkConfig] = []
    sink_names: dict[str, int] = {}
    for i, entry in enumerate(_list("sinks", raw.get("sinks", []))):
        sink = _sink(f"sinks[{i}]", _table(f"sinks[{i}]", entry), base)
        if sink.name is not None:
            folded = _env_key(sink.name)
            if folded in sink_names:
                raise ConfigError(f"sinks[{i}].name", f"duplicate sink name {sink.name!r}")
            sink_names[folded] = i
        sinks.append(sink)
    return ServiceConfig(
        data_dir=data_dir,
        inbox=inbox,
        database=database,
        spool=spool,
        api=api,
        devices=tuple(devices),
        retry=retry,
        sinks=tuple(sinks),
        log_level=log_level,
        node=node,
    )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, override from ``environ`` (default ``os.environ``) and validate a TOML config file.

    Raises :class:`ConfigError` (a ``ValueError``) naming the key, or the file, that is wrong.
    """
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError:
        raise ConfigError(str(file), "is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML ({exc})") from None
    return parse_config(
        data, base_dir=file.resolve().parent, environ=os.environ if environ is None else environ
    )


# --------------------------------------------------------------------------------------------------
# From configuration to the objects that run
# --------------------------------------------------------------------------------------------------


def device_call_options(dev: DeviceConfig) -> CallOptions:
    """The device's per-call defaults (a job's options may override ``ecm``, ``t38``, the header...)."""
    return CallOptions(
        t38=T38Policy(dev.t38),
        ecm=dev.ecm,
        max_bit_rate=dev.max_bit_rate,
        ident=dev.ident,
        page_header=dev.page_header,
        media_timeout=dev.media_timeout,
        max_call_seconds=dev.max_call_seconds,
        symmetric_media=dev.symmetric_media,
    )


def device_line_config(dev: DeviceConfig, inbox: Path | None) -> LineConfig:
    """The :class:`~vfax.call.line.LineConfig` of a configured device (``register`` is the caller's)."""
    host, port = parse_listen(dev.listen, f"device {dev.name} listen")
    return LineConfig(
        name=dev.name,
        listen_host=host,
        listen_port=port,
        transports=dev.transports,
        server=dev.server,
        user=dev.user,
        password=dev.password,
        register_expires=dev.expires,
        keepalive_interval=dev.keepalive_interval,
        channels=dev.channels,
        allow_invite_from=dev.allow_invite_from,
        inbox=inbox,
        call=device_call_options(dev),
        tls=TlsSettings(ca=dev.tls_ca, verify=dev.tls_verify, cert=dev.tls_cert, key=dev.tls_key),
        advertise=parse_advertise(dev.advertise) if dev.advertise else None,
        nameservers=tuple(parse_nameserver(n) for n in dev.nameservers),
        outbound_proxy=dev.outbound_proxy,
        caller=CallerIdentity(dev.caller_name, dev.caller_number, dev.asserted_identity),
        dial=DialPlan(prefix=dev.dial_prefix, user_phone=dev.user_phone),
    )


def build_sinks(sinks: tuple[SinkConfig, ...] | list[SinkConfig]) -> list[Sink]:
    """The :mod:`vfax.service.events` sinks of the configuration, named ``name`` when one is configured."""
    built: list[Sink] = []
    make: dict[str, Callable[[SinkConfig], Sink]] = {
        "jsonl": lambda s: JsonLinesSink(s.path or "-", name=s.name),
        "stdout": lambda s: JsonLinesSink("-", name=s.name or "stdout"),
        "webhook": lambda s: WebhookSink(s.url or "", s.secret or "", name=s.name),
    }
    for sink in sinks:
        built.append(make[sink.type](sink))
    return built
