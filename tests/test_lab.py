"""The Asterisk lab and the cluster profile (compose.yaml, lab/, Dockerfile, docs/lab.md, docs/cluster.md)
checked without a Docker engine.

CI has the docker client at most, never an engine, so nothing here starts a container. What a user would
hit on `docker compose up` is checked statically instead: the compose file has the shape the Compose
specification requires (and `docker compose config` accepts it where the compose plugin exists), every
file it mounts exists, the Asterisk configs parse as Asterisk reads them, and every credential,
extension, address and port agrees between the Asterisk side, the vfax side and the docs. The health
command of the image is exercised against a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, ClassVar, get_type_hints
from urllib.parse import urlsplit

import pytest
import typer
from typer.testing import CliRunner

from vfax.cli.health import check_health, evaluate_devices, health_command
from vfax.cli.serve import serve_command
from vfax.service.config import ConfigError, ServiceConfig, load_config, parse_config, parse_listen

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
ASTERISK_DIR = ROOT / "lab" / "asterisk"
LAB_MD = ROOT / "docs" / "lab.md"
ASTERISK_HEALTH = ASTERISK_DIR / "healthcheck.sh"
PBX_MD = ROOT / "docs" / "pbx.md"
REQUIRED_ASTERISK_FILES = (
    "pjsip.conf",
    "extensions.conf",
    "udptl.conf",
    "rtp.conf",
    "res_fax.conf",
    "modules.conf",
    "logger.conf",
)
VFAX_SERVICES = {"vfax-sender": "lab/vfax/sender.toml", "vfax-receiver": "lab/vfax/receiver.toml"}
LAB_SERVICES = {"asterisk", *VFAX_SERVICES}
CLUSTER_DIR = ROOT / "lab" / "cluster"
CLUSTER_MD = ROOT / "docs" / "cluster.md"
CLUSTER_NODES = {f"vfax-node{i}": f"lab/cluster/node{i}.toml" for i in (1, 2, 3)}
CLUSTER_SERVICES = {"postgres", "kamailio", *CLUSTER_NODES}
#: Top-level keys of the Compose specification (compose-spec/schema/compose-spec.json).
COMPOSE_TOP_LEVEL = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs"}
#: Service keys this lab may use, all from the Compose specification's service definition.
COMPOSE_SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "volumes", "ports", "networks",
    "depends_on", "healthcheck", "restart", "read_only", "tmpfs", "cap_drop", "cap_add",
    "security_opt", "user", "working_dir", "labels", "logging", "stop_grace_period", "init",
    "pull_policy", "profiles", "hostname",
}  # fmt: skip
#: What an unfinished config looks like: "changeme", "TODO", "<...>", "<PBX_IP>", "<your-password>".
PLACEHOLDERS = re.compile(
    r"(?i:change[-_ ]?me|\bTODO\b|\bFIXME\b|\bXXX\b|your[-_ ]?(password|secret|token)|\bplaceholder\b"
    r"|example\.com|<\.\.\.>|<your[^>]*>)|<[A-Z][A-Z0-9_]+>|<[a-z]+(?:[-_ ][a-z]+)+>"
)


# --------------------------------------------------------------------------------------------------
# A reader of Asterisk's configuration format (main/config.c), strict enough to catch what Asterisk
# would refuse or silently misread: [section], [section](!), [section](template,...), key=value,
# key => value, ';' comments (a '\;' is a literal semicolon), no text outside a section.
# --------------------------------------------------------------------------------------------------


class AsteriskConfError(ValueError):
    """A line Asterisk's config parser would not read as intended (names file and line)."""


@dataclass
class Section:
    name: str
    line: int
    is_template: bool = False
    templates: list[str] = field(default_factory=list)
    items: list[tuple[str, str, int]] = field(default_factory=list)  # key, value, line

    def get(self, key: str) -> str | None:
        values = [v for k, v, _ in self.items if k == key]
        return values[-1] if values else None

    def all(self, key: str) -> list[str]:
        return [v for k, v, _ in self.items if k == key]


_SECTION = re.compile(r"^\[([^\[\]]+)\](?:\(([^()]*)\))?$")


def _strip_comment(line: str) -> str:
    out = []
    i = 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out).strip()


def parse_asterisk_conf(text: str, where: str = "<conf>") -> list[Section]:
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith(";--"):
            raise AsteriskConfError(f"{where}:{number}: block comments are not used in the lab")
        line = _strip_comment(raw)
        if not line:
            continue
        if line.startswith("#"):
            raise AsteriskConfError(
                f"{where}:{number}: #include/#exec would pull in files the lab does not ship"
            )
        if line.startswith("["):
            match = _SECTION.match(line)
            if not match:
                raise AsteriskConfError(f"{where}:{number}: malformed section header {line!r}")
            flags = [f.strip() for f in (match.group(2) or "").split(",") if f.strip()]
            current = Section(
                match.group(1).strip(),
                number,
                is_template="!" in flags,
                templates=[f for f in flags if f != "!"],
            )
            sections.append(current)
            continue
        if current is None:
            raise AsteriskConfError(f"{where}:{number}: {line!r} is outside any [section]")
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise AsteriskConfError(f"{where}:{number}: expected key=value, got {line!r}")
        if value.startswith(">"):
            value = value[1:]
        current.items.append((key.strip(), value.strip(), number))
    return sections


def read_conf(name: str) -> list[Section]:
    path = ASTERISK_DIR / name
    return parse_asterisk_conf(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def resolved_objects(sections: list[Section]) -> list[Section]:
    """pjsip.conf objects with their templates applied (template options first, own options last)."""
    by_name = {s.name: s for s in sections if s.is_template}
    out = []
    for sec in sections:
        if sec.is_template:
            continue
        items: list[tuple[str, str, int]] = []
        for tpl in sec.templates:
            if tpl not in by_name:
                raise AsteriskConfError(f"[{sec.name}] uses the unknown template {tpl!r}")
            items.extend(by_name[tpl].items)
        out.append(Section(sec.name, sec.line, items=items + sec.items))
    return out


def pjsip_objects(kind: str) -> dict[str, Section]:
    objects = [o for o in resolved_objects(read_conf("pjsip.conf")) if o.get("type") == kind]
    return {o.name: o for o in objects}


@dataclass
class Step:
    exten: str
    priority: str
    label: str | None
    app: str
    args: str
    line: int


_STEP = re.compile(
    r"^(?P<prio>\d+|n|hint)(?:\((?P<label>[A-Za-z0-9_-]+)\))?,(?P<app>[A-Za-z0-9_]+)(?:\((?P<args>.*)\))?$"
)


def dialplan() -> dict[str, list[Step]]:
    """Context -> the steps of its extensions, read from extensions.conf as pbx_config does."""
    contexts: dict[str, list[Step]] = {}
    for sec in read_conf("extensions.conf"):
        if sec.name in ("general", "globals"):
            continue
        steps: list[Step] = []
        current: str | None = None
        for key, value, line in sec.items:
            if key == "exten":
                current, _, rest = value.partition(",")
                current = current.strip()
            elif key == "same":
                if current is None:
                    raise AsteriskConfError(f"extensions.conf:{line}: 'same' before any 'exten'")
                rest = value
            else:
                raise AsteriskConfError(f"extensions.conf:{line}: unexpected key {key!r} in [{sec.name}]")
            match = _STEP.match(rest.strip())
            if not match:
                raise AsteriskConfError(f"extensions.conf:{line}: cannot read the step {rest!r}")
            steps.append(
                Step(current, match["prio"], match["label"], match["app"], match["args"] or "", line)
            )
        contexts[sec.name] = steps
    return contexts


def globals_() -> dict[str, str]:
    for sec in read_conf("extensions.conf"):
        if sec.name == "globals":
            return {k: v for k, v, _ in sec.items}
    return {}


# --------------------------------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (test extra) is needed to read compose.yaml")
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose variable interpolation of ${VAR} and ${VAR:-default} (the forms the lab uses)."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value).replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    env = compose()["services"][name].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def service_ip(name: str) -> str:
    nets = compose()["services"][name]["networks"]
    (net,) = nets.values()
    return str(net["ipv4_address"])


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts (short syntax ./src:/dst[:ro] and long syntax)."""
    mounts = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                mounts.append((vol["source"], vol["target"]))
            continue
        source, _, rest = vol.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


def named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "volume":
                out.append((vol["source"], vol["target"]))
            continue
        source, _, rest = vol.partition(":")
        if not source.startswith((".", "/", "~")) and rest:
            out.append((source, rest.split(":")[0]))
    return out


def lab_config(service: str) -> ServiceConfig:
    return load_config(ROOT / VFAX_SERVICES[service], environ=service_env(service))


def test_compose_file_has_only_compose_spec_keys_and_the_lab_and_cluster_services() -> None:
    data = compose()
    unknown = {k for k in data if k not in COMPOSE_TOP_LEVEL and not k.startswith("x-")}
    assert not unknown, f"not Compose specification top-level keys: {unknown}"
    assert set(data["services"]) == LAB_SERVICES | CLUSTER_SERVICES
    for name, svc in data["services"].items():
        bad = set(svc) - COMPOSE_SERVICE_KEYS
        assert not bad, f"service {name}: keys outside what the lab uses of the Compose spec: {bad}"
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"


#: An exact release in an image tag. PostgreSQL numbers its releases MAJOR.MINOR (15.18) since version 10.
EXACT_VERSION = {"postgres": r"^\d{2,}\.\d+-"}


def test_pulled_images_are_pinned_to_an_exact_version_not_latest() -> None:
    services = compose()["services"]
    built = {svc["image"] for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        if "build" in svc or svc["image"] in built:
            continue
        image = svc["image"]
        _repo, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag not in ("latest", "stable", "edge") and not tag.isdigit(), (
            f"{name}: {image!r} is not pinned"
        )
        exact = EXACT_VERSION.get(_repo, r"^\d+\.\d+\.\d+")
        assert re.match(exact, tag), f"{name}: {image!r} does not name an exact version"


def test_every_service_has_a_healthcheck_that_runs_a_command() -> None:
    for name, svc in compose()["services"].items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert isinstance(check["test"], list) and check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "start_period"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", str(check[key])), f"{name}.healthcheck.{key}"


def test_vfax_healthcheck_is_the_registration_check_of_the_cli() -> None:
    for name in VFAX_SERVICES:
        test = compose()["services"][name]["healthcheck"]["test"]
        assert test[1:3] == ["vfax", "health"], f"{name}: healthcheck must be `vfax health`"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'HEALTHCHECK[^\n]*(\\\n[^\n]*)*CMD \["vfax", "health"', dockerfile)


HEALTH_TARGET = "/usr/local/lib/vfax-lab/healthcheck.sh"


def test_asterisk_healthcheck_is_the_lab_script_run_by_sh() -> None:
    """The image's healthcheck.sh pipes `asterisk -rx` into `grep -q` under pipefail: grep leaves at its
    first match, the CLI still writing dies of SIGPIPE (141) and the check fails at random."""
    asterisk = compose()["services"]["asterisk"]
    assert asterisk["healthcheck"]["test"] == ["CMD", "sh", HEALTH_TARGET]
    assert ("./lab/asterisk/healthcheck.sh", HEALTH_TARGET) in bind_mounts(asterisk)
    assert f"./lab/asterisk/healthcheck.sh:{HEALTH_TARGET}:ro" in asterisk["volumes"]


def test_asterisk_healthcheck_reads_every_cli_answer_whole() -> None:
    text = ASTERISK_HEALTH.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n")
    code = [ln.split("#", 1)[0] for ln in text.splitlines()]
    assert not any(re.search(r"\|\s*(grep|head|sed|awk)\b", ln) for ln in code), "a pipe into a reader"
    assert not any("pipefail" in ln for ln in code)
    assert not any(re.search(r"asterisk\b[^|]*\|[^|]", ln) for ln in code), "asterisk's output is piped"
    result = subprocess.run(["sh", "-n", str(ASTERISK_HEALTH)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_asterisk_healthcheck_requires_only_modules_asterisk_must_load() -> None:
    (section,) = read_conf("modules.conf")
    text = ASTERISK_HEALTH.read_text(encoding="utf-8")
    (modules,) = re.findall(r'^MODULES="([^"]+)"', text, re.MULTILINE)
    assert set(modules.split()) <= set(section.all("require")) and "res_fax_spandsp.so" in modules.split()


#: Stands in for the `asterisk` binary on PATH (the script under test is ours, not the PBX): answers
#: `-rx CMD` as Asterisk 22's CLI prints it, and appends CMD to $FAKE_LOG only after its last line, so
#: a CLI killed by SIGPIPE mid-answer leaves no trace there.
FAKE_ASTERISK = """#!/bin/sh
[ "$1" = "-rx" ] || exit 64
if [ "$FAKE_MODE" = down ]; then
    echo "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)"
    exit 1
fi
case "$2" in
"core show uptime")
    echo "System uptime: 2 minutes, 5 seconds"
    echo "Last reload: 2 minutes, 5 seconds" ;;
"module show")
    printf '%-30s %-40.40s %-10s %-11s %13s\\n' Module Description "Use Count" Status "Support Level"
    for m in chan_pjsip res_pjsip res_pjsip_t38 res_fax res_fax_spandsp; do
        status=Running
        [ "$FAKE_MODE" = "stopped:$m" ] && status="Not Running"
        [ "$FAKE_MODE" = "missing:$m" ] && continue
        printf '%-30s %-40.40s %-10d %-11s %13s\\n' "$m.so" "a module" 0 "$status" core
    done
    # an answer far bigger than a pipe buffer, as a full `module show` can be
    i=0
    while [ $i -lt 3000 ]; do
        printf '%-30s %-40.40s %-10d %-11s %13s\\n' "app_filler$i.so" "filler" 0 Running extended
        i=$((i + 1))
    done
    echo "3005 modules loaded" ;;
*) echo "No such command '$2' (type 'core show help $2' for other possible commands)"; exit 1 ;;
esac
echo "$2" >> "$FAKE_LOG"
"""


def run_asterisk_health(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "asterisk"
    fake.write_text(FAKE_ASTERISK)
    fake.chmod(0o755)
    log = tmp_path / "cli.log"
    log.touch()
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_MODE": mode, "FAKE_LOG": str(log)}
    result = subprocess.run(
        ["sh", str(ASTERISK_HEALTH)], capture_output=True, text=True, env=env, timeout=60
    )
    return result, log.read_text().splitlines()


def test_asterisk_healthcheck_passes_when_the_cli_answers_and_the_fax_modules_run(tmp_path: Path) -> None:
    result, answered = run_asterisk_health(tmp_path, "up")
    assert result.returncode == 0, result.stdout + result.stderr
    # both answers were read to their last line: nothing cut the CLI off
    assert answered == ["core show uptime", "module show"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("down", "does not answer"),
        ("stopped:res_fax_spandsp", "res_fax_spandsp.so is not running"),
        ("missing:chan_pjsip", "chan_pjsip.so is not running"),
    ],
)
def test_asterisk_healthcheck_fails_with_the_reason(tmp_path: Path, mode: str, reason: str) -> None:
    result, _ = run_asterisk_health(tmp_path, mode)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stdout + result.stderr


def test_every_named_volume_and_network_used_is_declared() -> None:
    data = compose()
    declared_volumes = set(data.get("volumes") or {})
    declared_networks = set(data.get("networks") or {})
    assert len(declared_networks) == 1, "the lab runs on one network"
    for name, svc in data["services"].items():
        for source, _ in named_volumes(svc):
            assert source in declared_volumes, f"{name} mounts the undeclared volume {source!r}"
        assert set(svc["networks"]) <= declared_networks, f"{name} joins an undeclared network"


def test_received_faxes_land_in_the_named_inbox_volume() -> None:
    receiver = compose()["services"]["vfax-receiver"]
    targets = dict((t, s) for s, t in named_volumes(receiver))
    inbox = str(lab_config("vfax-receiver").inbox)
    assert targets.get(inbox) == "vfax-inbox", f"the receiver's inbox {inbox} is not the vfax-inbox volume"


def test_faxes_asterisk_receives_survive_compose_down_in_a_named_volume() -> None:
    """The image declares /var/spool/asterisk a VOLUME: unnamed, `docker compose down` drops it."""
    asterisk = compose()["services"]["asterisk"]
    targets = {t: s for s, t in named_volumes(asterisk)}
    assert targets.get("/var/spool/asterisk") == "asterisk-spool", "Asterisk's spool is not a named volume"
    faxdir = globals_()["FAXDIR"]
    assert Path(faxdir).is_relative_to("/var/spool/asterisk"), f"ReceiveFAX writes {faxdir}, off the volume"


def test_the_vfax_image_is_built_once_and_shared() -> None:
    """Two services with `build:` and one image name build the same image twice, racing for the tag."""
    services = compose()["services"]
    image = services["vfax-sender"]["image"]
    builders = [name for name, svc in services.items() if "build" in svc and svc.get("image") == image]
    assert builders == ["vfax-sender"], f"services that build the vfax image: {builders}"
    assert services["vfax-sender"]["build"]["dockerfile"] == "Dockerfile"
    image = services["vfax-sender"]["image"]
    receiver = services["vfax-receiver"]
    assert receiver["image"] == image, "vfax-receiver must run the image vfax-sender builds"
    assert receiver.get("pull_policy") == "never", "vfax-receiver would try to pull a local image"


def test_fixed_addresses_are_unique_and_inside_the_lab_subnet() -> None:
    data = compose()
    (net,) = data["networks"].values()
    subnet = ip_network(net["ipam"]["config"][0]["subnet"])
    addresses = [ip_address(service_ip(name)) for name in data["services"]]
    assert len(set(addresses)) == len(addresses)
    assert all(a in subnet for a in addresses), f"{addresses} not all in {subnet}"


def test_published_ports_bind_to_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec!r} beyond 127.0.0.1"


def test_every_file_the_compose_mounts_exists() -> None:
    mounted = []
    for name, svc in compose()["services"].items():
        for source, target in bind_mounts(svc):
            path = (COMPOSE.parent / source).resolve()
            if path.is_dir():  # Kamailio mounts lab/cluster/ whole (test_kamailio_runs_the_lab_config...)
                assert (name, source) == ("kamailio", "./lab/cluster"), f"{name} mounts the folder {source}"
                continue
            assert path.is_file(), f"{name} mounts {source} at {target}, which does not exist"
            mounted.append(path)
    for conf in REQUIRED_ASTERISK_FILES:
        assert ASTERISK_DIR / conf in mounted, f"lab/asterisk/{conf} is not mounted into Asterisk"


def test_asterisk_configs_land_where_asterisk_reads_them() -> None:
    mounts = bind_mounts(compose()["services"]["asterisk"])
    for source, target in mounts:
        assert source.startswith("./lab/asterisk/"), source
        if source.endswith(".conf"):
            assert target == f"/etc/asterisk/{Path(source).name}", f"{source} mounted at {target}"
        else:
            assert source == "./lab/asterisk/healthcheck.sh", f"{source}: not a config nor the health check"
    for vol in compose()["services"]["asterisk"]["volumes"]:
        if isinstance(vol, str) and vol.startswith("./"):
            assert vol.endswith(":ro"), f"{vol}: a lab file mounted writable"


def test_each_vfax_service_reads_its_own_lab_config() -> None:
    for name, toml in VFAX_SERVICES.items():
        svc = compose()["services"][name]
        command = svc["command"]
        config_path = command[command.index("--config") + 1]
        assert (f"./{toml}", config_path) in bind_mounts(svc), (
            f"{name} does not mount {toml} at {config_path}"
        )


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine; the structural checks above stand in")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here; the structural checks above stand in")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# Asterisk configs: complete, readable, consistent
# --------------------------------------------------------------------------------------------------


def test_every_asterisk_config_parses_and_has_sections() -> None:
    for name in REQUIRED_ASTERISK_FILES:
        sections = read_conf(name)
        assert sections, f"{name} is empty"


def test_parser_rejects_what_asterisk_would_misread() -> None:
    for bad in ("key=value\n", "[sec\nkey=value\n", "[sec]\njust words\n", "[sec]\n#include other.conf\n"):
        with pytest.raises(AsteriskConfError):
            parse_asterisk_conf(bad)
    (sec,) = parse_asterisk_conf("[a](!,tpl)\nexten => 1,1,NoOp(x\\;y) ; comment\n")
    assert sec.is_template and sec.templates == ["tpl"] and sec.items[0][:2] == ("exten", "1,1,NoOp(x;y)")


def test_pjsip_has_a_udp_transport_on_5060() -> None:
    transports = pjsip_objects("transport")
    udp = [t for t in transports.values() if t.get("protocol") == "udp"]
    assert udp, "no UDP transport"
    assert parse_listen(udp[0].get("bind") or "", "bind")[1] == 5060


def test_each_vfax_device_has_a_matching_endpoint_auth_and_aor() -> None:
    endpoints, auths, aors = pjsip_objects("endpoint"), pjsip_objects("auth"), pjsip_objects("aor")
    for service in VFAX_SERVICES:
        (dev,) = lab_config(service).devices
        assert dev.register and dev.user and dev.password
        endpoint = endpoints.get(dev.user)
        assert endpoint is not None, f"no endpoint named {dev.user} (Asterisk identifies the device by user)"
        auth = auths[endpoint.get("auth") or ""]
        assert auth.get("auth_type") in ("userpass", "digest"), "digest authentication expected"
        assert auth.get("username") == dev.user, f"{service}: SIP user differs from pjsip.conf"
        assert auth.get("password") == dev.password, f"{service}: SIP password differs from pjsip.conf"
        assert dev.user in (endpoint.get("aors") or "").split(","), f"{service}: endpoint lacks its AOR"
        assert aors[dev.user].get("max_contacts") == "1"


def test_vfax_devices_register_to_asterisk_at_its_address_and_port() -> None:
    transport_port = parse_listen(pjsip_objects("transport")["transport-udp"].get("bind") or "")[1]
    asterisk_ip = service_ip("asterisk")
    for service in VFAX_SERVICES:
        (dev,) = lab_config(service).devices
        host, port = parse_listen(dev.server or "", "server")
        assert (host, port) == (asterisk_ip, transport_port), f"{service} registers to {dev.server}"
        listen_host, _ = parse_listen(dev.listen)
        assert listen_host == service_ip(service), f"{service} listens on {dev.listen}, not its own address"
        assert dev.transports == ("udp",)
        assert dev.allow_invite_from == (asterisk_ip,), f"{service} must take calls from Asterisk only"


def test_fax_endpoints_carry_the_t38_and_media_options() -> None:
    for name, endpoint in pjsip_objects("endpoint").items():
        assert endpoint.get("direct_media") == "no", name
        assert endpoint.all("disallow")[:1] == ["all"], name
        assert set((endpoint.get("allow") or "").split(",")) == {"ulaw", "alaw"}, name
        for key in ("rtp_symmetric", "force_rport", "rewrite_contact"):
            assert endpoint.get(key) == "yes", f"{name}.{key}"
        assert endpoint.get("t38_udptl_ec") == "redundancy", name
        assert int(endpoint.get("t38_udptl_maxdatagram") or 0) >= 272, name
        assert endpoint.get("context") in dialplan(), f"{name}: context is not in extensions.conf"
        expected = "no" if name.endswith("-g711") else "yes"
        assert endpoint.get("t38_udptl") == expected, name


def test_every_dial_target_is_an_endpoint_whose_aor_a_device_registers() -> None:
    endpoints = pjsip_objects("endpoint")
    device_users = {lab_config(s).devices[0].user for s in VFAX_SERVICES}
    targets = [
        target
        for steps in dialplan().values()
        for step in steps
        if step.app == "Dial"
        for target in re.findall(r"PJSIP/([^,&)/\s]+)", step.args)
    ]
    assert targets, "the dialplan dials no vfax device"
    for target in targets:
        assert target in endpoints, f"Dial(PJSIP/{target}): no such endpoint"
        aors = set((endpoints[target].get("aors") or "").split(","))
        assert aors & device_users, f"PJSIP/{target} reaches no AOR a vfax device registers"


def test_dialplan_runs_receivefax_and_sendfax_with_a_file_and_t38_options() -> None:
    steps = [s for ctx in dialplan().values() for s in ctx]
    receive = [s for s in steps if s.app == "ReceiveFAX"]
    send = [s for s in steps if s.app == "SendFAX"]
    assert receive and send
    faxdir = globals_()["FAXDIR"]
    for step in receive + send:
        filename = step.args.split(",")[0].replace("${FAXDIR}", faxdir)
        assert filename.startswith("/var/spool/asterisk/fax/") and filename.endswith(".tif"), step
    assert any(s.app == "Set" and "FAXOPT(t38timeout)" in s.args for s in steps)


def test_dialplan_steps_are_numbered_and_every_jump_lands() -> None:
    contexts = dialplan()
    for context, steps in contexts.items():
        labels: dict[str, set[str]] = {}
        seen: set[str] = set()
        for step in steps:
            if step.exten not in seen:
                assert step.priority == "1", f"[{context}] {step.exten} does not start at priority 1"
                seen.add(step.exten)
            if step.label:
                labels.setdefault(step.exten, set()).add(step.label)
        for step in steps:
            for target in re.findall(r"\?([A-Za-z0-9_-]+)\)?$", step.args) if step.app == "GotoIf" else []:
                assert target in labels.get(step.exten, set()), f"[{context}] {step.exten}: no label {target}"
            handler = re.search(r"hangup_handler_push\)=([^,]+),([^,]+),", step.args)
            if handler:
                ctx, exten = handler.groups()
                assert any(s.exten == exten for s in contexts.get(ctx, [])), f"no handler {ctx},{exten}"


def test_extensions_documented_in_lab_md_exist_in_the_dialplan() -> None:
    contexts = dialplan()
    documented = re.findall(r"^\|\s*`(\d+)`\s*\|\s*`([A-Za-z0-9_-]+)`\s*\|", LAB_MD.read_text(), re.MULTILINE)
    assert len(documented) >= 6, "docs/lab.md must list the lab's extensions in its table"
    for exten, context in documented:
        assert any(s.exten == exten for s in contexts.get(context, [])), f"{exten}@{context} is not defined"
    dialled = set(re.findall(r"--to sip:(\d+)@(\d+\.\d+\.\d+\.\d+)", LAB_MD.read_text()))
    assert dialled, "docs/lab.md shows no vfax submit to an extension"
    for exten, host in dialled:
        assert host == service_ip("asterisk"), f"docs/lab.md dials {exten} at {host}, not Asterisk"
        assert any(s.exten == exten for s in contexts["from-vfax"]), f"docs dial {exten}, not in from-vfax"


def test_asterisklint_finds_nothing_in_the_dialplan() -> None:
    """A second opinion from an independent dialplan checker (ossobv/asterisklint) where installed."""
    candidates = [shutil.which("asterisklint"), str(Path(sys.executable).with_name("asterisklint"))]
    lint = next((c for c in candidates if c and Path(c).is_file()), None)
    if lint is None:
        pytest.skip("asterisklint is not installed (pip install asterisklint); the checks above stand in")
    result = subprocess.run(
        [lint, "dialplan-check", str(ASTERISK_DIR / "extensions.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_conf_autoloads_and_requires_the_fax_stack() -> None:
    (section,) = read_conf("modules.conf")
    assert section.name == "modules" and section.get("autoload") == "yes"
    required = set(section.all("require"))
    for module in ("chan_pjsip.so", "res_pjsip_t38.so", "res_fax.so", "res_fax_spandsp.so", "func_env.so"):
        assert module in required, f"modules.conf must require {module}"
    assert not required & set(section.all("noload")), "a module is both required and not loaded"


def test_media_port_ranges_are_sane() -> None:
    (udptl,) = read_conf("udptl.conf")
    (rtp,) = read_conf("rtp.conf")
    assert 1024 <= int(udptl.get("udptlstart") or 0) < int(udptl.get("udptlend") or 0) <= 65535
    assert 1024 <= int(rtp.get("rtpstart") or 0) < int(rtp.get("rtpend") or 0) <= 65535
    (fax,) = read_conf("res_fax.conf")
    assert fax.get("ecm") == "yes" and int(fax.get("t38timeout") or 0) > 0


def test_logger_writes_the_console_and_a_file() -> None:
    logfiles = {s.name: s for s in read_conf("logger.conf")}["logfiles"]
    keys = [k for k, _, _ in logfiles.items]
    assert "console" in keys and "messages.log" in keys


def test_lab_configs_load_with_the_environment_compose_gives_them() -> None:
    for service in VFAX_SERVICES:
        cfg = lab_config(service)
        assert cfg.api.token and len(cfg.devices) == 1
        assert cfg.api.port == 8025
        published = compose()["services"][service]["ports"]
        assert all(p.endswith(":8025") for p in published), f"{service} publishes another port than its API"


def test_no_placeholders_in_lab_files() -> None:
    files = [COMPOSE, ROOT / "Dockerfile", LAB_MD, PBX_MD, *sorted((ROOT / "lab").rglob("*"))]
    for path in files:
        if path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                hit = PLACEHOLDERS.search(line)
                assert hit is None, f"{path.relative_to(ROOT)}:{number}: placeholder {hit.group(0)!r}"


def test_dockerfile_builds_a_slim_debian_12_non_root_image_with_spandsp() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "debian:bookworm-slim" in text
    # Debian 13 renamed libspandsp2 to libspandsp2t64: both stages take whichever apt offers
    choices = re.findall(
        r"spandsp=libspandsp2; \\\n\s*if apt-cache show libspandsp2t64 >/dev/null 2>&1; then "
        r"spandsp=libspandsp2t64; fi; \\\n\s*apt-get install[^\n]*\"\$spandsp\"",
        text,
    )
    assert len(choices) == 2, "each stage installs spandsp by the name apt offers"
    assert re.search(r"pip install [^\n]*\s\.(\s|$)", text) and "pip install -e" not in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def test_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert rules[0] == "*", ".dockerignore is an allow-list"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            top = source.split("/")[0]
            assert top in allowed, f"COPY {source}: excluded by .dockerignore"


def dockerignore_keeps(path: str) -> bool:
    """Whether the build context keeps ``path`` under .dockerignore's rules, as Docker reads them: the
    last rule that matches the path or one of its parent directories decides; ``!`` re-includes."""
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    keep = True
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for rule in rules:
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        regex = "".join(
            ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
            for tok in re.findall(r"\*\*|\*|\?|[^*?]+", pattern)
        )
        if any(re.fullmatch(regex, c) for c in candidates):
            keep = negate
    return keep


def test_dockerignore_keeps_the_sources_but_no_host_built_library() -> None:
    """A libvfaxrtp.so built by whoever's checkout would make the image differ by who built it."""
    assert dockerignore_keeps("t38/native/rtp_native.c") and dockerignore_keeps("t38/native/rtp_native.h")
    assert dockerignore_keeps("t38/native_rtp.py") and dockerignore_keeps("vfax/samples/sample.pdf")
    assert not dockerignore_keeps("t38/native/libvfaxrtp.so")
    assert not dockerignore_keeps("t38/native/libvfaxrtp.so.tmp")
    assert not dockerignore_keeps(".venv/bin/python") and not dockerignore_keeps("t38/__pycache__/x.pyc")


def test_the_image_builds_its_own_native_library_and_refuses_to_ship_without() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    build, runtime = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:]
    assert re.search(r"apt-get install[^\n]*\bgcc\b[^\n]*\blibc6-dev\b", build)
    # -I, or `python -m` imports ./t38 of the source tree and builds the library there, not in the venv
    assert re.search(r"/opt/vfax/bin/python -I -m t38\.native_rtp", build), "the build stage must compile it"
    assert "gcc" not in runtime, "the compiler stays in the build stage"
    assert re.search(r"t38\.native_rtp[^\n]*available\(\)", runtime), "a build without it must fail"


# --------------------------------------------------------------------------------------------------
# vfax health (the HEALTHCHECK of the image) against a local fake of GET /v1/devices
# --------------------------------------------------------------------------------------------------

TOKEN = "lab-test-token-0123456789"


class _Devices(BaseHTTPRequestHandler):
    devices: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error": "unauthorized", "detail": "bad token"})
        elif self.path == "/v1/devices":
            self._send(200, {"devices": self.devices})
        else:
            self._send(404, {"error": "not_found", "detail": self.path})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[str, type[_Devices]]]:
    handler = type("Handler", (_Devices,), {"devices": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def run_health(*args: str) -> Any:
    app = typer.Typer()
    app.command()(health_command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VFAX_")}
    return CliRunner().invoke(app, list(args), env=env)


def test_health_passes_when_every_registering_device_is_registered(fake_api: Any) -> None:
    url, handler = fake_api
    handler.devices = [
        {"name": "vfax-receiver", "registration": "registered"},
        {"name": "direct", "registration": "none"},
    ]
    result = run_health("--api", url, "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert "2 device(s), 1 registered" in result.output


def test_health_fails_naming_the_device_that_is_not_registered(fake_api: Any) -> None:
    url, handler = fake_api
    handler.devices = [
        {"name": "vfax-sender", "registration": "registered"},
        {"name": "vfax-receiver", "registration": "failed"},
    ]
    result = run_health("--api", url, "--token", TOKEN, "--json")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False and verdict["problems"] == [
        "device vfax-receiver is failed, not registered"
    ]


def test_health_reports_a_refused_token_as_unhealthy(fake_api: Any) -> None:
    url, _ = fake_api
    result = run_health("--api", url, "--token", "wrong-token-0123456789")
    assert result.exit_code == 1  # Docker's HEALTHCHECK reserves 2
    assert "refused the token" in result.output


def test_health_fails_when_no_service_answers() -> None:
    with HTTPServer(("127.0.0.1", 0), _Devices) as probe:
        port = probe.server_address[1]  # a port that was free a moment ago; nothing listens after close
    report = check_health(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    assert not report.ok and report.exit_code == 1
    assert "not running" in report.reason or "cannot reach" in report.reason


def test_health_refuses_an_api_that_is_not_an_http_url() -> None:
    result = run_health("--api", "127.0.0.1:8025")
    assert result.exit_code == 2


def test_registration_states_other_than_registered_or_none_are_problems() -> None:
    states = ["registered", "none", "registering", "failed", "unregistered", "idle"]
    devices = [{"name": s, "registration": s} for s in states]
    assert [p.split()[1] for p in evaluate_devices(devices)] == [
        "registering",
        "failed",
        "unregistered",
        "idle",
    ]


def load_roundtrip() -> Any:
    spec = importlib.util.spec_from_file_location("lab_roundtrip", ROOT / "lab" / "roundtrip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_roundtrip_helper_uses_the_lab_addresses_token_and_extensions() -> None:
    module = load_roundtrip()
    services = compose()["services"]
    assert service_ip("asterisk") == module.ASTERISK
    assert f"127.0.0.1:{module.SENDER_API.rsplit(':', 1)[1]}:8025" in services["vfax-sender"]["ports"]
    assert f"127.0.0.1:{module.RECEIVER_API.rsplit(':', 1)[1]}:8025" in services["vfax-receiver"]["ports"]
    assert service_env("vfax-sender")["VFAX_API_TOKEN"] == module.DEFAULT_TOKEN
    assert module.DOCUMENT.is_file()
    contexts = dialplan()
    for exten in module.PATHS:
        context = module.SENDFAX_CONTEXT if exten.startswith("4") else "from-vfax"
        assert any(s.exten == exten for s in contexts[context]), f"roundtrip tries {exten}@{context}"


def test_roundtrip_defaults_are_the_compose_values() -> None:
    args = load_roundtrip().parse_args([], environ={})
    services = compose()["services"]
    assert args.asterisk == service_ip("asterisk")
    for api, service in ((args.sender_api, "vfax-sender"), (args.receiver_api, "vfax-receiver")):
        host_port = api.removeprefix("http://")
        assert f"{host_port}:8025" in services[service]["ports"], f"{api} is not where {service} publishes"
    assert args.token == service_env("vfax-sender")["VFAX_API_TOKEN"]
    assert args.paths == ["2000", "2001", "3000", "3001", "4000"]


def test_roundtrip_takes_addresses_from_the_environment_and_options_over_both() -> None:
    module = load_roundtrip()
    environ = {
        "VFAX_LAB_ASTERISK": "10.99.0.10",
        "VFAX_LAB_SENDER_API": "http://127.0.0.1:18025",
        "VFAX_LAB_RECEIVER_API": "http://127.0.0.1:18026",
        "VFAX_LAB_TOKEN": "token-from-the-environment-0123",
    }
    args = module.parse_args(["3000"], environ=environ)
    assert (args.asterisk, args.sender_api, args.receiver_api, args.token) == (
        "10.99.0.10", "http://127.0.0.1:18025", "http://127.0.0.1:18026", "token-from-the-environment-0123"
    )  # fmt: skip
    assert module.sip_target("3000", args.asterisk) == "sip:3000@10.99.0.10"
    args = module.parse_args(
        ["--asterisk", "192.0.2.7", "--sender-api", "http://[::1]:9001", "--receiver-api", "http://[::1]:9002"],
        environ=environ,
    )
    assert (args.asterisk, args.sender_api, args.receiver_api) == (
        "192.0.2.7", "http://[::1]:9001", "http://[::1]:9002"
    )  # fmt: skip
    assert module.sip_target("2000", "2001:db8::10") == "sip:2000@[2001:db8::10]"


def test_the_documented_fax_report_grep_finds_the_line_in_the_console_and_in_messages_log() -> None:
    """Asterisk 22 formats one Log() line differently per channel (main/logger.c, format_log_default):
    the console as `[date] LEVEL[lwp][callid]: file:line function: msg`, where app_log passes
    `Ext. <exten>` as file and `@ <context>` as function; files as `[date] LEVEL[lwp][callid] file: msg`,
    without the context. With -vvv both also carry the "Executing [...] Log(...)" line."""
    pattern = load_roundtrip().FAX_REPORT_GREP
    (handler,) = dialplan()["fax-report"][:1]
    assert handler.app == "Log" and handler.args.startswith("NOTICE,${ARG1} ${UNIQUEID} status=")
    message = "ReceiveFAX 1764842400.6 status=SUCCESS pages=3 rate=14400 mode=audio remote=VFAX error="
    console = f"[2026-12-04 20:00:01.123] NOTICE[812][C-00000003]: Ext. s:1 @ fax-report: {message}"
    logfile = f"[2026-12-04 20:00:01.123] NOTICE[812][C-00000003] Ext. s: {message}"
    executing = (
        "[2026-12-04 20:00:01.122] VERBOSE[812][C-00000003] pbx.c: Executing [s@fax-report:1] "
        f'Log("PJSIP/vfax-sender-00000002", "NOTICE,{message}") in new stack'
    )
    assert re.search(pattern, console) and re.search(pattern, logfile)
    assert not re.search(pattern, executing)
    text = LAB_MD.read_text(encoding="utf-8")
    assert not re.search(r"\| *grep fax-report", text), "grep fax-report misses messages.log's line"
    assert text.count(f"grep -E '{pattern}'") >= 2, "docs/lab.md must grep the fax-report line this way"


def test_roundtrip_refuses_an_api_that_is_not_an_http_url() -> None:
    module = load_roundtrip()
    with pytest.raises(SystemExit) as exc:
        module.parse_args([], environ={"VFAX_LAB_SENDER_API": "127.0.0.1:8025"})
    assert exc.value.code == 2


def fenced_blocks(path: Path, language: str) -> list[str]:
    return re.findall(
        rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )


def test_pbx_device_snippets_are_valid_config() -> None:
    """The [[devices]] snippets after the recipe (behind a NAT, a SIP trunk) parse as devices of a config."""
    snippets = fenced_blocks(PBX_MD, "toml")[1:]
    assert snippets, "docs/pbx.md shows device snippets (NAT, trunk)"
    for snippet in snippets:
        data = tomllib.loads(snippet)
        # a registering device's password comes from the environment, as the recipe says
        registering = [d["name"] for d in data["devices"] if d.get("register")]
        environ = {f"VFAX_DEVICE_{name.upper()}_PASSWORD": "x" for name in registering}
        cfg = parse_config({"data_dir": "/srv/vfax", **data}, environ=environ)
        assert len(cfg.devices) == 1, snippet


def test_pbx_recipe_configs_are_valid_and_agree_with_each_other() -> None:
    toml_text = fenced_blocks(PBX_MD, "toml")[0]  # the recipe; device snippets follow (test above)
    environ = {
        "VFAX_DEVICE_FAX_PASSWORD": "S3cure-fax-Passw0rd",
        "VFAX_SINK_CRM_SECRET": "0123456789abcdef0123",
    }
    cfg = parse_config(tomllib.loads(toml_text), environ=environ)
    (dev,) = cfg.devices
    with pytest.raises(ConfigError, match="password"):
        parse_config(tomllib.loads(toml_text), environ={"VFAX_SINK_CRM_SECRET": "0123456789abcdef0123"})
    sections = [
        s for block in fenced_blocks(PBX_MD, "ini") for s in parse_asterisk_conf(block, "docs/pbx.md")
    ]
    objects = {(o.name, o.get("type")): o for o in resolved_objects(sections)}
    endpoint, auth = objects[(dev.user, "endpoint")], objects[(dev.user, "auth")]
    assert objects[(dev.user, "aor")].get("max_contacts") == "1"
    assert auth.get("username") == dev.user and auth.get("password") == environ["VFAX_DEVICE_FAX_PASSWORD"]
    assert endpoint.get("t38_udptl") == "yes" and endpoint.get("direct_media") == "no"
    assert endpoint.get("context") in {s.name for s in sections}, "the fax endpoint's context is not shown"


# --------------------------------------------------------------------------------------------------
# The cluster profile: PostgreSQL, Kamailio's dispatcher and three vfax nodes (docs/cluster.md)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    set_id: int
    uri: str
    flags: int
    priority: int

    @property
    def address(self) -> str:
        return self.uri.removeprefix("sip:").rsplit(":", 1)[0]


def dispatcher_list() -> list[Destination]:
    """lab/cluster/dispatcher.list as Kamailio's dispatcher reads it: `setid uri flags priority [attrs]`."""
    out = []
    for number, line in enumerate((CLUSTER_DIR / "dispatcher.list").read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        assert len(fields) >= 4, f"dispatcher.list:{number}: setid, uri, flags and priority expected"
        assert re.fullmatch(r"sip:[0-9.]+:\d+", fields[1]), f"dispatcher.list:{number}: {fields[1]}"
        out.append(Destination(int(fields[0]), fields[1], int(fields[2]), int(fields[3])))
    return out


def cluster_config(service: str) -> ServiceConfig:
    return load_config(ROOT / CLUSTER_NODES[service], environ=service_env(service))


def kamailio_defines() -> dict[str, str]:
    command = compose()["services"]["kamailio"]["command"]
    return dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-A")


def kamailio_mount() -> str:
    """Where the kamailio service sees lab/cluster/."""
    (target,) = [t for s, t in bind_mounts(compose()["services"]["kamailio"]) if s == "./lab/cluster"]
    return target


def test_without_the_cluster_profile_the_lab_is_the_three_services_as_before() -> None:
    """`docker compose up` starts the services without `profiles`: they must be the Asterisk lab alone."""
    services = compose()["services"]
    plain = {name for name, svc in services.items() if not svc.get("profiles")}
    assert plain == LAB_SERVICES, f"started without --profile cluster: {sorted(plain)}"
    for name in CLUSTER_SERVICES:
        assert services[name].get("profiles") == ["cluster"], f"{name} is not (only) in the cluster profile"
    for name in LAB_SERVICES:
        needs = set(services[name].get("depends_on") or ())
        assert not needs & CLUSTER_SERVICES, f"the lab's {name} would need the cluster: {needs}"


def test_cluster_nodes_run_the_one_vfax_image_without_building_it() -> None:
    services = compose()["services"]
    image = services["vfax-sender"]["image"]
    for name in CLUSTER_NODES:
        node = services[name]
        assert "build" not in node, f"{name} builds: the vfax image is built once, by vfax-sender"
        assert node["image"] == image and node.get("pull_policy") == "never", name
        assert node["command"][:1] == ["serve"], f"{name} does not run vfax serve"
        assert node["healthcheck"]["test"][1:3] == ["vfax", "health"], name


def test_each_cluster_node_reads_its_own_config_and_keeps_its_data_in_a_named_volume() -> None:
    services = compose()["services"]
    seen_volumes = set()
    for name, toml in CLUSTER_NODES.items():
        node = services[name]
        command = node["command"]
        assert (f"./{toml}", command[command.index("--config") + 1]) in bind_mounts(node), name
        volumes = {t: s for s, t in named_volumes(node)}
        data_dir = str(cluster_config(name).data_dir)
        assert data_dir in volumes, f"{name}: data_dir {data_dir} is not a named volume"
        assert volumes[data_dir] not in seen_volumes, f"{name} shares {volumes[data_dir]} with another node"
        seen_volumes.add(volumes[data_dir])


def test_node_addresses_are_the_nodes_of_dispatcher_list() -> None:
    nodes = {d.uri for d in dispatcher_list() if d.set_id == 1}
    configured = set()
    for name in CLUSTER_NODES:
        (device,) = cluster_config(name).devices
        host, port = parse_listen(device.listen)
        assert host == service_ip(name), f"{name}: device listens on {host}, compose gives {service_ip(name)}"
        configured.add(f"sip:{host}:{port}")
    assert nodes == configured, f"dispatcher.list set 1 {sorted(nodes)} != the nodes {sorted(configured)}"


def test_node_configs_load_with_the_vfax_loader_and_share_one_postgresql_database() -> None:
    postgres = service_env("postgres")
    ids, devices = [], set()
    for name in CLUSTER_NODES:
        cfg = cluster_config(name)
        assert cfg.is_postgres, f"{name}: database is not a PostgreSQL URL"
        url = urlsplit(str(cfg.database))
        assert url.hostname == "postgres" and url.port == 5432, f"{name}: {cfg.database_shown}"
        assert url.password is None, f"{name}: a password in the TOML (compose sets PGPASSWORD)"
        assert url.username == postgres["POSTGRES_USER"] and url.path == f"/{postgres['POSTGRES_DB']}"
        assert service_env(name)["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"], name
        assert cfg.api.token and cfg.api.port == 8025
        assert cfg.node.heartbeat_seconds < cfg.node.give_up_seconds < cfg.node.lease_seconds
        ids.append(cfg.node.node_id)
        devices.add(tuple(d.name for d in cfg.devices))
    assert ids == ["node1", "node2", "node3"], f"node ids {ids}"
    assert len(devices) == 1, f"the nodes must share their devices, so any node can send any job: {devices}"


def test_cluster_nodes_take_invites_only_from_kamailio_and_send_through_it() -> None:
    kamailio = service_ip("kamailio")
    listen = kamailio_defines()["SIP_LISTEN"]
    assert listen.startswith(f"udp:{kamailio}:"), f"Kamailio listens on {listen}, compose gives {kamailio}"
    for name in CLUSTER_NODES:
        (device,) = cluster_config(name).devices
        assert device.allow_invite_from == (kamailio,), f"{name}: {device.allow_invite_from}"
        assert device.server == listen.removeprefix("udp:"), f"{name} sends through {device.server}"
        assert device.transports == ("udp",) and not device.register, name


def test_kamailio_runs_the_lab_config_with_the_compose_addresses() -> None:
    kam = compose()["services"]["kamailio"]
    mount = kamailio_mount()
    command = kam["command"]
    assert command[command.index("-f") + 1] == f"{mount}/kamailio.cfg"
    config = (CLUSTER_DIR / "kamailio.cfg").read_text(encoding="utf-8")
    overridable = set(re.findall(r"^#!ifndef (\w+)$", config, re.MULTILINE))
    defines = kamailio_defines()
    assert set(defines) <= overridable, f"-A defines the config does not take: {set(defines) - overridable}"
    assert defines["DS_LIST"] == f'"{mount}/dispatcher.list"', "the quotes stay: it is a string define"
    assert any(v.endswith(":ro") for v in kam["volumes"]), "lab/cluster mounted writable"
    # the lab's Asterisk is the PBX: an INVITE from it is taken, the nodes' faxes go to it
    pbx = [d for d in dispatcher_list() if d.set_id == 2 and not d.flags & 4]
    assert [d.address for d in sorted(pbx, key=lambda d: -d.priority)][:1] == [service_ip("asterisk")]
    # a disabled set-2 entry (flags 4) may only be the Docker host on the lab bridge (its gateway)
    (net,) = compose()["networks"].values()
    gateway = str(next(ip_network(net["ipam"]["config"][0]["subnet"]).hosts()))
    assert {d.address for d in dispatcher_list() if d.flags & 4} <= {gateway}


def test_kamailio_image_has_every_module_the_config_loads() -> None:
    config = (CLUSTER_DIR / "kamailio.cfg").read_text(encoding="utf-8")
    loaded = re.findall(r'^loadmodule "(\w+)\.so"', config, re.MULTILINE)
    dockerfile = (CLUSTER_DIR / "kamailio.Dockerfile").read_text(encoding="utf-8")
    (checked,) = re.findall(r"for m in ([\w ]+); do", dockerfile)
    assert sorted(checked.split()) == sorted(loaded), "kamailio.Dockerfile checks other modules than it loads"
    kam = compose()["services"]["kamailio"]
    assert kam["build"] == {"context": "./lab/cluster", "dockerfile": "kamailio.Dockerfile"}
    base = re.findall(r"^ARG DEBIAN_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    vfax_base = re.findall(r"^ARG DEBIAN_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base == vfax_base, "Kamailio's image and vfax's share one Debian base"
    assert "apt-get install -y --no-install-recommends kamailio;" in dockerfile
    assert kam["healthcheck"]["test"] == ["CMD", "kamcmd", "core.uptime"]
    assert re.search(r"^USER kamailio$", dockerfile, re.MULTILINE), "Kamailio runs unprivileged"
    assert "/run/kamailio" in kam["tmpfs"], "read-only root: kamcmd's socket needs a writable /run/kamailio"


def test_postgres_health_check_is_pg_isready_over_tcp_and_its_data_a_named_volume() -> None:
    pg = compose()["services"]["postgres"]
    test = pg["healthcheck"]["test"]
    assert isinstance(test, list) and test[:2] == ["CMD", "pg_isready"], "an exec array, no shell"
    # the image's first-start initialisation listens on the Unix socket only: over TCP the check
    # cannot pass before the real server runs
    assert "--host=127.0.0.1" in test or ["-h", "127.0.0.1"] in [test[i : i + 2] for i in range(len(test))]
    targets = {t: s for s, t in named_volumes(pg)}
    assert targets.get("/var/lib/postgresql/data") == "cluster-pgdata", "PGDATA of the image is not named"
    env = service_env("postgres")
    assert f"--username={env['POSTGRES_USER']}" in test and f"--dbname={env['POSTGRES_DB']}" in test


def test_nodes_may_finish_their_calls_before_docker_kills_them() -> None:
    """vfax serve lets calls finish for a grace period after SIGTERM; docker stop waits 10 s by default."""
    source = (ROOT / "vfax" / "service" / "serve.py").read_text(encoding="utf-8")
    (grace,) = re.findall(r"controller\.stop\(grace=(\d+)\)", source)
    for name in CLUSTER_NODES:
        period = compose()["services"][name]["stop_grace_period"]
        seconds = int(re.fullmatch(r"(\d+)s", period).group(1))  # type: ignore[union-attr]
        assert seconds >= int(grace) + 10, f"{name}: stop_grace_period {period} < serve's grace {grace}s + 10"


def serve_workers_option() -> Any:
    """The typer option of `vfax serve --workers`, or None where the command has none."""
    hints = get_type_hints(serve_command, include_extras=True)
    if "workers" not in hints:
        return None
    return next(m for m in getattr(hints["workers"], "__metadata__", ()) if hasattr(m, "envvar"))


def test_every_vfax_container_runs_one_process_at_its_configured_addresses() -> None:
    """dispatcher.list names one SIP address per node, and a lab device registers one contact. `vfax serve
    --workers` (default: one per core) would start a node per core on port + K * stride: each container
    must ask for one, with the option or its environment variable."""
    option = serve_workers_option()
    if option is None:
        pytest.skip("vfax serve has no --workers option: one process per container anyway")
    envvar = option.envvar if isinstance(option.envvar, str) else option.envvar[0]
    for name in [*VFAX_SERVICES, *CLUSTER_NODES]:
        command = compose()["services"][name]["command"]
        from_command = command[command.index("--workers") + 1 :][:1] if "--workers" in command else None
        assert from_command == ["1"] or service_env(name).get(envvar) == "1", (
            f"{name} would run one worker per core (set {envvar}=1 or --workers 1)"
        )


def test_cluster_docs_use_the_compose_profile_ports_and_drain_command() -> None:
    text = CLUSTER_MD.read_text(encoding="utf-8")
    assert "docker compose --profile cluster up -d --build --wait" in text
    for name in CLUSTER_NODES:
        (published,) = compose()["services"][name]["ports"]
        assert published.removesuffix(":8025") in text, f"docs/cluster.md does not show {name}'s API"
    # verified against Kamailio 5.6.3: `ip` is undone by the next answered probe, `d` stays
    assert re.search(r"kamcmd dispatcher\.set_state d 1 sip:10\.238\.38\.2\d:5060", text)
    assert "kamcmd dispatcher.set_state ip" not in text
    assert "cluster.md" in LAB_MD.read_text(encoding="utf-8"), "docs/lab.md does not point at the cluster"
