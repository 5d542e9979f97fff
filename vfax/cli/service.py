"""`vfax jobs`, `status`, `cancel`, `submit`, `faxes`, `nodes`: clients of a running `vfax serve`.

`vfax nodes drain|resume NODE_ID...` marks nodes of a cluster through any node's API; ``--wait`` waits
until they may be stopped (see ``docs/cluster.md``, "Upgrading one node at a time").

They talk to the local HTTP API (``--api``, default ``$VFAX_API`` or http://127.0.0.1:8025) with the bearer
token of ``--token`` (default ``$VFAX_API_TOKEN``), using only the standard library (``urllib.request``).
Exit codes as every vfax command: 0 done, 1 failed (service down, job already finished, server error),
2 bad input (unknown job, invalid field, unusable document, wrong token); one line on stderr says why.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import json
import mimetypes
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vfax.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail, out, print_json

__all__ = [
    "DEFAULT_API",
    "ApiClient",
    "ApiClientError",
    "cancel_command",
    "faxes_command",
    "jobs_command",
    "nodes_command",
    "status_command",
    "submit_command",
]

DEFAULT_API = "http://127.0.0.1:8025"

ApiOpt = Annotated[
    str, typer.Option("--api", envvar="VFAX_API", help="URL of the vfax serve API.", show_default=True)
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="VFAX_API_TOKEN", help="Bearer token of the API (api.token).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON on stdout.")]


class ApiClientError(Exception):
    """A request failed; ``exit_code`` is what the command exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiClient:
    """A minimal client of the vfax API (JSON in, JSON out)."""

    def __init__(self, base: str, token: str | None, *, timeout: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiClientError(f"--api must be an http:// or https:// URL, not {base!r}", EXIT_BAD_INPUT)
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        url = self.base + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs, doseq=True)
        headers = {"Accept": "application/json", "User-Agent": "vfax-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise ApiClientError(f"vfax serve is not running at {self.base}", EXIT_FAILED) from None
            raise ApiClientError(f"cannot reach vfax serve at {self.base}: {reason}", EXIT_FAILED) from None
        except ConnectionRefusedError:
            raise ApiClientError(f"vfax serve is not running at {self.base}", EXIT_FAILED) from None
        except TimeoutError:
            raise ApiClientError(f"vfax serve at {self.base} did not answer in time", EXIT_FAILED) from None
        except (OSError, ValueError) as exc:
            raise ApiClientError(f"talking to vfax serve at {self.base} failed: {exc}", EXIT_FAILED) from None

    def _http_error(self, exc: urllib.error.HTTPError) -> ApiClientError:
        try:
            data = json.loads(exc.read() or b"{}")
            detail = str(data.get("detail") or exc.reason)
        except (ValueError, AttributeError, OSError):
            detail = str(exc.reason)
        code = exc.code
        if code == 401:
            return ApiClientError(
                f"the API at {self.base} refused the token: set --token or VFAX_API_TOKEN ({detail})",
                EXIT_BAD_INPUT,
            )
        if code in (400, 404, 413, 422):
            return ApiClientError(detail, EXIT_BAD_INPUT)
        if code == 409:
            return ApiClientError(detail, EXIT_FAILED)
        return ApiClientError(f"the API failed: HTTP {code}: {detail}", EXIT_FAILED)

    def upload(self, path: str, file: Path, fields: dict[str, str]) -> Any:
        """POST a multipart/form-data body: the ``document`` file and text ``fields``."""
        boundary = "vfax-" + secrets.token_hex(16)
        chunks: list[bytes] = []
        for name, value in fields.items():
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        filename = file.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="document"; filename="{filename}"\r\n'
            f"Content-Type: {media}\r\n\r\n".encode()
        )
        chunks.append(file.read_bytes())
        chunks.append(f"\r\n--{boundary}--\r\n".encode())
        return self.request(
            "POST", path, body=b"".join(chunks), content_type=f"multipart/form-data; boundary={boundary}"
        )


def _client(api: str, token: str | None) -> ApiClient:
    try:
        return ApiClient(api, token)
    except ApiClientError as exc:
        fail(str(exc), exc.exit_code)


def _call(client: ApiClient, method: str, path: str, **kw: Any) -> Any:
    try:
        return client.request(method, path, **kw)
    except ApiClientError as exc:
        fail(str(exc), exc.exit_code)


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _when(value: str | None) -> str:
    if not value:
        return ""
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")


_STATE_STYLE = {
    "queued": "cyan",
    "in_flight": "yellow",
    "receiving": "yellow",
    "completed": "green",
    "partial": "magenta",
    "failed": "red",
    "cancelled": "dim",
}


def _state(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]"


# --------------------------------------------------------------------------------------------------
# Commands (wired into the `vfax` typer app by vfax.cli)
# --------------------------------------------------------------------------------------------------


def jobs_command(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", help="Only jobs in this state (queued, in_flight, completed, failed, cancelled)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only jobs for this device.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many jobs.")] = 100,
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the outbound fax jobs of a running `vfax serve`, oldest first."""
    client = _client(api, token)
    data = _call(client, "GET", "/v1/jobs", query={"state": state or None, "device": device, "limit": limit})
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{len(data['jobs'])} job(s)")
    table.add_column("id", no_wrap=True)
    for column in ("state", "to", "device", "attempts", "last status", "pages", "created"):
        table.add_column(column, overflow="fold")
    for job in data["jobs"]:
        table.add_row(
            job["id"],
            _state(job["state"]),
            job["destination"],
            job["device"] or "any",
            f"{job['attempts']}/{job['max_attempts']}",
            job["status"] or "",
            str(job["pages_sent"]),
            _when(job["created_at"]),
        )
    out.print(table)


def status_command(
    job: Annotated[str, typer.Argument(help="Job id (from `vfax submit` or `vfax jobs`).")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one job and its events."""
    client = _client(api, token)
    data = _call(client, "GET", f"/v1/jobs/{_quote(job)}")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"job {data['id']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("state", _state(data["state"]) + (" (cancel requested)" if data["cancel_requested"] else "")),
        ("to", data["destination"]),
        ("device", data["device"] or "any"),
        ("priority", str(data["priority"])),
        ("attempts", f"{data['attempts']} of {data['max_attempts']}"),
        ("last status", data["status"] or ""),
        ("last error", data["last_error"]),
        ("pages sent", str(data["pages_sent"])),
        ("created", _when(data["created_at"])),
        ("not before", _when(data["not_before"])),
        ("finished", _when(data["finished_at"])),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value)
    out.print(table)
    if data["events"]:
        events = Table(title="events")
        for column in ("#", "time", "type", "status", "details"):
            events.add_column(column)
        for event in data["events"]:
            payload = event["payload"]
            details = payload.get("reason") or payload.get("error") or ""
            if event["type"] == "page":
                details = f"{payload.get('pages', '')} page(s)"
            events.add_row(
                str(event["seq"]), _when(event["at"]), event["type"], event["status"], str(details)
            )
        out.print(events)


def cancel_command(
    job: Annotated[str, typer.Argument(help="Job id.")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job: a queued one at once, one being sent by aborting its call; exits 1 if it is finished."""
    client = _client(api, token)
    data = _call(client, "POST", f"/v1/jobs/{_quote(job)}/cancel")
    if as_json:
        print_json(data)
        return
    if data["state"] == "cancelled":
        out.print(f"job {data['id']} cancelled")
    else:
        out.print(f"job {data['id']} is {data['state']}: cancel requested, its call is being aborted")


def submit_command(
    file: Annotated[Path, typer.Argument(help="PDF, PNG, JPEG or TIFF to fax.")],
    to: Annotated[
        str, typer.Option("--to", help="Destination: sip:USER@HOST[:PORT] or a number the device dials.")
    ],
    device: Annotated[str | None, typer.Option(help="Device to send it (default: any).")] = None,
    priority: Annotated[int, typer.Option(min=-100, max=100, help="Higher is sent first.")] = 0,
    not_before: Annotated[
        str | None, typer.Option("--not-before", help="Not before: ISO 8601 time or Unix seconds.")
    ] = None,
    ecm: Annotated[
        bool | None, typer.Option("--ecm/--no-ecm", help="Error correction mode (default: the device's).")
    ] = None,
    resolution: Annotated[str, typer.Option(help="standard, fine or superfine.")] = "fine",
    paper: Annotated[str, typer.Option(help="a4, letter or legal.")] = "a4",
    t38: Annotated[str | None, typer.Option("--t38", help="T.38 policy: auto, off, only or direct.")] = None,
    header: Annotated[str | None, typer.Option(help="Page header text.")] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", min=1, max=100, help="Attempts in all.")
    ] = None,
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue FILE to be faxed by a running `vfax serve`; prints the job id."""
    if not file.is_file():
        fail(f"{file}: no such file")
    client = _client(api, token)
    fields: dict[str, str] = {"to": to, "priority": str(priority), "resolution": resolution, "paper": paper}
    optional: dict[str, Any] = {
        "device": device,
        "not_before": not_before,
        "ecm": None if ecm is None else ("true" if ecm else "false"),
        "t38": t38,
        "header": header,
        "max_attempts": max_attempts,
    }
    fields.update({k: str(v) for k, v in optional.items() if v is not None})
    try:
        data = client.upload("/v1/jobs", file, fields)
    except ApiClientError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror or exc})")
    if as_json:
        print_json(data)
        return
    out.print(f"queued job [bold]{data['id']}[/] to {data['destination']}")


def faxes_command(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only faxes in this state (receiving, completed, partial, failed)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many faxes.")] = 100,
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the received faxes of a running `vfax serve`, oldest first."""
    client = _client(api, token)
    data = _call(client, "GET", "/v1/faxes", query={"state": state or None, "limit": limit})
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{len(data['faxes'])} fax(es)")
    table.add_column("id", no_wrap=True)
    for column in ("state", "from", "CSI", "device", "pages", "received", "files"):
        table.add_column(column, overflow="fold")
    for fax in data["faxes"]:
        have = [name for name in ("pdf", "tiff", "report") if fax[f"has_{name}"]]
        table.add_row(
            fax["id"],
            _state(fax["state"]),
            fax["caller"],
            fax["remote_csi"],
            fax["device"],
            str(fax["pages"]),
            _when(fax["started_at"]),
            ", ".join(have),
        )
    out.print(table)


_NODE_STYLE = {"up": "green", "stopped": "dim", "lost": "red"}
#: How often `vfax nodes drain --wait` reads the nodes (their records change at each node's heartbeat).
WAIT_POLL_SECONDS = 1.0


class NodesAction(enum.StrEnum):
    list = "list"
    drain = "drain"
    resume = "resume"


def _drain_column(node: dict[str, Any]) -> str:
    if node.get("drained"):
        return "[green]drained[/]"
    return "[yellow]draining[/]" if node.get("draining") else ""


def _nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(nodes)} node(s)")
    table.add_column("id", no_wrap=True)
    for column in ("state", "drain", "api", "devices", "calls", "heartbeat", "started"):
        table.add_column(column, overflow="fold")
    for node in nodes:
        regs = node.get("registrations") or {}
        devices = ", ".join(f"{d.get('name')} ({regs.get(d.get('name'), 'none')})" for d in node["devices"])
        table.add_row(
            node["id"],
            f"[{_NODE_STYLE.get(node['state'], 'white')}]{node['state']}[/]",
            _drain_column(node),
            node["api"] or "",
            devices,
            str(len(node["calls"])),
            _when(node["heartbeat_at"]),
            _when(node["started_at"]),
        )
    return table


def _targets(client: ApiClient, patterns: list[str]) -> list[str]:
    """Node ids: a pattern with ``*?[`` names every node that is up and matches (``node1-w*``: the
    workers of `vfax serve --workers` on node1); anything else is one node id, as given."""
    ids: list[str] = []
    listed: list[dict[str, Any]] | None = None
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            ids.append(pattern)
            continue
        if listed is None:
            listed = _call(client, "GET", "/v1/nodes")["nodes"]
        found = [n["id"] for n in listed if n["state"] == "up" and fnmatch.fnmatchcase(n["id"], pattern)]
        if not found:
            fail(f"no node that is up matches {pattern!r}", EXIT_BAD_INPUT)
        ids.extend(found)
    return list(dict.fromkeys(ids))


def _wait_drained(client: ApiClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Read the nodes until each of ``ids`` is drained (or no longer up); their records then."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["id"]: n for n in _call(client, "GET", "/v1/nodes")["nodes"]}
        busy = []
        for node_id in ids:
            node = nodes.get(node_id)
            if node is None or node["state"] != "up" or node["drained"]:
                continue
            if not node["draining"]:
                fail(f"node {node_id} is no longer draining (resumed meanwhile)", EXIT_FAILED)
            calls = len(node["calls"])
            why = f"{calls} call(s) in progress" if calls else "its heartbeat has not confirmed the drain yet"
            busy.append(f"{node_id} ({why})")
        if not busy:
            return [nodes[i] for i in ids if i in nodes]
        if time.monotonic() >= deadline:
            fail(f"still busy after {timeout:g} s: {', '.join(busy)}", EXIT_FAILED)
        time.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def nodes_command(
    action: Annotated[
        NodesAction,
        typer.Argument(help="list (the default); drain: take no new work, let calls finish; resume.")
    ] = NodesAction.list,
    node_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Nodes to drain or resume; a pattern such as 'node1-w*' names every matching node that is up"
            " (all workers of one machine).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="drain: wait until every node is drained (no call left), then exit 0."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.0, help="Seconds --wait waits before giving up (exit 1).")
    ] = 1800.0,
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the nodes sharing the job store of a running `vfax serve` (any node answers for all), or
    drain or resume some: `vfax nodes drain node1 --wait` before stopping node1 for an upgrade."""
    if action is NodesAction.list and node_ids:
        fail("node ids go with drain or resume, not with list", EXIT_BAD_INPUT)
    if action is not NodesAction.list and not node_ids:
        fail(f"{action.value}: which node? (see vfax nodes)", EXIT_BAD_INPUT)
    if wait and action is not NodesAction.drain:
        fail("--wait goes with drain", EXIT_BAD_INPUT)
    client = _client(api, token)
    if action is NodesAction.list:
        data = _call(client, "GET", "/v1/nodes")
        if as_json:
            print_json(data)
            return
        out.print(_nodes_table(data["nodes"]))
        return
    ids = _targets(client, list(node_ids or []))
    records = [_call(client, "POST", f"/v1/nodes/{_quote(node_id)}/{action.value}") for node_id in ids]
    if wait:
        records = _wait_drained(client, ids, timeout)
    if as_json:
        print_json({"nodes": records})
        return
    verb = "drained" if wait else ("draining" if action is NodesAction.drain else "resumed")
    out.print(f"{verb}: {', '.join(ids)}")
    out.print(_nodes_table(records))
