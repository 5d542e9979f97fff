"""TLS settings of a line turned into ``ssl.SSLContext`` objects for ``sip.useragent.UserAgent``.

Why here and not in ``sip/``: the files, the per-device warning and the config error naming the key are
the service's business; ``sip/`` only gets contexts. The client context verifies the peer's certificate
against ``tls_ca`` (default: the system's trust store) and checks the target's host name; only
``tls_verify = false`` turns that off, and then a WARNING names the device.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """A TLS setting that cannot be used; ``key`` names it (``tls_ca``, ``tls_cert``, ``tls_key``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class TlsSettings:
    ca: Path | None = None  # CA bundle (PEM) trusted for peers; None: the system's trust store
    verify: bool = True  # False only when asked: no certificate or host name check
    cert: Path | None = None  # our certificate (PEM): client certificate, and server one when listening
    key: Path | None = None  # its private key (PEM); None: in the cert file


def _readable(key: str, path: Path) -> None:
    if not path.exists():
        raise TlsConfigError(key, f"{path} does not exist")
    if not path.is_file():
        raise TlsConfigError(key, f"{path} is not a file")


def _load_chain(ctx: ssl.SSLContext, settings: TlsSettings) -> None:
    assert settings.cert is not None
    _readable("tls_cert", settings.cert)
    if settings.key is not None:
        _readable("tls_key", settings.key)
    try:
        ctx.load_cert_chain(settings.cert, settings.key)
    except ssl.SSLError as exc:
        key = "tls_key" if settings.key is not None and "KEY" in str(exc).upper() else "tls_cert"
        raise TlsConfigError(key, f"cannot load the certificate/key ({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsConfigError("tls_cert", f"cannot read {settings.cert}: {exc.strerror or exc}") from None


def check_tls_settings(settings: TlsSettings) -> None:
    """Read the files as a line would (raises TlsConfigError naming the key), without the warning."""
    client_context(settings, "", warn=False)
    server_context(settings)


def client_context(settings: TlsSettings, device: str, *, warn: bool = True) -> ssl.SSLContext:
    """The context for connections we open: verify the peer (unless told not to), present our cert."""
    if settings.key is not None and settings.cert is None:
        raise TlsConfigError("tls_key", "given without tls_cert")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.ca is not None:
        _readable("tls_ca", settings.ca)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only the configured CA, not the system's too
        try:
            ctx.load_verify_locations(cafile=settings.ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError("tls_ca", f"{settings.ca} holds no usable CA certificate ({exc})") from None
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if not settings.verify and warn:
        log.warning(
            "device %s: TLS certificate verification is OFF (tls_verify = false): any server is accepted",
            device,
        )
    if settings.cert is not None:
        _load_chain(ctx, settings)
    return ctx


def server_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """The context of our TLS listener (our cert), or None without a certificate."""
    if settings.cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, settings)
    return ctx
