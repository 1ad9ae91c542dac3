"""The VPS bundle and `scaffold deploy`, with the real tools: shellcheck, systemd-analyze, caddy,
bash running the rendered bootstrap.sh into a temporary prefix, and an OpenSSH server started on
127.0.0.1 for `scaffold deploy --host` with a throwaway key pair.

Installs use `--prefix DIR --no-systemd` (no root paths, no service manager here); each hub
they start is stopped through its pid file when the test ends.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import jinja2
import pytest

from scaffold.deploy import build_wheel, wait_healthy
from scaffold.errors import DeployError
from scaffold.render import template_root
from tests.conftest import ANSWER_SETS, REPO, git, render
from tests.conftest import require_tool as tool
from tests.hubproc import free_port
from tests.sshd import SSHServer, ssh_server

RUN_TIMEOUT = 600.0  # seconds for one bootstrap or deploy: a first install downloads the hub's deps


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel of this checkout for the module, as `scaffold deploy` builds it."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@dataclass
class Installed:
    prefix: Path

    def stop(self) -> None:
        pidfile = self.prefix / "hub.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # ProcessLookupError once it is gone
                time.sleep(0.1)


@pytest.fixture
def installs() -> Iterator[list[Installed]]:
    """Prefixes a test installs into; their hubs are stopped afterwards."""
    made: list[Installed] = []
    yield made
    for installed in made:
        installed.stop()


def project_at(tmp_path: Path, port: int, **answers: str) -> tuple[Path, str]:
    answers.setdefault("hub_url", f"http://127.0.0.1:{port}")
    made = render(tmp_path / "project", save_key=True, **answers)
    assert made.key is not None
    return made.dest, made.key


def server_project_at(tmp_path: Path, port: int, host: str = "127.0.0.1") -> tuple[Path, str]:
    """A project for a server (`deployment: remote`), its hub at http://HOST:PORT. Its hub.toml
    says to listen on every interface; tests keep to loopback."""
    project, key = project_at(
        tmp_path,
        port,
        deployment="remote",
        hub_url=f"http://{host}:{port}",
        workspace_path=str(tmp_path / "srv" / "workspace"),
    )
    config = project / "vps" / "hub.toml"
    config.write_text(config.read_text().replace('host = "0.0.0.0"', 'host = "127.0.0.1"'))
    return project, key


def bootstrap(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(bundle / "bootstrap.sh"), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


# -- the files of the bundle ------------------------------------------------------------------


@pytest.mark.parametrize("answers", sorted(ANSWER_SETS))
def test_every_shell_file_passes_shellcheck(tmp_path: Path, answers: str) -> None:
    project = render(tmp_path / "project", **ANSWER_SETS[answers]).dest
    scripts = [project / "vps/bootstrap.sh", REPO / ".ci/run", *sorted(REPO.glob("tools/*.sh"))]
    done = subprocess.run(
        [tool("shellcheck"), "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_would_catch_a_mistake(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n", encoding="utf-8")
    assert subprocess.run([tool("shellcheck"), str(bad)], capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize("answers", ["remote-tls", "remote-plain"])
def test_the_systemd_unit_verifies(tmp_path: Path, answers: str) -> None:
    project = render(tmp_path / "project", **ANSWER_SETS[answers]).dest
    slug = next(
        line.split(": ")[1]
        for line in (project / ".copier-answers.yml").read_text().splitlines()
        if line.startswith("project_slug:")
    )
    unit = (project / "vps/hub.service").read_text(encoding="utf-8")
    for directive in (
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "Restart=on-failure",
        f"User={slug}-hub",
        "ReadWritePaths=",
    ):
        assert directive in unit
    # systemd-analyze checks that ExecStart exists; the venv is made by the bootstrap on the
    # server, so the check runs on a copy whose ExecStart names this machine's scaffold.
    here = tmp_path / f"{slug}-hub.service"
    here.write_text(
        unit.replace(f"/opt/{slug}/venv/bin/scaffold", shutil.which("scaffold") or sys.executable)
    )
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(here)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr  # warnings count too


@pytest.mark.parametrize("answers", ["remote-tls", "remote-plain"])
def test_the_worker_slot_unit_verifies_and_the_bundle_says_how_to_enable_it(
    tmp_path: Path, answers: str
) -> None:
    project = render(tmp_path / "project", **ANSWER_SETS[answers]).dest
    slug = next(
        line.split(": ")[1]
        for line in (project / ".copier-answers.yml").read_text().splitlines()
        if line.startswith("project_slug:")
    )
    unit = (project / "vps/worker@.service").read_text(encoding="utf-8")
    script = "${PROJECT}/.claude/skills/vps-workspace/scripts/team.py"
    assert (
        f"ExecStart=/usr/bin/python3 {script} --project ${{PROJECT}} slot --slot %i --role ${{ROLE}}" in unit
    )
    for directive in (
        f"EnvironmentFile=/etc/{slug}/team/%i.env",
        f"User={slug}-agent",
        "Restart=on-failure",
        "KillMode=mixed",
        "NoNewPrivileges=true",
    ):
        assert directive in unit
    # An instance, as `systemctl enable --now SLUG-worker@w1` makes it; a control with a typo in a
    # directive shows that the check reads the unit.
    for name, text, clean in [("w1", unit, True), ("w2", unit.replace("KillMode=", "KilMode="), False)]:
        here = tmp_path / f"{slug}-worker@{name}.service"
        here.write_text(text)
        done = subprocess.run(
            [tool("systemd-analyze"), "verify", str(here)], capture_output=True, text=True, check=False
        )
        assert (done.returncode == 0 and done.stderr.strip() == "") == clean, done.stderr
    readme = (project / "vps/README.md").read_text(encoding="utf-8")
    for words in (
        f"sudo systemctl enable --now {slug}-worker@w1",
        f"/etc/{slug}/team/w1.env",
        "ROLE=",
        "PROJECT=",
    ):
        assert words in readme, words
    dry = bootstrap(project / "vps", "--dry-run")
    assert (
        f"would: install the unit /etc/systemd/system/{slug}-worker@.service (not enabled)" in dry.stdout
    ), dry.stdout + dry.stderr
    assert not (render(tmp_path / "local").dest / "vps/worker@.service").exists()


def test_the_caddyfile_validates(tmp_path: Path) -> None:
    project = render(tmp_path / "project", **ANSWER_SETS["remote-tls"]).dest
    caddyfile = project / "vps/Caddyfile"
    command = [tool("caddy"), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"]
    env = {**os.environ, "HOME": str(tmp_path)}  # caddy writes its state under HOME
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "hub.example.com" in caddyfile.read_text() and "reverse_proxy 127.0.0.1:5555" in caddyfile.read_text()
    )


# -- bootstrap.sh ------------------------------------------------------------------------------


def test_bootstrap_installs_into_a_prefix_then_a_second_run_changes_nothing(
    tmp_path: Path, wheel: Path, installs: list[Installed]
) -> None:
    port = free_port()
    project, key = project_at(tmp_path, port)
    bundle = project / "vps"
    prefix = tmp_path / "hub"
    installs.append(Installed(prefix))

    dry = bootstrap(bundle, "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would: create the virtual environment" in dry.stdout and "== " not in dry.stdout
    assert not (prefix / "venv").exists() and not (prefix / "data").exists()  # nothing changed

    first = bootstrap(bundle, "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel))
    assert first.returncode == 0, first.stdout + first.stderr
    assert (
        "== install the hub from" in first.stdout
        and f"ok: the hub answers on http://127.0.0.1:{port}" in first.stdout
    )
    for directory in ("data", "workspace"):
        assert (prefix / directory).stat().st_mode & 0o777 == 0o750
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/status", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert http.get("/v1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    pid = (prefix / "hub.pid").read_text()

    second = bootstrap(bundle, "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Nothing changed" in second.stdout and "== " not in second.stdout, second.stdout
    assert (prefix / "hub.pid").read_text() == pid  # the same hub process, untouched
    assert key not in first.stdout + first.stderr + second.stdout


def test_bootstrap_applies_a_changed_configuration_and_restarts_the_hub(
    tmp_path: Path, wheel: Path, installs: list[Installed]
) -> None:
    port = free_port()
    project, _ = project_at(tmp_path, port)
    prefix = tmp_path / "hub"
    installs.append(Installed(prefix))
    assert (
        bootstrap(project / "vps", "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel)).returncode
        == 0
    )
    pid = (prefix / "hub.pid").read_text()
    config = project / "vps/hub.toml"
    config.write_text(config.read_text().replace("max_attempts = 3", "max_attempts = 5"))
    again = bootstrap(project / "vps", "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "== install the configuration" in again.stdout and "== stop the hub" in again.stdout
    assert (prefix / "hub.pid").read_text() != pid
    assert "max_attempts = 5" in (prefix / "etc/hub.toml").read_text()


def test_bootstrap_with_no_key_prints_the_created_admin_key_once(
    tmp_path: Path, wheel: Path, installs: list[Installed]
) -> None:
    port = free_port()
    project = render(tmp_path / "project", hub_url=f"http://127.0.0.1:{port}", api_key_hash="").dest
    prefix = tmp_path / "hub"
    installs.append(Installed(prefix))
    first = bootstrap(project / "vps", "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel))
    assert first.returncode == 0, first.stdout + first.stderr
    shown = first.stdout.split("It is shown this once; keep it:\n", 1)[1].split()[0]
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert http.get("/v1/keys", headers={"Authorization": f"Bearer {shown}"}).status_code == 200  # admin
    second = bootstrap(project / "vps", "--prefix", str(prefix), "--no-systemd", "--wheel", str(wheel))
    assert shown not in second.stdout and not (prefix / "data/initial-admin-key").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option: --bogus"),
        (["--prefix"], "--prefix needs a directory"),
        (["--port", "80x", "--prefix", "/tmp/x", "--no-systemd"], "--port must be a number"),
        (["--prefix", "/tmp/x"], "--prefix installs without systemd: add --no-systemd"),
        (
            ["--prefix", "/tmp/x", "--no-systemd", "--wheel", "/nonexistent.whl"],
            "no wheel at /nonexistent.whl",
        ),
    ],
)
def test_bootstrap_refuses_bad_options_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    project = render(tmp_path / "project").dest
    done = bootstrap(project / "vps", *args)
    assert done.returncode != 0
    assert message in done.stderr


def test_a_bundle_rendered_from_a_template_commit_pins_no_version_and_asks_for_a_wheel(
    tmp_path: Path,
) -> None:
    """Plain copier from a git checkout records `_commit` as git describe says it (a bare hash, or
    v0.2.0-1-gabc1234), which pip cannot install; only a release tag pins a version."""
    template = tmp_path / "template"
    template.mkdir()
    shutil.copy2(template_root() / "copier.yml", template / "copier.yml")
    shutil.copytree(template_root() / "template", template / "template")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "template"]):
        git(template, *command)

    def copy(dest: Path, *args: str) -> str:
        copier = [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", *args]
        done = subprocess.run(
            [*copier, str(template), str(dest)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return (dest / "vps/bootstrap.sh").read_text()

    assert "\nPINNED=''\n" in copy(tmp_path / "untagged")
    prefix = tmp_path / "hub"
    unpinned = bootstrap(tmp_path / "untagged/vps", "--prefix", str(prefix), "--no-systemd")
    assert unpinned.returncode == 1 and unpinned.stdout == ""
    assert unpinned.stderr.startswith("bootstrap.sh: this bundle pins no released version of the hub")
    assert "--wheel FILE" in unpinned.stderr and len(unpinned.stderr.splitlines()) == 1
    assert not prefix.exists()  # it stopped before changing anything

    git(template, "tag", "v0.2.0")
    assert "\nPINNED=0.2.0\n" in copy(tmp_path / "tagged")
    git(template, "commit", "-q", "--allow-empty", "-m", "after the release")
    assert "\nPINNED=''\n" in copy(tmp_path / "after", "--vcs-ref", "HEAD")
    bad = bootstrap(tmp_path / "tagged/vps", "--prefix", str(prefix), "--no-systemd", "--version", "abc1234")
    assert bad.returncode == 1 and not prefix.exists()
    assert bad.stderr == "bootstrap.sh: --version must be a released version like 1.2.0, not 'abc1234'\n"


@pytest.mark.parametrize(
    ("commit", "pinned"),
    [
        ("0.1.0+c9490f29d66c", "0.1.0"),  # the bundled VERSION+DIGEST
        ("v1.2.0", "1.2.0"),
        ("1.0rc1", "1.0rc1"),
        ("v0.2.0-1-gabc1234", ""),  # git describe after a release
        ("abc1234", ""),
        ("1234567", ""),  # a short hash can be all digits (about 1 in 27): no version
    ],
)
def test_only_a_release_is_pinned(commit: str, pinned: str) -> None:
    source = (template_root() / "template/vps/bootstrap.sh.jinja").read_text()
    head = source.split("#!/usr/bin/env bash", 1)[0] + "{{ pinned }}"
    # copier renders the template with these filters and no autoescape (it writes shell, not HTML)
    env = jinja2.Environment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])  # noqa: S701
    assert env.from_string(head).render(_copier_answers={"_commit": commit}).strip() == pinned


# -- scaffold deploy ---------------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SSHServer]:
    with ssh_server(tmp_path) as server:
        yield server


def run_deploy(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scaffold", "deploy", str(project), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def test_deploy_over_ssh_installs_checks_and_says_what_next(
    tmp_path: Path, sshd: SSHServer, wheel: Path, installs: list[Installed]
) -> None:
    port = free_port()
    project, key = server_project_at(tmp_path, port)
    prefix = tmp_path / "server-prefix"
    installs.append(Installed(prefix))
    ssh = [*sshd.args(), "--prefix", str(prefix)]
    done = run_deploy(project, *ssh)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for progress in (
        "==> building the bundle",
        "==> copying the bundle to root@127.0.0.1",
        "== install the hub from",
        f"==> waiting for http://127.0.0.1:{port}/healthz on root@127.0.0.1 (127.0.0.1)",
        "==> checking an authenticated request",
        "/coordinator",
        "/worker backend",
    ):
        assert progress in out, out
    assert key not in out + done.stderr
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert http.get("/v1/status", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    again = run_deploy(project, *ssh, "--wheel", str(wheel))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing changed" in again.stdout or "== install the hub" in again.stdout


def test_deploy_checks_the_host_it_installed_not_whatever_the_url_reaches(
    tmp_path: Path, sshd: SSHServer, wheel: Path, installs: list[Installed]
) -> None:
    """The project's URL names another address, where another hub answers (a decoy taking any
    key): the deploy checks the hub on the host it installed, and says the URL points elsewhere."""
    port = free_port()
    project, key = server_project_at(tmp_path, port, host="127.0.0.2")
    prefix = tmp_path / "server-prefix"
    installs.append(Installed(prefix))
    asked: list[str] = []

    class Decoy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

    decoy = http.server.ThreadingHTTPServer(("127.0.0.2", port), Decoy)
    threading.Thread(target=decoy.serve_forever, daemon=True).start()
    try:
        done = run_deploy(
            project, *sshd.args(), "--prefix", str(prefix), "--wheel", str(wheel), "--timeout", "20"
        )
    finally:
        decoy.shutdown()
        decoy.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert asked == []
    assert "==> checking an authenticated request" in done.stdout
    assert "note: 127.0.0.2 resolves to 127.0.0.2, not to 127.0.0.1 where the hub" in done.stdout
    assert key not in done.stdout + done.stderr


def test_deploy_to_a_host_refuses_a_local_project_and_says_how_to_move_it(tmp_path: Path) -> None:
    project, _ = project_at(tmp_path, 5555)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "rendered"]):
        git(project, *command)

    refused = run_deploy(project, "--host", "admin@203.0.113.10", "--port", str(free_port()))

    assert refused.returncode == 1, refused.stdout + refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("scaffold: error: ") and "deployment: local" in line and "203.0.113.10" in line
    assert "==>" not in refused.stdout  # nothing built, nothing copied
    # the command it gives moves the project to that server, as written
    update = shlex.split(line.split("`")[1])
    moved = subprocess.run(
        [sys.executable, "-m", *update],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert moved.returncode == 0, moved.stderr
    answers = (project / ".copier-answers.yml").read_text()
    assert "deployment: remote" in answers and "hub_url: http://203.0.113.10:5555" in answers
    assert (project / "vps/hub.service").is_file()


def test_deploy_says_what_to_do_when_the_host_is_unreachable_or_refuses(
    tmp_path: Path, sshd: SSHServer, wheel: Path
) -> None:
    project, _ = server_project_at(tmp_path, free_port())
    closed = run_deploy(
        project, *sshd.args(port=free_port()), "--wheel", str(wheel), "--prefix", str(tmp_path)
    )
    assert closed.returncode == 1
    assert "cannot reach root@127.0.0.1 over SSH" in closed.stderr and "--port" in closed.stderr
    assert "Traceback" not in closed.stderr and len(closed.stderr.strip().splitlines()) == 1

    stranger = tmp_path / "stranger"
    subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refused = run_deploy(
        project, *sshd.args(identity=stranger), "--wheel", str(wheel), "--prefix", str(tmp_path)
    )
    assert refused.returncode == 1
    assert "refused the SSH login" in refused.stderr and "--identity" in refused.stderr


def test_deploy_reports_a_failed_bootstrap_step(tmp_path: Path, sshd: SSHServer, wheel: Path) -> None:
    project, _ = server_project_at(tmp_path, free_port())
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the prefix should go")
    done = run_deploy(project, *sshd.args(), "--wheel", str(wheel), "--prefix", str(blocker / "hub"))
    assert done.returncode == 1
    assert "bootstrap.sh failed on root@127.0.0.1" in done.stderr, done.stderr


def test_deploy_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    project, _ = project_at(tmp_path, free_port())
    nowhere = run_deploy(project)
    assert nowhere.returncode == 2 and "one of the arguments --host --local is required" in nowhere.stderr
    both = run_deploy(project, "--local", "--port", "22")
    assert both.returncode == 1 and "--identity, --port and --ssh-option are for --host" in both.stderr
    missing = run_deploy(
        project, "--local", "--prefix", str(tmp_path / "p"), "--wheel", str(tmp_path / "x.whl")
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr
    not_a_project = run_deploy(tmp_path, "--local", "--prefix", str(tmp_path / "p"))
    assert not_a_project.returncode == 1 and ".copier-answers.yml" in not_a_project.stderr


def test_a_hub_that_never_answers_is_a_timeout_that_names_the_log() -> None:
    with pytest.raises(DeployError, match=r"did not answer within 2 s .*check journalctl -u team-hub"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", 2.0, "journalctl -u team-hub on host")


def test_a_dry_run_as_root_lists_the_system_install_and_changes_nothing(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "run the tests as root (as CI does): this dry run takes the root path"
    project = render(tmp_path / "project", **ANSWER_SETS["remote-tls"], project_slug="dry-run-team").dest
    done = bootstrap(project / "vps", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    for step in (
        "would: create the system user dry-run-team-hub",
        "would: create the virtual environment /opt/dry-run-team/venv",
        "would: install the hub from vps-agent-scaffold==",
        "would: install the service unit /etc/systemd/system/dry-run-team-hub.service",
        "would: install the Caddy configuration for hub.example.com",
    ):
        assert step in done.stdout, done.stdout
    assert "== " not in done.stdout
    assert not Path("/opt/dry-run-team").exists() and not Path("/etc/dry-run-team").exists()
    assert subprocess.run(["id", "dry-run-team-hub"], capture_output=True, check=False).returncode != 0


def test_the_local_background_hub_stops_restarts_and_takes_keys_as_its_readme_says(
    tmp_path: Path, wheel: Path, installs: list[Installed]
) -> None:
    """vps/README.md's commands for the hub `scaffold deploy --local` starts, run as written with
    the prefix in place of the documented one: install, add a key, stop, start again."""
    port = free_port()
    project, key = project_at(tmp_path, port)
    prefix = tmp_path / "hub"
    installs.append(Installed(prefix))
    readme = (project / "vps/README.md").read_text()
    documented = "~/.local/share/vps-agent-scaffold/agent-team/hub"
    section = readme[readme.index(f"```sh\nscaffold deploy --local --prefix {documented}") :]
    commands = [
        line.replace(documented, str(prefix))
        for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)[:3]
        for line in block.splitlines()
    ]
    install, stop, start, add_key = commands
    assert stop.startswith("kill ") and start == install and add_key.startswith("scaffold hub keys add ")

    def scaffold(line: str) -> subprocess.CompletedProcess[str]:
        words = [*shlex.split(line)[1:], *(["--wheel", str(wheel)] if "deploy" in line else [])]
        return subprocess.run(
            [sys.executable, "-m", "scaffold", *words],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def answers(with_key: str) -> int:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            return http.get("/v1/status", headers={"Authorization": f"Bearer {with_key}"}).status_code

    installed = scaffold(install)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    added = scaffold(add_key.replace("NAME", "laptop"))
    assert added.returncode == 0, added.stderr
    new_key = added.stdout.strip()
    assert answers(key) == 200 and answers(new_key) == 200  # the running hub reads the added key

    pid = int((prefix / "hub.pid").read_text())
    assert subprocess.run(["bash", "-c", stop], timeout=30, check=False).returncode == 0
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the hub did not stop"
    with pytest.raises(httpx2.TransportError):
        answers(key)

    restarted = scaffold(start)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "== start the hub" in restarted.stdout
    assert answers(new_key) == 200  # the data stayed under the prefix
