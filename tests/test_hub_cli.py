"""`scaffold hub serve` and `scaffold hub keys ...` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import json
import re
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import render
from tests.hubproc import free_port, running_hub, scaffold, sha256, write_config

KEY = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be a single `scaffold: error: ...` line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("scaffold: error: "), result.stderr
    return lines[0]


def test_first_start_creates_one_admin_key_in_a_private_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key_file = tmp_path / "hub-data" / "initial-admin-key"
    with running_hub(config, log_dir=tmp_path / "first") as hub:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text(encoding="utf-8").strip()
        assert KEY.fullmatch(key)
        assert f"read it from {key_file}" in hub.stdout
        assert key not in hub.stdout and key not in hub.stderr
        with hub.client(key) as client:
            assert client.get("/v1/status").status_code == 200
            assert client.get("/v1/keys").json()["keys"][0]["role"] == "admin"
        with hub.client("not-" + key) as client:
            assert client.get("/v1/status").status_code == 401
    assert hub.proc.returncode == 0, hub.stderr

    key_file.unlink()  # as the hub asks
    with running_hub(config, log_dir=tmp_path / "second") as hub:
        assert "Created" not in hub.stdout
        assert not key_file.exists()
        with hub.client(key) as client:
            assert client.get("/v1/status").status_code == 200
    listing = scaffold("hub", "keys", "list", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[:3] == ["admin", "admin", "generated"]


def test_keys_add_list_and_revoke_against_a_running_hub(tmp_path: Path) -> None:
    owner = secrets.token_urlsafe(32)
    config = write_config(tmp_path, keys=[("owner", "admin", owner)])
    data_dir = str(tmp_path / "hub-data")
    with running_hub(config, log_dir=tmp_path / "log") as hub:
        added = scaffold("hub", "keys", "add", "worker-1", "--role", "agent", "--data-dir", data_dir)
        assert added.returncode == 0, added.stderr
        assert KEY.fullmatch(added.stdout.removesuffix("\n")) and added.stdout.count("\n") == 1
        assert added.stderr == ""
        agent = added.stdout.strip()
        with hub.client(agent) as client:
            created = client.post("/v1/tasks", json={"title": "t", "instructions": "i"})
            assert created.status_code == 201, created.text
            assert client.get("/v1/keys").status_code == 403

        listing = scaffold("hub", "keys", "list", "--config", str(config))
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
        assert rows["owner"][1:3] == ["admin", "config"] and rows["owner"][-1] == "active"
        assert rows["worker-1"][1:3] == ["agent", "cli"] and rows["worker-1"][-1] == "active"
        for secret in (owner, agent, sha256(owner), sha256(agent)):
            assert secret not in listing.stdout

        taken = scaffold("hub", "keys", "add", "worker-1", "--data-dir", data_dir)
        assert taken.returncode == 1 and taken.stdout == ""
        assert "worker-1" in one_error_line(taken)

        revoked = scaffold("hub", "keys", "revoke", "worker-1", "--data-dir", data_dir)
        assert revoked.returncode == 0, revoked.stderr
        with hub.client(agent) as client:
            assert client.post("/v1/tasks", json={"title": "t", "instructions": "i"}).status_code == 401
        with hub.client(owner) as client:
            assert client.get("/v1/status").status_code == 200

        listing = scaffold("hub", "keys", "list", "--data-dir", data_dir)
        assert [line.split()[-1] for line in listing.stdout.splitlines() if "worker-1" in line] == ["revoked"]

        unknown = scaffold("hub", "keys", "revoke", "nobody", "--data-dir", data_dir)
        assert unknown.returncode == 1 and unknown.stdout == ""
        assert "nobody" in one_error_line(unknown)
        again = scaffold("hub", "keys", "revoke", "worker-1", "--data-dir", data_dir)
        assert again.returncode == 1
        one_error_line(again)
    assert hub.proc.returncode == 0, hub.stderr


def test_keys_add_refuses_a_name_the_api_would_refuse(tmp_path: Path) -> None:
    result = scaffold("hub", "keys", "add", "two words", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1 and result.stdout == ""
    assert "two words" in one_error_line(result)


ZEROS = "0" * 64
BAD_CONFIGS: dict[str, tuple[str | None, str]] = {
    "missing file": (None, "no hub configuration at"),
    "malformed TOML": ("[server\nport = 1\n", "is not valid TOML"),
    "unknown setting": ('[server]\nhots = "0.0.0.0"\n', "unknown setting server.hots"),
    "wrong type": ('[server]\nport = "high"\n', "server.port must be an integer, got 'high'"),
    "not a number": ('[queue]\nlease_seconds = "long"\n', "queue.lease_seconds must be a number, got 'long'"),
    "not a boolean": ('[exec]\nenabled = "yes"\n', "exec.enabled must be true or false, got 'yes'"),
    "a boolean port": ("[server]\nport = true\n", "server.port must be an integer, got true"),
    "not a string": ("[exec]\nsandbox = 1\n", "exec.sandbox must be a string, got 1"),
    "not an array": (
        '[server]\ntrusted_proxies = "::1"\n',
        "server.trusted_proxies must be an array, got '::1'",
    ),
    "not a table": ("server = 1\n", "[server] must be a table"),
    "not positive": ("[queue]\nlease_seconds = 0\n", "queue.lease_seconds must be positive"),
    "port too high": ("[server]\nport = 70000\n", "server.port must be between 1 and 65535"),
    "key role": (f'[[keys]]\nname = "a"\nrole = "root"\nsha256 = "{ZEROS}"\n', "role 'root'"),
    "key fields": ('[[keys]]\nname = "a"\nrole = "admin"\n', "needs exactly name, role, sha256"),
    "key hash": ('[[keys]]\nname = "a"\nrole = "admin"\nsha256 = "ABC"\n', "64 lowercase hex"),
    "key name": (f'[[keys]]\nname = 5\nrole = "admin"\nsha256 = "{ZEROS}"\n', "entry 1 has name 5"),
    "same hash twice": (
        f'[[keys]]\nname = "a"\nrole = "admin"\nsha256 = "{ZEROS}"\n'
        f'[[keys]]\nname = "b"\nrole = "agent"\nsha256 = "{ZEROS}"\n',
        "the same hash as key 'a'",
    ),
    "data_dir is a file": ('[storage]\ndata_dir = "hub.toml"\n', "as the hub's data directory"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_configuration_is_one_clear_line(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / "hub.toml"
    if text is not None:
        storage = "" if "[storage]" in text else f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        config.write_text(text + storage, encoding="utf-8")
    result = scaffold("hub", "serve", "--config", str(config), "--port", str(free_port()), timeout=30)
    assert result.returncode == 1, result.stderr
    assert expected in one_error_line(result)
    assert result.stdout == ""


def test_a_port_out_of_range_is_one_clear_line(tmp_path: Path) -> None:
    result = scaffold("hub", "serve", "--config", str(write_config(tmp_path)), "--port", "70000", timeout=30)
    assert result.returncode == 1
    assert "--port must be between 1 and 65535, got 70000" in one_error_line(result)
    assert not (tmp_path / "hub-data").exists()


def test_the_hub_serves_a_rendered_projects_config(tmp_path: Path) -> None:
    dest = tmp_path / "team"
    workspace = tmp_path / "srv" / "workspace"
    rendered = scaffold(
        "new", str(dest), "--defaults", "--quiet", "--save-key", "--data", f"workspace_path={workspace}"
    )
    assert rendered.returncode == 0, rendered.stderr
    key = json.loads((dest / ".claude" / "settings.local.json").read_text())["env"]["VPS_API_KEY"]
    data_dir = tmp_path / "srv" / "hub-data"  # beside the workspace, as the template decides
    config = dest / "vps" / "hub.toml"
    with running_hub(config, log_dir=tmp_path / "log") as hub:
        assert f"(data in {data_dir})" in hub.stdout
        assert (data_dir / "hub.sqlite3").is_file()
        assert not (data_dir / "initial-admin-key").exists()  # the project brought its key
        with hub.client(key) as client:
            status = client.get("/v1/status")
            assert status.status_code == 200, status.text
            assert [k["name"] for k in client.get("/v1/keys").json()["keys"]] == ["owner"]
            worker = client.post("/v1/workers", json={"session_id": "s1", "role": "backend"})
            assert worker.status_code == 201, worker.text
            assert "database" in worker.json()["capabilities"]  # the [roles] table was read
        with hub.client(secrets.token_urlsafe(32)) as client:
            assert client.get("/v1/status").status_code == 401
    assert hub.proc.returncode == 0, hub.stderr


def test_keys_commands_inside_a_project_use_its_hub_toml(tmp_path: Path) -> None:
    workspace = tmp_path / "srv" / "workspace"
    project = render(tmp_path / "team", workspace_path=str(workspace)).dest
    data_dir = tmp_path / "srv" / "hub-data"  # what the project's vps/hub.toml names
    below = project / "docs"  # any directory inside the project will do

    added = scaffold("hub", "keys", "add", "laptop", cwd=below)

    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert KEY.fullmatch(key) and key not in added.stderr
    assert f"database in {data_dir}" in added.stderr
    assert (data_dir / "hub.sqlite3").is_file()
    assert not (below / "hub-data").exists() and not (project / "hub-data").exists()
    # the hub the project's docs start reads that key
    config = project / "vps" / "hub.toml"
    with running_hub(config, log_dir=tmp_path / "log") as hub, hub.client(key) as client:
        assert client.get("/v1/status").status_code == 200
    listing = scaffold("hub", "keys", "list", cwd=project)
    assert listing.returncode == 0, listing.stderr
    assert "laptop" in listing.stdout
    revoked = scaffold("hub", "keys", "revoke", "laptop", cwd=below)
    assert revoked.returncode == 0, revoked.stderr


def test_keys_commands_outside_a_project_refuse_rather_than_make_a_database(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    for command in (["add", "laptop"], ["list"], ["revoke", "laptop"]):
        refused = scaffold("hub", "keys", *command, cwd=nowhere)
        assert refused.returncode == 1 and refused.stdout == ""
        assert "no hub here" in one_error_line(refused) and "--config" in refused.stderr
        assert not (nowhere / "hub-data").exists()
    # a ./hub-data that holds a hub's database is still the default, as before
    made = scaffold("hub", "keys", "add", "laptop", "--data-dir", "hub-data", cwd=nowhere)
    assert made.returncode == 0, made.stderr
    listing = scaffold("hub", "keys", "list", cwd=nowhere)
    assert listing.returncode == 0 and "laptop" in listing.stdout, listing.stderr


def test_keys_commands_in_a_remote_project_point_to_the_server(tmp_path: Path) -> None:
    workspace = tmp_path / "srv" / "workspace"
    project = render(
        tmp_path / "team",
        deployment="remote",
        hub_url="http://203.0.113.10:5555",
        workspace_path=str(workspace),
        project_slug="far-team",
    ).dest

    refused = scaffold("hub", "keys", "add", "laptop", cwd=project)

    assert refused.returncode == 1 and refused.stdout == ""
    assert "--config /etc/far-team/hub.toml" in one_error_line(refused)
    assert not (tmp_path / "srv" / "hub-data").exists() and not (project / "hub-data").exists()
