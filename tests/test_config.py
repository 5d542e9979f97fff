"""The service configuration: the example loads, every kind of mistake is refused naming its key, and
environment variables override the file as documented."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from vfax.call.fax_call import CallOptions
from vfax.call.media import T38Policy
from vfax.service.config import (
    ApiConfig,
    ConfigError,
    build_sinks,
    device_line_config,
    load_config,
    parse_config,
)
from vfax.service.events import JsonLinesSink, WebhookSink

EXAMPLE = Path(str(resources.files("vfax.samples") / "vfax.example.toml"))
TOKEN = "0123456789abcdef0123"


def minimal(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"data_dir": "/srv/vfax", "devices": [{"name": "line1"}]}
    data.update(extra)
    return data


def config_error(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=environ or {})
    return str(info.value)


# -- the example file ---------------------------------------------------------------------------


def test_example_config_loads_with_every_section() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.data_dir == Path("/var/lib/vfax")
    assert config.database == Path("/var/lib/vfax/vfax.db")
    assert config.api.listen == "127.0.0.1:8025"
    assert config.api.max_upload_bytes == 50 * 1024 * 1024
    assert [d.name for d in config.devices] == ["line1", "line2"]
    line1 = config.device("line1")
    assert (line1.register, line1.server, line1.user, line1.channels) == (True, "127.0.0.1:5070", "1001", 4)
    assert config.device("line2").t38 == "direct"
    assert [s.type for s in config.sinks] == ["jsonl", "webhook", "stdout"]
    assert config.retry.backoff == (60.0, 120.0, 300.0)


def test_example_documents_every_key_the_parser_knows() -> None:
    """The sample is the reference: a key the parser accepts but the sample omits is undocumented."""
    data = tomllib.loads(EXAMPLE.read_text())
    from vfax.service import config as cfg

    assert set(cfg._API_KEYS) <= set(data["api"])
    assert set(cfg._RETRY_KEYS) <= set(data["retry"])
    assert set(cfg._SERVICE_KEYS) - {"database", "node_id"} <= set(data["service"])  # node_id: commented
    assert set(cfg._DEVICE_KEYS) <= set(data["devices"][0])
    assert {"data_dir", "inbox", "database", "spool", "log_level"} <= set(data)


def test_defaults_fill_paths_under_data_dir_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    file = tmp_path / "etc" / "vfax.toml"
    file.parent.mkdir()
    file.write_text('data_dir = "data"\n[[devices]]\nname = "a"\n')
    config = load_config(file, environ={})
    assert config.data_dir == tmp_path / "etc" / "data"
    assert config.inbox == config.data_dir / "inbox"
    assert config.database == config.data_dir / "vfax.db"
    assert config.spool == config.data_dir / "spool"
    assert config.api == ApiConfig()
    assert config.devices[0].listen == "127.0.0.1:5060"


# -- mistakes name their key --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            minimal(devices=[{"name": "a"}, {"name": "b", "t38": "maybe"}]),
            "devices[1].t38: must be one of auto, off, only, direct, not 'maybe'",
        ),
        (minimal(api={"listne": "127.0.0.1:1"}), "api.listne: unknown key"),
        (minimal(dat_dir="/x"), "dat_dir: unknown key"),
        (minimal(devices=[{"name": "a", "chanels": 2}]), "devices[0].chanels: unknown key"),
        (
            minimal(devices=[{"name": "a", "channels": "4"}]),
            "devices[0].channels: must be an integer, not a string",
        ),
        (minimal(devices=[{"name": "a", "channels": True}]), "devices[0].channels: must be an integer"),
        (minimal(devices=[{"name": "a", "channels": 0}]), "devices[0].channels: must be >= 1"),
        (minimal(devices=[{"name": "a", "ecm": "yes"}]), "devices[0].ecm: must be true or false"),
        (minimal(devices=[{"name": "a", "max_bit_rate": 28800}]), "devices[0].max_bit_rate: must be one of"),
        (minimal(devices=[{"name": "a", "listen": "127.0.0.1"}]), "devices[0].listen: must be HOST:PORT"),
        (minimal(devices=[{"name": "a", "listen": "127.0.0.1:70000"}]), "devices[0].listen: port must be"),
        (minimal(devices=[{"name": "a", "listen": "pbx.example:5060"}]), "devices[0].listen: host must be"),
        (
            minimal(devices=[{"name": "a", "transports": ["udp", "sctp"]}]),
            "devices[0].transports[1]: must be one of",
        ),
        (
            minimal(devices=[{"name": "a", "register": True, "server": "127.0.0.1"}]),
            "devices[0].user: required when register = true",
        ),
        (minimal(devices=[{"name": "a", "ident": "x" * 21}]), "devices[0].ident: must be at most 20"),
        (minimal(devices=[{"name": "line1"}, {"name": "LINE1"}]), "devices[1].name: duplicate device name"),
        (minimal(devices=[{"name": "line-1"}, {"name": "line_1"}]), "devices[1].name: duplicate device name"),
        (minimal(devices=[{"name": "has space"}]), "devices[0].name: must be 1-32 letters"),
        (minimal(devices=[{"channels": 1}]), "devices[0].name: required"),
        (minimal(devices={"name": "a"}), "devices: must be a list, not a dict"),
        (
            minimal(api={"listen": "0.0.0.0:8025"}),
            "api.token: required when the API listens on a non-loopback",
        ),
        (minimal(api={"listen": "[::]:8025"}), "api.token: required"),
        (minimal(api={"token": "short"}), "api.token: must be at least 16 characters"),
        (minimal(api={"cors_origins": ["example.com"]}), "api.cors_origins[0]: must be an origin"),
        (minimal(api={"max_upload_mb": 0}), "api.max_upload_mb: must be >= "),
        (minimal(retry={"backoff": []}), "retry.backoff: must list at least one delay"),
        (minimal(retry={"backoff": [60, -1]}), "retry.backoff[1]: must be >= 0"),
        (minimal(retry={"max_attempts": 0}), "retry.max_attempts: must be >= 1"),
        (minimal(sinks=[{"type": "kafka"}]), "sinks[0].type: must be one of jsonl, webhook, stdout"),
        (minimal(sinks=[{"type": "webhook", "url": "http://127.0.0.1:9/x"}]), "sinks[0].secret: required"),
        (
            minimal(sinks=[{"type": "webhook", "url": "ftp://h/x", "secret": TOKEN}]),
            "sinks[0].url: must be an http",
        ),
        (minimal(sinks=[{"type": "jsonl"}]), "sinks[0].path: required for a jsonl sink"),
        (minimal(sinks=[{"type": "stdout", "path": "x"}]), "sinks[0].path: not used by a stdout sink"),
        (minimal(log_level="loud"), "log_level: must be one of debug, info, warning, error"),
        (minimal(devices=[{"name": "a", "advertise": "pbx.example"}]), "devices[0].advertise: must be an IP"),
        (minimal(devices=[{"name": "a", "advertise": "0.0.0.0"}]), "devices[0].advertise: 0.0.0.0 cannot"),
        (minimal(devices=[{"name": "a", "advertise": "192.0.2.7:0"}]), "devices[0].advertise: port must be"),
        (minimal(devices=[{"name": "a", "nameservers": ["dns.example"]}]), "nameservers[0]: must be"),
        ({"devices": []}, "data_dir: required"),
    ],
)
def test_invalid_config_is_refused_naming_the_key(data: dict[str, Any], expected: str) -> None:
    assert expected in config_error(data)


def test_error_message_starts_with_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(devices=[{"name": "a"}, {"name": "b", "t38": "maybe"}]), environ={})
    assert info.value.key == "devices[1].t38"
    assert str(info.value).startswith("devices[1].t38: ")


def test_unreadable_or_broken_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken, environ={})


def test_api_on_loopback_needs_no_token_but_elsewhere_does() -> None:
    assert parse_config(minimal(api={"listen": "[::1]:8025"}), environ={}).api.token is None
    assert parse_config(minimal(api={"listen": "localhost:8025"}), environ={}).api.token is None
    config = parse_config(minimal(api={"listen": "0.0.0.0:8025", "token": TOKEN}), environ={})
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8025)


# -- environment overrides ------------------------------------------------------------------------


def test_environment_overrides_sections_devices_and_top_level_keys() -> None:
    environ = {
        "VFAX_API_TOKEN": TOKEN,
        "VFAX_API_LISTEN": "0.0.0.0:9000",
        "VFAX_DEVICE_LINE1_PASSWORD": "from-env",
        "VFAX_DEVICE_LINE1_CHANNELS": "8",
        "VFAX_DEVICE_LINE1_ECM": "off",
        "VFAX_DEVICE_LINE1_ALLOW_INVITE_FROM": "127.0.0.1, ::1",
        "VFAX_RETRY_BACKOFF": "30,90",
        "VFAX_DATA_DIR": "/elsewhere",
        "VFAX_LOG_LEVEL": "debug",
        "VFAX_API": "http://127.0.0.1:1",  # the CLI client's variable: not configuration, ignored
        "VFAX_SIP_PASSWORD": "x",
        "HOME": "/root",
    }
    config = parse_config(minimal(), environ=environ)
    assert config.api.token == TOKEN and config.api.listen == "0.0.0.0:9000"
    dev = config.device("line1")
    assert (dev.password, dev.channels, dev.ecm) == ("from-env", 8, False)
    assert dev.allow_invite_from == ("127.0.0.1", "::1")
    assert config.retry.backoff == (30.0, 90.0)
    assert config.data_dir == Path("/elsewhere") and config.log_level == "debug"


def test_environment_override_of_the_example_file() -> None:
    config = load_config(
        EXAMPLE, environ={"VFAX_DEVICE_LINE1_PASSWORD": "s3cret", "VFAX_SINK_CRM_SECRET": "x" * 20}
    )
    assert config.device("line1").password == "s3cret"
    assert config.sinks[1].secret == "x" * 20


def test_device_names_with_dashes_are_matched_by_their_environment_form() -> None:
    data = minimal(devices=[{"name": "line-a"}, {"name": "line-a-b"}])
    config = parse_config(
        data, environ={"VFAX_DEVICE_LINE_A_B_CHANNELS": "2", "VFAX_DEVICE_LINE_A_T38": "off"}
    )
    assert config.device("line-a-b").channels == 2
    assert config.device("line-a").t38 == "off"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"VFAX_API_TOKNE": TOKEN}, "VFAX_API_TOKNE: unknown key api.tokne"),
        ({"VFAX_RETRY_MAX_ATTEMPTS": "many"}, "VFAX_RETRY_MAX_ATTEMPTS: 'many' is not a valid value"),
        ({"VFAX_DEVICE_LINE9_PASSWORD": "x"}, "VFAX_DEVICE_LINE9_PASSWORD: no device with a matching name"),
        ({"VFAX_DEVICE_LINE1_PASWORD": "x"}, "VFAX_DEVICE_LINE1_PASWORD: unknown device key 'pasword'"),
        ({"VFAX_DEVICE_LINE1_REGISTER": "maybe"}, "VFAX_DEVICE_LINE1_REGISTER: must be true or false"),
        ({"VFAX_DEVICE_LINE1_T38": "maybe"}, "devices[0].t38: must be one of auto, off, only, direct"),
        ({"VFAX_API_LISTEN": "0.0.0.0:8025"}, "api.token: required"),
    ],
)
def test_bad_environment_override_is_refused_naming_the_variable(
    environ: dict[str, str], expected: str
) -> None:
    assert expected in config_error(minimal(), environ)


def test_environment_does_not_change_the_parsed_input() -> None:
    data = minimal()
    parse_config(data, environ={"VFAX_DEVICE_LINE1_CHANNELS": "9"})
    assert data["devices"][0] == {"name": "line1"}


# -- from configuration to running objects ----------------------------------------------------------


def test_device_line_config_carries_every_device_setting(tmp_path: Path) -> None:
    data = minimal(
        devices=[
            {
                "name": "line1",
                "listen": "[::1]:5070",
                "transports": ["tcp"],
                "server": "127.0.0.1:5080",
                "user": "1001",
                "password": "pw",
                "register": True,
                "expires": 600,
                "channels": 7,
                "t38": "only",
                "ecm": False,
                "max_bit_rate": 9600,
                "ident": "+1 555 0100",
                "page_header": "ACME",
                "allow_invite_from": ["127.0.0.1"],
                "media_timeout": 12.5,
                "max_call_seconds": 600,
                "advertise": "[2001:db8::7]:5070",
                "nameservers": ["127.0.0.1:5353", "::1"],
            }
        ]
    )
    dev = parse_config(data, environ={}).devices[0]
    line = device_line_config(dev, tmp_path)
    assert line.advertise == ("2001:db8::7", 5070)
    assert line.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    assert (line.name, line.listen_host, line.listen_port, line.transports) == (
        "line1",
        "::1",
        5070,
        ("tcp",),
    )
    assert (line.server, line.user, line.password, line.register_expires) == (
        "127.0.0.1:5080",
        "1001",
        "pw",
        600,
    )
    assert (line.channels, line.allow_invite_from, line.inbox) == (7, ("127.0.0.1",), tmp_path)
    call: CallOptions = line.call
    assert call.t38 is T38Policy.ONLY
    assert (call.ecm, call.max_bit_rate, call.ident, call.page_header) == (False, 9600, "+1 555 0100", "ACME")
    assert (call.media_timeout, call.max_call_seconds) == (12.5, 600.0)


def test_trunk_keys_reach_the_line(tmp_path: Path) -> None:
    """SIP trunk keys (issue 14.2): outbound proxy, caller identity, dial plan; a typed number is
    normalised, "" is unset (but a dial_prefix of "" drops the +)."""
    trunk = {
        "name": "trunk", "server": "carrier.example",
        "outbound_proxy": "sip:sbc.carrier.example;transport=tcp",
        "caller_name": 'ACME "Fax"', "caller_number": "+49 (30) 123-456",
        "asserted_identity": "tel:+4930123456", "dial_prefix": "00", "user_phone": True,
    }  # fmt: skip
    plain = {"name": "plain", "caller_name": "", "asserted_identity": "", "dial_prefix": ""}
    config = parse_config(minimal(devices=[trunk, plain]), environ={"VFAX_DEVICE_PLAIN_USER_PHONE": "yes"})
    line = device_line_config(config.device("trunk"), tmp_path)
    assert line.proxy_uri == "sip:sbc.carrier.example;transport=tcp"
    assert (line.caller.name, line.caller.user, line.caller.asserted) == (
        'ACME "Fax"', "+4930123456", "tel:+4930123456"
    )
    assert (line.dial.prefix, line.dial.user_phone) == ("00", True)
    other = device_line_config(config.device("plain"), tmp_path)
    assert not other.caller and other.outbound_proxy is None
    assert (other.dial.prefix, other.dial.user_phone) == ("", True)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"outbound_proxy": "sip:bad host"}, "devices[0].outbound_proxy: must be HOST[:PORT] or a SIP URI"),
        ({"caller_name": "ACME\nX-Evil: 1"}, "devices[0].caller_name: must not contain control characters"),
        ({"caller_number": "+49 30 / fax"}, "devices[0].caller_number: a SIP user part may hold"),
        ({"caller_number": "+1234567890123456"}, "devices[0].caller_number: '+1234567890123456' has 16"),
        ({"asserted_identity": "mailto:x@y"}, "devices[0].asserted_identity: an asserted identity is a sip:"),
        ({"asserted_identity": "tel:030123"}, "devices[0].asserted_identity: a tel: identity must be a"),
        ({"dial_prefix": "x0"}, "devices[0].dial_prefix: a dial prefix is '+' or up to 8 digits"),
        ({"user_phone": "yes"}, "devices[0].user_phone: must be true or false"),
    ],
)
def test_bad_trunk_keys_are_refused_naming_the_key(device: dict[str, Any], expected: str) -> None:
    assert expected in config_error(minimal(devices=[{"name": "t", **device}]))


def test_sinks_are_built_with_their_configured_names(tmp_path: Path) -> None:
    data = minimal(
        sinks=[
            {"type": "jsonl", "path": str(tmp_path / "events.jsonl")},
            {"type": "webhook", "name": "crm", "url": "http://127.0.0.1:9/hook", "secret": TOKEN},
            {"type": "stdout"},
        ]
    )
    sinks = build_sinks(parse_config(data, environ={}).sinks)
    assert isinstance(sinks[0], JsonLinesSink) and sinks[0].path == tmp_path / "events.jsonl"
    assert isinstance(sinks[1], WebhookSink) and sinks[1].name == "crm"
    assert isinstance(sinks[2], JsonLinesSink) and sinks[2].path == "-"


def test_secrets_do_not_appear_in_repr() -> None:
    config = parse_config(
        minimal(
            devices=[{"name": "a", "password": "hunter2-password"}],
            sinks=[{"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "webhook-secret-123456"}],
        ),
        environ={},
    )
    assert "hunter2" not in repr(config)
    assert "webhook-secret" not in repr(config)


# -- the database and this node of a cluster ----------------------------------------------------------


def test_database_is_a_sqlite_path_or_a_postgresql_url(tmp_path: Path) -> None:
    assert parse_config(minimal(), environ={}).database == Path("/srv/vfax/vfax.db")
    assert parse_config(minimal(database="db/x.db"), base_dir=tmp_path, environ={}).database == (
        tmp_path / "db" / "x.db"
    )
    url = "postgresql://vfax:s3cret@127.0.0.1:5432/vfax"
    config = parse_config(minimal(database=url), environ={})
    assert config.database == url and config.is_postgres
    assert config.database_shown == "postgresql://vfax:***@127.0.0.1:5432/vfax"
    # the new [service] table may hold it too, and VFAX_DATABASE overrides either place
    assert parse_config(minimal(service={"database": url}), environ={}).database == url
    env = {"VFAX_DATABASE": "postgres://h/db"}
    assert parse_config(minimal(service={"database": url}), environ=env).database == "postgres://h/db"
    assert parse_config(minimal(database="/x.db"), environ=env).database == "postgres://h/db"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mysql://vfax@127.0.0.1/vfax", "database: must be a SQLite file path or a PostgreSQL URL"),
        ("sqlite:///var/lib/vfax.db", "database: must be a SQLite file path or a PostgreSQL URL"),
        ("postgresql://vfax:pw@127.0.0.1:99999/vfax", "database: not a valid PostgreSQL URL"),
        ("postgresql://127.0.0.1:5432", "database: names no database"),
        ("", "database: must not be empty"),
    ],
)
def test_bad_database_values_are_refused_naming_the_key(value: str, expected: str) -> None:
    message = config_error(minimal(database=value))
    assert message.startswith(expected)
    assert "pw@" not in message  # never the password


def test_a_database_path_that_cannot_be_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert config_error(minimal(database=str(tmp_path))).startswith("database: ")
    assert "is a directory" in config_error(minimal(database=str(tmp_path)))
    assert "is a file, not a directory" in config_error(minimal(database=str(tmp_path / "afile" / "v.db")))
    both = minimal(database="/a.db", service={"database": "/b.db"})
    assert config_error(both).startswith("service.database: set either")


def test_node_settings_defaults_validation_and_environment() -> None:
    node = parse_config(minimal(), environ={}).node
    assert (node.node_id, node.lease_seconds, node.heartbeat_seconds, node.give_up_seconds) == (
        None, 60.0, 10.0, 30.0,
    )  # fmt: skip
    env = {
        "VFAX_NODE_ID": "fax-a.example:1",
        "VFAX_SERVICE_LEASE_SECONDS": "20",
        "VFAX_SERVICE_GIVE_UP_SECONDS": "8",
    }
    node = parse_config(minimal(service={"heartbeat_seconds": 2}), environ=env).node
    assert (node.node_id, node.lease_seconds, node.heartbeat_seconds, node.give_up_seconds) == (
        "fax-a.example:1", 20.0, 2.0, 8.0,
    )  # fmt: skip
    assert config_error(minimal(service={"give_up_seconds": 60})).startswith(
        "service.give_up_seconds: must be less than service.lease_seconds (60)"
    )
    assert config_error(minimal(service={"heartbeat_seconds": 30})).startswith(
        "service.heartbeat_seconds: must be less than service.give_up_seconds (30)"
    )
    assert config_error(minimal(service={"node_id": "has space"})).startswith("service.node_id: must be")
    assert parse_config(minimal(), environ={}).node.forget_nodes_after == 7 * 86400
    env = {"VFAX_SERVICE_FORGET_NODES_AFTER": "3600"}
    assert parse_config(minimal(), environ=env).node.forget_nodes_after == 3600
    assert config_error(minimal(service={"forget_nodes_after": 60})).startswith(
        "service.forget_nodes_after: must be more than service.lease_seconds (60)"
    )
    soon = minimal(service={"forget_nodes_after": "soon"})
    assert config_error(soon).startswith("service.forget_nodes_after")
    assert config_error(minimal(service={"nodeid": "a"})).startswith("service.nodeid: unknown key")
    assert config_error(minimal(), {"VFAX_SERVICE_LEASE": "3"}).startswith("VFAX_SERVICE_LEASE: unknown key")


def test_symmetric_media_is_auto_true_or_false_from_the_file_or_the_environment(tmp_path: Path) -> None:
    data = minimal(devices=[{"name": "a"}, {"name": "b", "symmetric_media": False}, {"name": "c"}])
    config = parse_config(
        data, environ={"VFAX_DEVICE_C_SYMMETRIC_MEDIA": "on", "VFAX_DEVICE_B_SYMMETRIC_MEDIA": "auto"}
    )
    # auto (None) leaves it to the line: on with a server, off without (vfax.call.line.FaxLine)
    assert [config.device(n).symmetric_media for n in "abc"] == [None, None, True]
    assert device_line_config(config.device("c"), tmp_path).call.symmetric_media is True
    assert load_config(EXAMPLE, environ={}).device("line1").symmetric_media is None
    bad = r"devices\[0\].symmetric_media: must be \"auto\", true or false, not 'yes'"
    with pytest.raises(ConfigError, match=bad):
        parse_config(minimal(devices=[{"name": "a", "symmetric_media": "yes"}]), environ={})
    with pytest.raises(ConfigError, match="VFAX_DEVICE_A_SYMMETRIC_MEDIA: must be auto, true or false"):
        parse_config(minimal(devices=[{"name": "a"}]), environ={"VFAX_DEVICE_A_SYMMETRIC_MEDIA": "maybe"})
