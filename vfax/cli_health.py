"""`vfax health`: is the running ``vfax serve`` ready to fax? Used as the container HEALTHCHECK.

A fax device that is up but not registered at its PBX cannot receive a single fax, so "healthy" means
more than "the process answers": the service must answer ``GET /v1/devices`` and every device that is
configured to register (its ``registration`` is anything but ``none``) must report ``registered``.
A device whose registration failed, expired or is still in progress makes the check fail, which is what
an orchestrator needs to see (the container shows ``unhealthy``, a dependant waits).

Exit codes, as every vfax command: 0 healthy, 1 unhealthy (service down, not answering, a device not
registered, an API error), 2 bad input (an unusable ``--api`` URL, a refused token). One line on stderr
says why; ``--json`` prints one object on stdout either way. Wired in ``vfax/cli.py`` with
``app.command("health")(health_command)``.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

__all__ = ["DEFAULT_API", "HealthReport", "check_health", "evaluate_devices", "health_command"]

DEFAULT_API = "http://127.0.0.1:8025"
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
            why = f"the API at {api} refused the token (set --token or VFAX_API_TOKEN)"
            return HealthReport(False, api, EXIT_BAD_INPUT, why)
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


def health_command(
    api: Annotated[
        str, typer.Option("--api", envvar="VFAX_API", help="URL of the vfax serve API.", show_default=True)
    ] = DEFAULT_API,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="VFAX_API_TOKEN", help="Bearer token of the API (api.token)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=300.0, help="Seconds to wait for the API.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as one JSON object.")] = False,
) -> None:
    """Exit 0 when vfax serve answers and every device configured to register is registered.

    Meant for container health checks (the vfax image runs it as its HEALTHCHECK) and monitoring;
    exits 1 with a one-line reason otherwise (2 for an unusable --api or a refused token).
    """
    report = check_health(api, token, timeout=timeout)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        typer.echo(f"healthy: {report.reason}")
        for dev in report.devices:
            typer.echo(f"  {dev.get('name', '?')}: {dev.get('registration', NOT_REGISTERING)}")
    if not report.ok:
        typer.echo(f"unhealthy: {report.reason}", err=True)
        raise typer.Exit(report.exit_code)
