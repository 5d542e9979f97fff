"""`vfax health` against a real `vfax serve` whose device is registered to a real registrar (Kamailio).

Issue 12.7: after the registrar died, health kept saying "registered" until the next refresh failed
(half the expiry plus Timer F). The device's keep-alive OPTIONS notice it; health must then exit 1
(Docker reserves 2) and find its token in the service's config file, not only in the environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.kamailio import KamailioServer
from tests.serve_process import free_port
from vfax.cli.health import api_from_config, check_health

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "health-test-token-0123456789"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any VFAX_* setting: what the test passes is all there is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VFAX_")}
    return env | {"PYTHONPATH": str(ROOT)} | extra


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vfax.cli", "health", *args]
    env = env or clean_env()
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def until(predicate: Callable[[], bool], limit: float = 60.0) -> bool:
    """Poll every 0.2 s; False if ``predicate`` never held within ``limit`` seconds (a hang guard)."""
    for _ in range(int(limit / 0.2)):
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture
def serve_registered(tmp_path: Path, kamailio: KamailioServer) -> Iterator[tuple[Path, str]]:
    """`vfax serve` with one device registered as 1001 at the Kamailio fixture; yields (config, API URL)."""
    api_port = free_port()
    config = tmp_path / "vfax.toml"
    config.write_text(f"""
data_dir = "{tmp_path / "data"}"
[api]
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"
[[devices]]
name = "line1"
listen = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
transports = ["udp"]
server = "{kamailio.host}:{kamailio.udp_port}"
user = "1001"
password = "{kamailio.users["1001"]}"
register = true
expires = 3600
keepalive_interval = 1
""")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "vfax.cli", "serve", "--config", str(config)], cwd=ROOT,
                            env=clean_env(), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    try:
        if not until(lambda: proc.poll() is not None or check_health(api, TOKEN, timeout=1).ok):
            raise AssertionError((tmp_path / "serve.log").read_text())
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield config, api
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_health_says_unregistered_once_the_registrar_is_gone(
    serve_registered: tuple[Path, str], kamailio: KamailioServer
) -> None:
    config, api = serve_registered
    healthy = health("--config", str(config), "--json")  # address and token from the config file alone
    assert healthy.returncode == 0, healthy.stderr
    verdict = json.loads(healthy.stdout)
    assert verdict["ok"] and verdict["devices"][0]["registration"] == "registered"

    kamailio.stop()
    # the binding lasts 3600 s and no refresh is due: only the keep-alives can notice
    assert until(lambda: not check_health(api, TOKEN, timeout=2).ok), "registered after the registrar died"
    sick = health("--config", str(config), "--json")
    assert sick.returncode == 1, sick.stderr
    verdict = json.loads(sick.stdout)
    assert verdict["ok"] is False and verdict["devices"][0]["registration"] != "registered"
    assert "line1" in verdict["reason"] and "not registered" in verdict["reason"]


def test_health_exits_1_for_a_refused_token_and_prefers_the_environment_to_the_file(
    serve_registered: tuple[Path, str],
) -> None:
    config, api = serve_registered
    wrong = health("--api", api, "--token", "not-the-token-0123456789")
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr
    # VFAX_API_TOKEN wins over the file's api.token (as it does for vfax serve itself)
    env_first = health("--config", str(config), env=clean_env(VFAX_API_TOKEN="not-the-token-0123456789"))
    assert env_first.returncode == 1 and "refused the token" in env_first.stderr
    by_env = health("--api", api, env=clean_env(VFAX_API_TOKEN=TOKEN))
    assert by_env.returncode == 0, by_env.stderr
    assert "1 registered" in by_env.stdout


def test_health_refuses_a_config_it_cannot_read(tmp_path: Path) -> None:
    result = health("--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_api_address_and_token_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "vfax.toml"
    config.write_text(f'data_dir = "x"\n[api]\nlisten = "0.0.0.0:8099"\ntoken = "{TOKEN}"\n')
    assert api_from_config(config, {}) == ("http://127.0.0.1:8099", TOKEN)
    assert api_from_config(config, {"VFAX_API_LISTEN": "[::1]:8100"}) == ("http://[::1]:8100", TOKEN)
    (tmp_path / "bare.toml").write_text('data_dir = "x"\n')
    assert api_from_config(tmp_path / "bare.toml", {}) == (None, None)
