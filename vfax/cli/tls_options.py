"""The TLS options shared by ``vfax send``, ``vfax receive`` and ``vfax options``.

They mirror the device keys ``tls_ca``, ``tls_verify``, ``tls_cert``, ``tls_key`` (vfax.call.tls); a bad
file is an input error naming the option, before any packet is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vfax.call.tls import TlsConfigError, TlsSettings, check_tls_settings

TlsCaOpt = Annotated[
    Path | None,
    typer.Option("--tls-ca", help="CA file (PEM) that TLS peers' certificates must chain to (default: the "
                 "system's trust store)."),
]  # fmt: skip
TlsVerifyOpt = Annotated[
    bool,
    typer.Option("--tls-verify/--no-tls-verify", help="Verify the TLS peer's certificate and host name "
                 "(--no-tls-verify accepts any server and logs a warning)."),
]  # fmt: skip
TlsCertOpt = Annotated[
    Path | None,
    typer.Option("--tls-cert", help="Our certificate (PEM): the client certificate, and the one of our TLS "
                 "listener."),
]  # fmt: skip
TlsKeyOpt = Annotated[
    Path | None, typer.Option("--tls-key", help="Private key (PEM) of --tls-cert (default: in that file).")
]

_OPTION = {"tls_ca": "--tls-ca", "tls_cert": "--tls-cert", "tls_key": "--tls-key"}


def tls_settings(ca: Path | None, verify: bool, cert: Path | None, key: Path | None) -> TlsSettings:
    """The settings of the options, their files read; raises ValueError naming the option."""
    settings = TlsSettings(ca=ca, verify=verify, cert=cert, key=key)
    try:
        check_tls_settings(settings)
    except TlsConfigError as exc:
        raise ValueError(f"{_OPTION[exc.key]}: {str(exc).removeprefix(exc.key + ': ')}") from None
    return settings
