"""SIP over TLS against Kamailio's TLS module, with a CA and certificates made by the test.

The server certificate names only ``DNS:fax.test`` (no IP address), which dnsmasq resolves to 127.0.0.1:
reaching the proxy as ``fax.test`` must work, reaching it as ``127.0.0.1`` or ``wrong.test`` (the same
socket) must be refused for the name, and a CA we were not given must be refused - each with a 503 whose
reason names the certificate problem, not a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests import docfactory
from tests.peers import dnsmasq as dns
from tests.peers.kamailio import find_kamailio
from tests.peers.kamailio_tls import KamailioTls, Pki, find_tls_module, make_pki
from tests.test_calls import fax_once, page, run
from vfax.call.fax_call import CallOptions
from vfax.call.line import FaxLine, LineConfig
from vfax.call.media import T38Policy
from vfax.call.tls import TlsConfigError, TlsSettings
from vfax.cli.sip import options_command, register_command
from vfax.service.config import ConfigError, device_line_config, parse_config

pytestmark = pytest.mark.skipif(
    find_kamailio() is None or find_tls_module() is None or not dns.available(),
    reason="needs kamailio, kamailio-tls-modules and dnsmasq (Debian packages)",
)

REALM = "fax.test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", server_names=(f"DNS:{REALM}",))


@pytest.fixture
def nameserver(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with dns.dnsmasq([dns.host(REALM), dns.host("wrong.test")], tmp_path / "dnsmasq.log") as address:
        yield address


def _kamailio(tmp_path: Path, pki: Pki, name: str, **kw: Any) -> KamailioTls:
    return KamailioTls(tmp_path / name, pki=pki, realm=REALM, **kw).start()


@pytest.fixture
def kamailio_tls(tmp_path: Path, pki: Pki) -> Iterator[KamailioTls]:
    server = _kamailio(tmp_path, pki, "kamailio")
    try:
        yield server
    finally:
        server.stop()


def _line(
    kam: KamailioTls, ns: tuple[str, int], host: str, user: str, tls: TlsSettings, **kw: Any
) -> LineConfig:
    return LineConfig(
        name=f"tls-{user}", server=f"sip:{host}:{kam.tls_port};transport=tls", user=user,
        password=kam.users[user], nameservers=(ns,), tls=tls, **kw,
    )  # fmt: skip


async def _register(config: LineConfig) -> Any:
    line = await FaxLine.open(config)
    try:
        return await asyncio.wait_for(line.register(), 30)
    finally:
        await line.close()


@pytest.mark.parametrize(("policy", "media"), [(T38Policy.AUTO, "t38"), (T38Policy.OFF, "g711")])
def test_fax_through_kamailio_over_tls_verified_against_the_configured_ca(
    tmp_path: Path, pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int], policy: T38Policy,
    media: str,
) -> None:
    kam = kamailio_tls
    # With a certificate the sender listens on TLS too: the proxy sends the receiver's re-INVITE and BYE
    # to the TLS Contact it registered.
    settings = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    tx_config = _line(kam, nameserver, REALM, "1004", settings, transports=("udp", "tcp", "tls"))
    tx_extra = {
        k: getattr(tx_config, k) for k in ("server", "user", "password", "nameservers", "tls", "transports")
    }
    rx_extra = {"server": kam.uri, "user": "1002", "password": kam.users["1002"]}

    async def register_both(tx: FaxLine, rx: FaxLine) -> None:
        result = await tx.register()
        assert result.ok, result
        assert (await rx.register()).ok

    sent, rec, _tx, _rx = run(
        fax_once(
            tmp_path, page(tmp_path), CallOptions(t38=policy), CallOptions(t38=T38Policy.AUTO), name="tls",
            tx_extra=tx_extra, rx_extra=rx_extra, to=lambda rx: "1002", setup=register_both,
        )
    )  # fmt: skip
    assert sent.ok and rec.outcome.ok and sent.media == media, (sent.end_reason, rec.outcome.end_reason)
    log = kam.log_text()
    assert "rx REGISTER sip:fax.test" in log and "from tls:127.0.0.1" in log
    lines = log.splitlines()
    assert any("rx INVITE sip:1002@fax.test" in line and "from tls:127.0.0.1" in line for line in lines)
    # the receiver's re-INVITE went on to our TLS listener (the Contact the sender registered)
    assert any("rx INVITE sip:1004@127.0.0.1:" in line and ";transport=tls" in line for line in lines)


def test_untrusted_ca_is_refused_with_a_reason(
    pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int]
) -> None:
    result = run(_register(_line(kamailio_tls, nameserver, REALM, "1001", TlsSettings(ca=pki.other_ca))))
    assert result.status == 503, result
    assert result.reason.startswith("TLS: certificate verify failed:"), result.reason
    # OpenSSL's words: "self-signed certificate in certificate chain" (Kamailio sends its CA along)
    assert "certificate" in result.reason.split(":", 2)[2], result.reason


@pytest.mark.parametrize("host", ["wrong.test", "127.0.0.1"])
def test_certificate_for_another_name_is_refused(
    pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int], host: str
) -> None:
    result = run(_register(_line(kamailio_tls, nameserver, host, "1001", TlsSettings(ca=pki.ca))))
    assert result.status == 503, result
    assert result.reason.startswith("TLS: certificate verify failed:"), result.reason
    assert "mismatch" in result.reason and host in result.reason, result.reason


def test_verify_false_connects_and_warns_naming_the_device(
    pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vfax.call.tls")
    settings = TlsSettings(ca=pki.other_ca, verify=False)
    result = run(_register(_line(kamailio_tls, nameserver, "127.0.0.1", "1001", settings)))
    assert result.ok, result
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "tls-1001" in r.getMessage()]
    assert warnings and "verification is OFF" in warnings[0].getMessage()


def test_client_certificate_is_presented_when_configured(
    tmp_path: Path, pki: Pki, nameserver: tuple[str, int]
) -> None:
    kam = _kamailio(tmp_path, pki, "kamailio-mtls", verify_client=True)
    try:
        without = run(_register(_line(kam, nameserver, REALM, "1001", TlsSettings(ca=pki.ca))))
        assert without.status == 503 and without.reason.startswith("TLS:"), without
        with_cert = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        result = run(_register(_line(kam, nameserver, REALM, "1001", with_cert)))
        assert result.ok, result
    finally:
        kam.stop()


def test_bad_tls_files_are_a_config_error_naming_the_key(tmp_path: Path, pki: Pki) -> None:
    cases = [
        ("tls_ca", TlsSettings(ca=tmp_path / "missing.pem")),
        ("tls_ca", TlsSettings(ca=pki.client_key)),
        ("tls_cert", TlsSettings(cert=tmp_path / "missing.pem")),
        ("tls_key", TlsSettings(cert=pki.client_cert, key=pki.server_key)),
        ("tls_key", TlsSettings(key=pki.client_key)),
    ]
    for key, settings in cases:
        with pytest.raises(TlsConfigError) as err:
            run(FaxLine.open(LineConfig(name="bad", tls=settings)))
        assert err.value.key == key and str(err.value).startswith(f"{key}: "), (key, err.value)


# -- the CLI ------------------------------------------------------------------------------------------


def _options_cli() -> typer.Typer:
    app = typer.Typer()
    app.command("options")(options_command)
    app.command("other")(lambda: None)  # two commands: typer keeps "options" as a subcommand
    return app


def test_cli_options_over_tls_checks_the_name_unless_told_not_to(pki: Pki, kamailio_tls: KamailioTls) -> None:
    uri = f"sip:127.0.0.1:{kamailio_tls.tls_port};transport=tls"  # the certificate names only fax.test
    refused = CliRunner().invoke(_options_cli(), ["options", uri, "--tls-ca", str(pki.ca), "--json"])
    assert refused.exit_code == 1, refused.output
    data = json.loads(refused.output)
    assert data["status"] == 503 and "mismatch" in data["reason"], data
    accepted = CliRunner().invoke(_options_cli(), ["options", uri, "--no-tls-verify", "--json"])
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.output)["status"] == 200


def test_cli_options_refuses_a_missing_ca_file_naming_the_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _options_cli(), ["options", "sip:127.0.0.1:5061;transport=tls", "--tls-ca", str(tmp_path / "no.pem")]
    )
    assert result.exit_code == 2 and "--tls-ca" in result.output and "does not exist" in result.output


def test_cli_send_over_tls_to_an_untrusted_server_fails_with_the_reason(
    tmp_path: Path, pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int]
) -> None:
    doc = docfactory.text_pdf(tmp_path / "doc.pdf", pages=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "vfax.cli", "send", str(doc), "--to", "1002",
         "--server", f"sip:{REALM}:{kamailio_tls.tls_port};transport=tls", "--user", "1004",
         "--password", kamailio_tls.users["1004"], "--dns", f"{nameserver[0]}:{nameserver[1]}",
         "--tls-ca", str(pki.other_ca), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    data = json.loads(done.stdout)
    assert not data["ok"] and "TLS: certificate verify failed" in json.dumps(data), data


# -- the configuration --------------------------------------------------------------------------------


def _device_config(device: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return parse_config({"data_dir": "/srv/vfax", "devices": [device]}, environ=environ or {})


def test_config_tls_keys_reach_the_line(tmp_path: Path, pki: Pki) -> None:
    config = _device_config(
        {"name": "a", "transports": ["udp", "tls"], "tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert),
         "tls_key": str(pki.client_key)},
        environ={"VFAX_DEVICE_A_TLS_VERIFY": "false"},
    )  # fmt: skip
    line = device_line_config(config.devices[0], None)
    assert line.tls == TlsSettings(ca=pki.ca, verify=False, cert=pki.client_cert, key=pki.client_key)
    assert line.transports == ("udp", "tls")
    empty = _device_config({"name": "a", "tls_ca": "", "tls_cert": ""})  # the sample's "none"
    assert device_line_config(empty.devices[0], None).tls == TlsSettings()


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"tls_ca": "/nonexistent/ca.pem"}, "devices[0].tls_ca: /nonexistent/ca.pem does not exist"),
        ({"tls_cert": "/nonexistent/c.pem"}, "devices[0].tls_cert: /nonexistent/c.pem does not exist"),
        ({"transports": ["tls"]}, "devices[0].tls_cert: required when transports lists tls"),
        ({"tls_verify": "no"}, "devices[0].tls_verify: must be true or false"),
    ],
)
def test_config_bad_tls_keys_are_errors_naming_the_key(device: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _device_config({"name": "a", **device})
    assert str(err.value).startswith(expected), str(err.value)


def test_config_unreadable_ca_is_an_error_naming_the_key(pki: Pki) -> None:
    with pytest.raises(ConfigError) as err:
        _device_config({"name": "a", "tls_ca": str(pki.client_key)})  # a key, not a certificate
    assert str(err.value).startswith("devices[0].tls_ca: "), str(err.value)


def _register_cli() -> typer.Typer:
    app = typer.Typer()
    app.command("register")(register_command)
    app.command("other")(lambda: None)
    return app


def test_cli_register_over_tls_verifies_the_registrar(
    pki: Pki, kamailio_tls: KamailioTls, nameserver: tuple[str, int]
) -> None:
    """`vfax register` over TLS: by name (found through --dns) the certificate is verified and the REGISTER
    made; by address the certificate's name does not match and the reason says so."""
    kam = kamailio_tls
    args = ["register", "--user", "1001", "--password", kam.users["1001"], "--json"]
    dns = f"{nameserver[0]}:{nameserver[1]}"
    ok = CliRunner().invoke(_register_cli(), [*args, "--server", f"sips:{REALM}:{kam.tls_port}",
                                              "--tls-ca", str(pki.ca), "--dns", dns])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert data["registered"] and data["unregistered"], data
    assert "from tls:127.0.0.1" in kam.log_text()
    by_address = ["--server", f"127.0.0.1:{kam.tls_port}", "--transport", "tls", "--tls-ca", str(pki.ca)]
    refused = CliRunner().invoke(_register_cli(), [*args, *by_address])
    assert refused.exit_code == 1, refused.output
    data = json.loads(refused.output)
    assert data["status"] == 503 and "mismatch" in data["reason"], data
