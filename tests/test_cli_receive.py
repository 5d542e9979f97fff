"""`vfax receive --once` as a user runs it, against a peer that never lets a fax engine run.

Seen against Asterisk 22 (SendFAX in audio, vfax under `--t38 only`): vfax re-INVITEs to T.38, gets 488,
hangs up, and the process must then exit 1 with its JSON and a call report, not idle forever.
pjsua2 refuses every T.38 offer with 488, so it is that peer here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli_fax import free_udp_port, start_receiver, wait_listening


def test_receive_once_t38_only_exits_1_with_a_report_when_the_peer_refuses_t38(
    tmp_path: Path, pjsua_peer: Any
) -> None:
    peer = pjsua_peer("caller")
    port = free_udp_port()
    inbox = tmp_path / "in"
    proc = start_receiver(
        "--listen", f"127.0.0.1:{port}", "--inbox", str(inbox), "--once", "--t38", "only", "--json"
    )
    try:
        wait_listening(port, proc)
        peer.command_sync("call", uri=f"sip:fax@127.0.0.1:{port}")
        try:
            out, err = proc.communicate(timeout=60)  # it must end by itself: no signal is sent
        except subprocess.TimeoutExpired:
            pytest.fail("vfax receive --once did not exit after the call ended")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    data = json.loads(out)
    assert data["ok"] is False and data["status"] == "fatal_error"
    assert data["reason"].startswith("t38=only: T.38 refused (488"), data["reason"]
    assert data["media"] == "g711"  # G.711 was up, even if no fax engine ever ran on it
    assert data["bit_rate"] is None and data["pages"] == 0  # nothing was negotiated
    report = json.loads(Path(data["report"]).read_text())
    ladder = [step["line"] for step in report["sip"]["ladder"]]
    assert ladder[0].startswith("INVITE ") and any(x.startswith("SIP/2.0 488") for x in ladder), ladder
    assert any(x.startswith("BYE ") for x in ladder), ladder
    assert report["media"]["final"] == "g711" and report["result"] is None
    assert not list(inbox.glob("*.tif")) and not list(inbox.glob(".rx-*"))  # no fax, no leftover part
