"""`vfax health`: is the running ``vfax serve`` ready to fax? Used as the container HEALTHCHECK.

A fax device that is up but not registered at its PBX cannot receive a single fax, so "healthy" means
more than "the process answers": the service must answer ``GET /v1/devices`` and every device that is
configured to register (its ``registration`` is anything but ``none``) must report ``registered``.
A device whose registration failed, expired or is still in progress makes the check fail, which is what
an orchestrator needs to see (the container shows ``unhealthy``, a dependant waits). The service keeps
that state honest: a failed refresh, or a registrar that stops answering the device's keep-alive OPTIONS
(``keepalive_interval``, 30 s by default), ends "registered" at once.

Exit codes, as Docker's HEALTHCHECK reads them (it reserves 2): 0 healthy, 1 unhealthy (service down,
not answering, a device not registered, an API error, a refused token). 2 only for unusable input: an
``--api`` that is not an http(s) URL, or a ``--config`` that cannot be read. One line on stderr says why;
``--json`` prints one object on stdout either way. Wired in ``vfax/cli/__init__.py`` with
``app.command("health")(health_command)``.

The token is, in this order: ``--token``, ``VFAX_API_TOKEN``, then ``api.token`` of the service's config
file (``--config``, ``VFAX_CONFIG``, else ``/etc/vfax/vfax.toml`` when it exists, the image's path). The
API address is ``--api``/``VFAX_API``, else ``api.listen`` of that file, else ``http://127.0.0.1:8025``.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "DEFAULT_API",
    "DEFAULT_CONFIG",
    "HealthReport",
    "api_from_config",
    "check_health",
    "evaluate_devices",
    "health_command",
]

DEFAULT_API = "http://127.0.0.1:8025"
#: Where the vfax image (and docs/pbx.md) puts the service's configuration.
DEFAULT_CONFIG = Path("/etc/vfax/vfax.toml")
EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_BAD_INPUT = 2
#: The ``registration`` value of a device that is not configured to register (see Controller).
NOT_REGISTERING = "none"
REGISTERED = "registered"


@dataclass
class HealthReport:
    """The verdict and the evidence for it (what ``--json`` prints)."""

    ok: bool
    api: str
    exit_code: int
    reason: str
    devices: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "api": self.api,
            "reason": self.reason,
            "devices": self.devices,
            "problems": self.problems,
        }


def evaluate_devices(devices: list[dict[str, Any]]) -> list[str]:
    """One line per device that should be registered and is not; empty when all is well."""
    problems = []
    for dev in devices:
        state = str(dev.get("registration", NOT_REGISTERING))
        if state not in (NOT_REGISTERING, REGISTERED):
            problems.append(f"device {dev.get('name', '?')} is {state}, not registered")
    return problems


def _get_devices(api: str, token: str | None, timeout: float) -> Any:
    headers = {"Accept": "application/json", "User-Agent": "vfax-health"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(api.rstrip("/") + "/v1/devices", headers=headers, method="GET")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def check_health(api: str, token: str | None, *, timeout: float = 5.0) -> HealthReport:
    """Ask the service at ``api`` about its devices and judge; never raises for a network problem."""
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return HealthReport(
            False, api, EXIT_BAD_INPUT, f"--api must be an http:// or https:// URL, not {api!r}"
        )
    try:
        data = _get_devices(api, token, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            why = f"the API at {api} refused the token (--token, VFAX_API_TOKEN or api.token of --config)"
            return HealthReport(False, api, EXIT_UNHEALTHY, why)
        return HealthReport(False, api, EXIT_UNHEALTHY, f"the API at {api} answered HTTP {exc.code}")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return HealthReport(False, api, EXIT_UNHEALTHY, f"vfax serve is not running at {api}")
        return HealthReport(False, api, EXIT_UNHEALTHY, f"cannot reach vfax serve at {api}: {reason}")
    except TimeoutError:
        return HealthReport(
            False, api, EXIT_UNHEALTHY, f"vfax serve at {api} did not answer in {timeout:g} s"
        )
    except (OSError, ValueError) as exc:  # connection reset, a body that is not JSON
        return HealthReport(False, api, EXIT_UNHEALTHY, f"talking to vfax serve at {api} failed: {exc}")
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        return HealthReport(False, api, EXIT_UNHEALTHY, f"{api}/v1/devices did not return a device list")
    problems = evaluate_devices(devices)
    if problems:
        return HealthReport(False, api, EXIT_UNHEALTHY, "; ".join(problems), devices, problems)
    registered = sum(1 for d in devices if d.get("registration") == REGISTERED)
    reason = f"{len(devices)} device(s), {registered} registered"
    return HealthReport(True, api, EXIT_HEALTHY, reason, devices, problems)


class ConfigUnusable(ValueError):
    """The --config file cannot be read or is not TOML."""


def api_from_config(path: Path, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """``(api URL, token)`` from the ``[api]`` table of a vfax serve config; None for what it lacks.

    Only that table is read (a health check must not fail over a device setting the service accepted);
    ``VFAX_API_LISTEN`` overrides ``api.listen`` as it does for the service. Raises ConfigUnusable."""
    env = os.environ if environ is None else environ
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigUnusable(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigUnusable(f"{path} is not a TOML config: {exc}") from None
    table = data.get("api")
    table = table if isinstance(table, dict) else {}
    token = table.get("token")
    listen = env.get("VFAX_API_LISTEN") or table.get("listen")
    url = None
    if isinstance(listen, str) and listen:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):  # the service listens everywhere: ask it on loopback
            host = "::1" if host == "::" else "127.0.0.1"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return url, token if isinstance(token, str) and token else None


def health_command(
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            envvar="VFAX_API",
            help=f"URL of the vfax serve API (default: api.listen of the config, else {DEFAULT_API}).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="VFAX_API_TOKEN",
            help="Bearer token of the API (default: api.token of the config).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="VFAX_CONFIG",
            help=f"The service's config file, for token and address (default: {DEFAULT_CONFIG} if present).",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=300.0, help="Seconds to wait for the API.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as one JSON object.")] = False,
) -> None:
    """Exit 0 when vfax serve answers and every device configured to register is registered.

    Meant for container health checks (the vfax image runs it as its HEALTHCHECK) and monitoring;
    exits 1 with a one-line reason otherwise, a refused token included (Docker reserves 2, which is
    left for unusable input: an --api that is not an http(s) URL, an unreadable --config).
    """
    if api is None or token is None:
        path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        if path is not None:
            try:
                config_api, config_token = api_from_config(path)
            except ConfigUnusable as exc:
                if config is None:  # the default path is a convenience: never fail because of it
                    config_api = config_token = None
                else:
                    _verdict(HealthReport(False, api or DEFAULT_API, EXIT_BAD_INPUT, str(exc)), as_json)
                    return
            api = api or config_api
            token = token or config_token
    report = check_health(api or DEFAULT_API, token, timeout=timeout)
    _verdict(report, as_json)


def _verdict(report: HealthReport, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        typer.echo(f"healthy: {report.reason}")
        for dev in report.devices:
            typer.echo(f"  {dev.get('name', '?')}: {dev.get('registration', NOT_REGISTERING)}")
    if not report.ok:
        typer.echo(f"unhealthy: {report.reason}", err=True)
        raise typer.Exit(report.exit_code)
