"""Draining a node through the API and the CLI (`vfax nodes drain|resume`), against a real SQLite store.

The store is real; "this node" is the app's ``node_id`` and its ``set_draining`` records what the
controller would be told. The nodes' heartbeats are written to the store as a node writes them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_api import AUTH, TOKEN, Env, ServerThread, runner
from vfax.cli import common as cli_common
from vfax.cli.service import nodes_command

LEASE = 60.0


def info(*, calls: int = 0, draining: bool = False) -> dict[str, Any]:
    """What a node reports in its heartbeat (Controller.node_info), with ``calls`` calls in progress."""
    return {
        "api": None,
        "devices": [{"name": "fax", "registration": "not registering"}],
        "registrations": {"fax": "not registering"},
        "calls": [{"id": f"job-{i}", "kind": "send", "device": "fax"} for i in range(calls)],
        "draining": draining,
    }


class Local:
    """This process's node: records the set_draining calls the API makes."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def set_draining(self, flag: bool) -> None:
        self.calls.append(flag)


def make_env(tmp_path: Path) -> tuple[Env, Local]:
    local = Local()
    env = Env(tmp_path, node_id="a", set_draining=local.set_draining)
    for node in ("a", "b"):
        env.store.register_node(node, api=None, info=info(), lease_seconds=LEASE)
    return env, local


def by_id(env: Env) -> dict[str, dict[str, Any]]:
    resp = env.client.get("/v1/nodes", headers=AUTH)
    assert resp.status_code == 200
    return {n["id"]: n for n in resp.json()["nodes"]}


def test_drain_and_resume_another_node_mark_the_store_only(tmp_path: Path) -> None:
    env, local = make_env(tmp_path)
    resp = env.client.post("/v1/nodes/b/drain", headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == "b" and resp.json()["draining"] is True
    assert resp.json()["drained"] is False  # b has not said it drains yet
    assert {k: n["draining"] for k, n in by_id(env).items()} == {"a": False, "b": True}
    assert local.calls == []  # b is another process: it follows the mark at its next heartbeat
    resp = env.client.post("/v1/nodes/b/resume", headers=AUTH)
    assert resp.status_code == 200 and resp.json()["draining"] is False
    assert by_id(env)["b"]["draining"] is False


def test_drain_of_this_node_applies_at_once(tmp_path: Path) -> None:
    env, local = make_env(tmp_path)
    assert env.client.post("/v1/nodes/a/drain", headers=AUTH).json()["draining"] is True
    assert local.calls == [True]
    assert env.client.post("/v1/nodes/a/resume", headers=AUTH).json()["draining"] is False
    assert local.calls == [True, False]


def test_drained_is_shown_once_the_node_reports_draining_with_no_call(tmp_path: Path) -> None:
    env, _ = make_env(tmp_path)
    env.client.post("/v1/nodes/b/drain", headers=AUTH)
    env.store.heartbeat("b", info=info(calls=1, draining=True), lease_seconds=LEASE)
    node = by_id(env)["b"]
    assert (node["draining"], node["drained"], len(node["calls"])) == (True, False, 1)
    env.store.heartbeat("b", info=info(calls=0, draining=True), lease_seconds=LEASE)
    assert by_id(env)["b"]["drained"] is True
    assert by_id(env)["a"]["drained"] is False  # not draining at all


def test_unknown_node_is_404_and_changes_nothing(tmp_path: Path) -> None:
    env, local = make_env(tmp_path)
    for action in ("drain", "resume"):
        resp = env.client.post(f"/v1/nodes/nope/{action}", headers=AUTH)
        assert resp.status_code == 404
        assert resp.json()["error"] == "not_found" and "nope" in resp.json()["detail"]
    assert {k: n["draining"] for k, n in by_id(env).items()} == {"a": False, "b": False}
    assert local.calls == []


def test_drain_needs_the_token(tmp_path: Path) -> None:
    env, local = make_env(tmp_path)
    assert env.client.post("/v1/nodes/b/drain").status_code == 401
    assert by_id(env)["b"]["draining"] is False and local.calls == []


# --- the CLI ----------------------------------------------------------------------------------------

import typer  # noqa: E402

cli = typer.Typer()
cli.command("nodes")(nodes_command)
cli.command("unused")(lambda: None)  # two commands: `nodes` stays a subcommand as in vfax


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common.out, "width", 200)
    monkeypatch.setattr(cli_common.err, "width", 400)


def run_cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["nodes", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_drain_wait_resume_and_the_table(tmp_path: Path) -> None:
    env, _ = make_env(tmp_path)
    env.store.heartbeat("b", info=info(calls=1), lease_seconds=LEASE)
    with ServerThread(env.app) as base:
        common = ["--api", base, "--token", TOKEN]
        code, out, err = run_cli("drain", "b", "--json", *common)
        assert code == 0, err
        assert [(n["id"], n["draining"]) for n in json.loads(out)["nodes"]] == [("b", True)]

        code, out, _ = run_cli(*common)
        assert code == 0
        rows = {line.split()[1]: line for line in out.splitlines() if line.strip().startswith("│")}
        assert "draining" in rows["b"] and "draining" not in rows["a"]

        # b still has a call: --wait gives up after its timeout
        code, _, err = run_cli("drain", "b", "--wait", "--timeout", "1.5", *common)
        assert code == 1 and "b" in err and "1 call" in err

        # b's call ends and its heartbeat says it drains: --wait returns as soon as it sees that
        def finish_call() -> None:
            env.store.heartbeat("b", info=info(calls=0, draining=True), lease_seconds=LEASE)

        timer = threading.Timer(1.0, finish_call)
        timer.start()
        try:
            code, out, err = run_cli("drain", "b", "--wait", "--timeout", "60", "--json", *common)
        finally:
            timer.join()
        assert code == 0, err
        assert [(n["id"], n["drained"]) for n in json.loads(out)["nodes"]] == [("b", True)]
        code, out, _ = run_cli(*common)
        assert "drained" in next(line for line in out.splitlines() if " b " in line)

        code, out, err = run_cli("resume", "b", *common)
        assert code == 0, err
        assert env.store.list_nodes()[1].draining is False


def test_cli_drains_every_worker_of_a_machine_by_pattern(tmp_path: Path) -> None:
    env, _ = make_env(tmp_path)
    for k in range(3):
        env.store.register_node(f"m1-w{k}", api=None, info=info(), lease_seconds=LEASE)
    with ServerThread(env.app) as base:
        common = ["--api", base, "--token", TOKEN]
        code, out, err = run_cli("drain", "m1-w*", "--json", *common)
        assert code == 0, err
        assert sorted(n["id"] for n in json.loads(out)["nodes"]) == ["m1-w0", "m1-w1", "m1-w2"]
        assert {n.id: n.draining for n in env.store.list_nodes()} == {
            "a": False, "b": False, "m1-w0": True, "m1-w1": True, "m1-w2": True,
        }  # fmt: skip
        code, _, err = run_cli("drain", "m9-w*", *common)
        assert code == 2 and "m9-w*" in err
        code, _, err = run_cli("drain", "nope", *common)
        assert code == 2 and "nope" in err
        code, _, err = run_cli("drain", *common)
        assert code == 2
        code, _, err = run_cli("resume", "b", "--wait", *common)
        assert code == 2
