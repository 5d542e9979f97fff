#!/usr/bin/env python3
"""Fax through the running lab on every path and say which worked: `python3 lab/roundtrip.py`.

Run it from the repository root after `docker compose up -d --build --wait`. It needs only Python 3.11+
and the docker CLI on your machine: it talks to the two vfax APIs that compose.yaml publishes on
127.0.0.1 (8025 the sender, 8026 the receiver) and asks Asterisk to originate the SendFAX call with
`docker compose exec`. Where the lab differs from compose.yaml, give the addresses as options or in the
environment (options win): --asterisk / VFAX_LAB_ASTERISK (the address the sender dials, default
10.238.38.10), --sender-api / VFAX_LAB_SENDER_API, --receiver-api / VFAX_LAB_RECEIVER_API, --token /
VFAX_LAB_TOKEN. Paths (docs/lab.md explains each):

    2000  vfax-sender -> Asterisk -> vfax-receiver, T.38 expected
    2001  vfax-sender -> Asterisk -> vfax-receiver, G.711 expected
    3000  vfax-sender -> Asterisk ReceiveFAX, T.38 expected
    3001  vfax-sender -> Asterisk ReceiveFAX, G.711 expected
    4000  Asterisk SendFAX (the last fax ReceiveFAX got) -> vfax-receiver, T.38 expected

A path passes when the fax completed with every page confirmed and, where vfax received it, its call
report names the expected media. Exit status 0 when every path chosen passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The compose.yaml values (tests/test_lab.py checks that they agree); the defaults of the options.
SENDER_API = "http://127.0.0.1:8025"
RECEIVER_API = "http://127.0.0.1:8026"
ASTERISK = "10.238.38.10"
DEFAULT_TOKEN = "vfax-lab-api-token-38"
DOCUMENT = ROOT / "vfax" / "samples" / "sample.pdf"
TERMINAL_JOB_STATES = ("completed", "failed", "cancelled")
TERMINAL_FAX_STATES = ("completed", "partial", "failed")
#: The fax-report line of extensions.conf, in the console format (`... @ fax-report: ReceiveFAX ...`)
#: and the file format (`... Ext. s: ReceiveFAX ...`) alike, but not the "Executing [s@fax-report:1]
#: Log(...)" line verbose logging prints before it.
FAX_REPORT_GREP = ": (Receive|Send)FAX [0-9.]+ status="


@dataclass(frozen=True)
class FaxPath:
    exten: str
    title: str
    media: str  # what the call report (or Asterisk's FAXMODE) should name
    receiver_gets_it: bool


PATHS = {
    "2000": FaxPath("2000", "vfax-sender -> Asterisk -> vfax-receiver", "t38", True),
    "2001": FaxPath("2001", "vfax-sender -> Asterisk -> vfax-receiver", "g711", True),
    "3000": FaxPath("3000", "vfax-sender -> Asterisk ReceiveFAX", "t38", False),
    "3001": FaxPath("3001", "vfax-sender -> Asterisk ReceiveFAX", "g711", False),
    "4000": FaxPath("4000", "Asterisk SendFAX -> vfax-receiver", "t38", True),
}
SENDFAX_CONTEXT = "asterisk-sendfax"


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if ctype:
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.base + path, data=body, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def submit(self, document: Path, to: str) -> dict[str, Any]:
        boundary = "lab-" + secrets.token_hex(12)
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="to"\r\n\r\n{to}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="document"; filename="{document.name}"\r\n'
            "Content-Type: application/pdf\r\n\r\n".encode(),
            document.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        return self.call("POST", "/v1/jobs", b"".join(parts), f"multipart/form-data; boundary={boundary}")

    def faxes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/faxes?limit=1000")["faxes"])


def wait_for(what: str, probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(2)
    raise TimeoutError(f"{what}: nothing after {timeout:.0f} s")


def new_fax(receiver: Api, known: set[str], timeout: float) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for fax in receiver.faxes():
            if fax["id"] not in known and fax["state"] in TERMINAL_FAX_STATES:
                return fax
        return None

    return wait_for("a new fax at vfax-receiver", probe, timeout)


def check_registered(api: Api, name: str) -> str | None:
    try:
        devices = api.call("GET", "/v1/devices")["devices"]
    except (urllib.error.URLError, OSError) as exc:
        return f"{name}: API at {api.base} does not answer ({exc}); is the lab up?"
    bad = [d["name"] for d in devices if d.get("registration") not in ("registered", "none")]
    return f"{name}: not registered: {', '.join(bad)}" if bad else None


def sip_target(exten: str, host: str) -> str:
    """The SIP URI of an extension at Asterisk (an IPv6 address in brackets, RFC 3261 §19.1.1)."""
    return f"sip:{exten}@[{host}]" if ":" in host else f"sip:{exten}@{host}"


def run_path(
    path: FaxPath, sender: Api, receiver: Api, timeout: float, asterisk: str = ASTERISK
) -> tuple[bool, str]:
    known = {f["id"] for f in receiver.faxes()}
    details = []
    ok = True
    if path.exten == "4000":
        command = f"channel originate PJSIP/vfax-receiver extension {path.exten}@{SENDFAX_CONTEXT}"
        subprocess.run(
            ["docker", "compose", "exec", "-T", "asterisk", "asterisk", "-rx", command],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        details.append("Asterisk originated the call")
    else:
        job = sender.submit(DOCUMENT, sip_target(path.exten, asterisk))

        def finished() -> dict[str, Any] | None:
            current = sender.call("GET", f"/v1/jobs/{job['id']}")
            return current if current["state"] in TERMINAL_JOB_STATES else None

        final = wait_for(f"job {job['id']}", finished, timeout)
        ok = final["state"] == "completed"
        details.append(f"job {final['id']} {final['state']} ({final['pages_sent']} pages, {final['status']})")
    if path.receiver_gets_it:
        fax = new_fax(receiver, known, timeout)
        report = receiver.call("GET", f"/v1/faxes/{fax['id']}/report")
        media = (report.get("media") or {}).get("final")
        ok = ok and fax["state"] == "completed" and media == path.media
        details.append(f"receiver fax {fax['id']} {fax['state']}, {fax['pages']} pages, media {media}")
    else:
        details.append(f"Asterisk's side: docker compose logs asterisk | grep -E '{FAX_REPORT_GREP}'")
    return ok, "; ".join(details)


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Options over the environment over the compose.yaml values."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "paths", nargs="*", default=list(PATHS), help=f"extensions to try ({', '.join(PATHS)})"
    )
    parser.add_argument(
        "--asterisk",
        default=env.get("VFAX_LAB_ASTERISK", ASTERISK),
        help=f"address of Asterisk the sender dials (VFAX_LAB_ASTERISK, default {ASTERISK})",
    )
    parser.add_argument(
        "--sender-api",
        default=env.get("VFAX_LAB_SENDER_API", SENDER_API),
        help=f"vfax-sender's API (VFAX_LAB_SENDER_API, default {SENDER_API})",
    )
    parser.add_argument(
        "--receiver-api",
        default=env.get("VFAX_LAB_RECEIVER_API", RECEIVER_API),
        help=f"vfax-receiver's API (VFAX_LAB_RECEIVER_API, default {RECEIVER_API})",
    )
    parser.add_argument("--token", default=env.get("VFAX_LAB_TOKEN", DEFAULT_TOKEN), help="(VFAX_LAB_TOKEN)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per path")
    args = parser.parse_args(argv)
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    for option, url in (("--sender-api", args.sender_api), ("--receiver-api", args.receiver_api)):
        if not url.startswith(("http://", "https://")):
            parser.error(f"{option} {url!r} is not an http:// or https:// URL")
    if not args.asterisk or any(c in args.asterisk for c in "@/ "):
        parser.error(f"--asterisk {args.asterisk!r} is not a host name or address")
    args.sender_api = args.sender_api.rstrip("/")
    args.receiver_api = args.receiver_api.rstrip("/")
    return args


def main() -> int:
    args = parse_args()
    sender, receiver = Api(args.sender_api, args.token), Api(args.receiver_api, args.token)
    for problem in filter(
        None, (check_registered(sender, "vfax-sender"), check_registered(receiver, "vfax-receiver"))
    ):
        print(f"FAIL {problem}", file=sys.stderr)
        return 1
    failures = 0
    for exten in args.paths:
        path = PATHS[exten]
        try:
            ok, detail = run_path(path, sender, receiver, args.timeout, args.asterisk)
        except (TimeoutError, urllib.error.URLError, OSError, subprocess.CalledProcessError, KeyError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {exten} {path.title} ({path.media}): {detail}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
