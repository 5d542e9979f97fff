"""`vfax send` and `vfax receive` as a user runs them: separate processes, real SIP, JSON out."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory
from tests.peers.kamailio import KamailioServer, find_kamailio
from tests.serve_process import free_port
from vfax.documents import read_tiff_pages

ROOT = Path(__file__).resolve().parent.parent
SEND_KEYS = ("ok", "pages", "bit_rate", "ecm", "media", "duration_seconds", "status")


def free_udp_port() -> int:
    """A port free for UDP and TCP (what a SIP listener binds), below the ephemeral range: a port the
    kernel handed out for a moment can be taken by a client socket before the receiver binds it."""
    return free_port(socket.SOCK_DGRAM)


def vfax(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "vfax.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def start_receiver(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "vfax.cli", "receive", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


def wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    """The receiver is up when its SIP port takes a TCP connection (it listens on UDP and TCP)."""
    for _ in range(100):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "receiver exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("receiver never listened")


def test_send_to_receive_once_with_json(tmp_path: Path) -> None:
    port = free_udp_port()
    inbox = tmp_path / "inbox"
    rx = start_receiver("--listen", f"127.0.0.1:{port}", "--inbox", str(inbox), "--once", "--json")
    wait_listening(port, rx)
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    sent = vfax("send", str(doc), "--to", f"sip:fax@127.0.0.1:{port}", "--resolution", "standard",
                "--report", str(tmp_path / "call.json"), "--json")  # fmt: skip
    code, out, err = finish(rx)
    assert sent.returncode == 0, sent.stderr
    data = json.loads(sent.stdout)
    assert all(k in data for k in SEND_KEYS)
    assert data["ok"] and data["pages"] == 1 and data["media"] == "t38" and data["status"] == "completed"
    assert data["bit_rate"] == 14400 and data["ecm"] and data["duration_seconds"] > 1
    assert json.loads((tmp_path / "call.json").read_text())["sip"]["ladder"]
    assert code == 0, err
    received = json.loads(out.strip().splitlines()[-1])
    assert received["ok"] and received["pages"] == 1 and len(read_tiff_pages(received["out_tiff"])) == 1
    assert Path(received["out_pdf"]).exists() and Path(received["report"]).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "sip:fax@127.0.0.1:9"], "not a document"),
        (["--to", "fax-without-host"], "--to must be a SIP URI"),
        (["--to", "sip:fax@127.0.0.1:9", "--t38", "sometimes"], "t38 must be one of"),
        (["--to", "sip:fax@127.0.0.1:9", "--listen", "127.0.0.1:99999"], "--listen"),
        (["--to", "sip:fax@127.0.0.1:9", "--ident", "x" * 30], "ident"),
    ],
)
def test_send_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    doc = (
        docfactory.text_file(tmp_path / "notes.pdf")
        if message == "not a document"
        else docfactory.text_pdf(tmp_path / "in.pdf")
    )
    result = vfax("send", str(doc), *args)
    assert result.returncode == 2, result.stderr
    assert message.split()[0] in result.stderr


def test_receive_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    result = vfax("receive", "--listen", "127.0.0.1:notaport", "--inbox", str(tmp_path))
    assert result.returncode == 2 and "--listen" in result.stderr


def start_registered_receiver(kamailio: Any, inbox: Path, port: int) -> subprocess.Popen[str]:
    """`vfax receive --once` registered as 1001; returns once Kamailio has the binding."""
    server = f"{kamailio.host}:{kamailio.udp_port}"
    account = ["--server", server, "--user", "1001", "--password", kamailio.users["1001"]]
    rx = start_receiver("--listen", f"127.0.0.1:{port}", "--inbox", str(inbox), "--once", "--json", *account)
    for _ in range(50):
        if kamailio.registered_contacts("1001"):
            return rx
        if rx.poll() is not None:
            raise AssertionError(rx.stderr.read() if rx.stderr else "receiver exited")
        time.sleep(0.2)
    rx.kill()
    raise AssertionError("the receiver never registered")


@pytest.fixture
def send_only_registrar(tmp_path: Path) -> Iterator[KamailioServer]:
    """Kamailio where 1002 may call (digest on the INVITE) but its REGISTER gets 403."""
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    server = KamailioServer(tmp_path / "kamailio", no_register=["1002"]).start()
    try:
        yield server
    finally:
        server.stop()


def test_send_through_a_pbx_without_registering(tmp_path: Path, send_only_registrar: KamailioServer) -> None:
    """Issue 12.4: an account that may call but not register sends; its INVITE answers the 407."""
    kam = send_only_registrar
    port = free_udp_port()
    rx = start_registered_receiver(kam, tmp_path / "inbox", port)
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    via = ["--server", f"{kam.host}:{kam.udp_port}", "--user", "1002", "--password", kam.users["1002"]]
    sent = vfax("send", str(doc), "--to", "1001", *via, "--t38", "off", "--resolution", "standard",
                "--report", str(tmp_path / "call.json"), "--json")  # fmt: skip
    code, out, err = finish(rx)
    assert sent.returncode == 0, sent.stderr + sent.stdout
    data = json.loads(sent.stdout)
    assert data["ok"] and data["media"] == "g711" and data["pages"] == 1
    ladder = [step["line"] for step in json.loads((tmp_path / "call.json").read_text())["sip"]["ladder"]]
    assert any(line.startswith("SIP/2.0 407") for line in ladder), ladder  # Kamailio challenged...
    assert sum(line.startswith("INVITE ") for line in ladder) >= 2, ladder  # ...and we answered it
    assert "REGISTER sip" not in " ".join(ladder)
    assert "Registration Not Allowed" not in kam.log_text()  # the sender never tried to register
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["ok"]


def test_send_register_failure_prints_one_json_object(
    tmp_path: Path, send_only_registrar: KamailioServer
) -> None:
    """--register with an account the PBX refuses: exit 1, one JSON object with ok=false and why."""
    kam = send_only_registrar
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    sent = vfax("send", str(doc), "--to", "1001", "--server", f"{kam.host}:{kam.udp_port}", "--user", "1002",
                "--password", kam.users["1002"], "--register", "--json")  # fmt: skip
    assert sent.returncode == 1, sent.stderr
    lines = sent.stdout.strip().splitlines()
    assert len(lines) == 1, sent.stdout
    data = json.loads(lines[0])
    assert data["ok"] is False and "403" in data["reason"] and "regist" in data["reason"].lower()
    assert data["sip_status"] == 403 and data["pages"] == 0


def test_send_bad_input_with_json_prints_one_json_object(tmp_path: Path) -> None:
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    sent = vfax("send", str(doc), "--to", "sip:fax@127.0.0.1:9", "--register", "--json")
    assert sent.returncode == 2, sent.stderr
    data = json.loads(sent.stdout)
    assert data["ok"] is False and "--register" in data["reason"]


def test_send_and_receive_registered_through_a_registrar(tmp_path: Path, kamailio: Any) -> None:
    server = f"{kamailio.host}:{kamailio.udp_port}"
    port = free_udp_port()
    inbox = tmp_path / "inbox"
    registered = ["--server", server, "--user", "1001", "--password", kamailio.users["1001"]]
    rx = start_receiver(
        "--listen", f"127.0.0.1:{port}", "--inbox", str(inbox), "--once", "--json", "--keepalive", "1",
        *registered,
    )
    for _ in range(50):
        if kamailio.registered_contacts("1001"):
            break
        if rx.poll() is not None:
            raise AssertionError(rx.stderr.read() if rx.stderr else "receiver exited")
        time.sleep(0.2)
    assert kamailio.registered_contacts("1001")
    doc = docfactory.text_pdf(tmp_path / "in.pdf", pages=1)
    via = ["--server", server, "--user", "1002", "--password", kamailio.users["1002"], "--register"]
    send_port = free_udp_port()
    sent = vfax("send", str(doc), "--to", "1001", *via, "--t38", "off", "--resolution", "standard", "--json",
                "--listen", f"127.0.0.1:{send_port}")  # fmt: skip
    code, out, err = finish(rx)
    assert sent.returncode == 0, sent.stderr + sent.stdout
    data = json.loads(sent.stdout)
    assert data["ok"] and data["media"] == "g711" and data["pages"] == 1
    # --register: the sender registered before the call and removed its binding after it
    assert len(re.findall(rf"rx REGISTER \S+ from udp:127\.0\.0\.1:{send_port} ", kamailio.log_text())) >= 2
    assert kamailio.registered_contacts("1002") == []
    # the registered receiver kept checking its registrar (a dead one makes it unregistered at once)
    assert re.search(rf"rx OPTIONS \S+ from udp:127\.0\.0\.1:{port} ", kamailio.log_text())
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["ok"]
