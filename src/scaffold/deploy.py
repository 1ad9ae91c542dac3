"""`scaffold deploy`: put a rendered project's hub on a server (or this machine) and check it.

The steps: build the bundle (the project's `vps/` plus a wheel of this package in `dist/`),
copy it over SSH (one connection: a tar stream) and run its `bootstrap.sh` there, wait for
`/healthz` at the project's hub URL on the machine just installed (whatever the URL's DNS says),
make one authenticated request with the project's key, and print the next steps. The bootstrap
is idempotent, so deploying again is how an update reaches the server. Every failure is a
`DeployError` that says what happened and what to do.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import scaffold
from scaffold.errors import DeployError
from scaffold.render import LOCAL_SETTINGS, read_answers

SSH_FAILED = 255  # ssh's own exit code: it could not connect or log in


@dataclass(frozen=True)
class Target:
    """Where to install: `host` (user@host) over SSH, or None for this machine."""

    host: str | None = None
    identity: Path | None = None
    port: int | None = None
    ssh_options: Sequence[str] = field(default_factory=tuple)

    def ssh(self, *command: str) -> list[str]:
        assert self.host is not None
        return ["ssh", *self._options(), self.host, *command]

    def address(self) -> str:
        """The machine the hub was installed on: the host ssh logs in to (a Host alias of
        ~/.ssh/config resolved, as `ssh -G` shows), or loopback for this machine."""
        if self.host is None:
            return "127.0.0.1"
        shown = subprocess.run(
            ["ssh", "-G", *self._options(), self.host], capture_output=True, text=True, check=False
        )
        for line in shown.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                return value
        return self.host.rpartition("@")[2]

    def _options(self) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "StrictHostKeyChecking=accept-new"]
        for option in self.ssh_options:
            args += ["-o", option]
        if self.identity is not None:
            args += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.port is not None:
            args += ["-p", str(self.port)]
        return args


def deploy(
    project: Path,
    target: Target,
    *,
    prefix: str | None = None,
    wheel: Path | None = None,
    health_timeout: float = 60.0,
    out: TextIO = sys.stdout,
) -> None:
    def step(text: str) -> None:
        print(f"==> {text}", file=out, flush=True)

    answers = read_answers(project)
    if target.host is not None and answers.get("deployment") != "remote":
        raise DeployError(move_to_a_server(project, answers, target.host))
    bundle_source = project / "vps"
    if not (bundle_source / "bootstrap.sh").is_file():
        raise DeployError(f"{bundle_source} has no bootstrap.sh: run `scaffold update {project}` to get it")
    if target.host is None and prefix is None and os.geteuid() != 0:
        raise DeployError("installing on this machine needs root (sudo), or --prefix DIR to install as you")
    with tempfile.TemporaryDirectory(prefix="vps-bundle-") as scratch:
        bundle = Path(scratch) / "bundle"
        step("building the bundle: vps/ and a wheel of vps-agent-scaffold " + scaffold.__version__)
        shutil.copytree(bundle_source, bundle, ignore=shutil.ignore_patterns("dist", "__pycache__"))
        (bundle / "dist").mkdir()
        shutil.copy2(wheel or build_wheel(Path(scratch)), bundle / "dist")
        options = ["--prefix", prefix, "--no-systemd"] if prefix is not None else []
        if target.host is None:
            step("running bootstrap.sh on this machine")
            run_bootstrap_here(bundle, options, out)
        else:
            step(f"copying the bundle to {target.host} and running bootstrap.sh there")
            run_bootstrap_remote(target, bundle, options, out)
    url = str(answers["hub_url"]).rstrip("/")
    # The check goes to the machine just installed, not wherever the URL resolves: that may
    # be another hub (a local one on the same port), or nothing yet (DNS not set up).
    address = target.address()
    step(f"waiting for {url}/healthz on {target.host or 'this machine'} ({address})")
    log = f"{prefix}/hub.log" if prefix is not None else f"journalctl -u {answers['project_slug']}-hub"
    wait_healthy(url, health_timeout, f"{log} {f'on {target.host}' if target.host else 'here'}", address)
    key = project_key(project)
    if key is None:
        print(
            "    no VPS_API_KEY in the environment or .claude/settings.local.json: the check with a key "
            "is skipped",
            file=out,
        )
    else:
        step("checking an authenticated request (GET /v1/status) with the project's key")
        check_key(url, key, address)
    if target.host is not None and (elsewhere := points_elsewhere(url, address)):
        print(f"    note: {elsewhere}", file=out)
    print(next_steps(project, answers, key is not None), file=out, flush=True)


def move_to_a_server(project: Path, answers: dict[str, object], host: str) -> str:
    """Why a local project is not deployed to a host, and the `scaffold update` that moves it."""
    server = host.rpartition("@")[2]
    port = urllib.parse.urlsplit(str(answers.get("hub_url", ""))).port or 5555
    data = ["deployment=remote", f"hub_url=http://{f'[{server}]' if ':' in server else server}:{port}"]
    if str(answers.get("workspace_path", "")).startswith("~"):  # a server needs an absolute path
        data.append(f"workspace_path=/srv/{answers.get('project_slug')}/workspace")
    where = "" if project == Path.cwd() else f" {shlex.quote(str(project))}"
    update = f"scaffold update{where} " + " ".join(f"--data {item}" for item in data)
    return (
        f"{project} runs its hub on this machine (deployment: local), so there is nothing to install on "
        f"{host}; to move the hub there, run `{update}`, commit, and deploy again (vps/README.md, "
        '"Moving to a server")'
    )


def build_wheel(directory: Path) -> Path:
    """A wheel of the installed package, built from its source checkout."""
    source = Path(scaffold.__file__).resolve().parents[2]
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file() or 'name = "vps-agent-scaffold"' not in pyproject.read_text(encoding="utf-8"):
        raise DeployError(
            "this installation has no source to build the hub's wheel from: pass --wheel FILE "
            "(a vps_agent_scaffold-*.whl)"
        )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(directory),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(directory.glob("vps_agent_scaffold-*.whl"))
    if built.returncode != 0 or not wheels:
        raise DeployError(f"building the wheel failed: {last_line(built.stderr)}")
    return wheels[-1]


def run_bootstrap_here(bundle: Path, options: list[str], out: TextIO) -> None:
    process = subprocess.Popen(
        ["bash", str(bundle / "bootstrap.sh"), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = relay(process, out)
    if process.wait() != 0:
        raise DeployError(f"bootstrap.sh failed: {failed_step(lines)}")


def run_bootstrap_remote(target: Target, bundle: Path, options: list[str], out: TextIO) -> None:
    # One connection: the bundle arrives as a tar stream on stdin; root runs it, else sudo -n.
    script = (
        'set -e; d=$(mktemp -d /tmp/vps-bundle.XXXXXX); trap \'rm -rf "$d"\' EXIT; tar -xzf - -C "$d"; '
        'if [ "$(id -u)" = 0 ]; then s=; else s="sudo -n"; fi; '
        f'$s bash "$d/bootstrap.sh" {shlex.join(options)}'
    )
    # tar's own complaints (a broken pipe when ssh fails) would only hide ssh's message
    archive = subprocess.Popen(
        ["tar", "-czf", "-", "-C", str(bundle), "."], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert archive.stdout is not None
    try:
        process = subprocess.Popen(
            target.ssh(script),
            stdin=archive.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    except FileNotFoundError:
        raise DeployError("ssh is not installed here: install OpenSSH's client") from None
    archive.stdout.close()
    lines = relay(process, out)
    code = process.wait()
    packed = archive.wait()
    if code == SSH_FAILED:
        raise DeployError(ssh_problem(target, lines))
    if packed != 0:
        raise DeployError(f"packing the bundle with tar failed (exit {packed}): is tar installed here?")
    if code != 0:
        if any("sudo: a password is required" in line for line in lines):
            raise DeployError(f"{target.host}: the user needs root or passwordless sudo to run bootstrap.sh")
        raise DeployError(f"bootstrap.sh failed on {target.host}: {failed_step(lines)}")


def relay(process: subprocess.Popen[str], out: TextIO) -> list[str]:
    """Show the process's output as it comes (indented), and keep it."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if not line.startswith("WARNING: Location"):  # pip's noise about unused find-links
            print(f"    {line}", file=out, flush=True)
    return lines


def ssh_problem(target: Target, lines: list[str]) -> str:
    said = " ".join(lines)
    if "Permission denied" in said or "Too many authentication failures" in said:
        return (
            f"{target.host} refused the SSH login: give the key it accepts with --identity FILE, "
            "or add yours to the user's ~/.ssh/authorized_keys"
        )
    if "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in said:
        return f"{target.host}'s host key is not the one known here: check ~/.ssh/known_hosts"
    reason = last_line("\n".join(lines)) or "ssh failed"
    return f"cannot reach {target.host} over SSH ({reason}): check the host name, --port and the firewall"


def failed_step(lines: list[str]) -> str:
    steps = [line for line in lines if line.startswith("== ")]
    errors = [line for line in lines if line.startswith("bootstrap.sh: ")]
    where = f"at step '{steps[-1][3:]}'" if steps else "before its first step"
    return f"{where}: {errors[-1] if errors else last_line(chr(10).join(lines))}"


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    return lines[-1].strip() if lines else ""


def get(url: str, path: str, address: str | None, headers: dict[str, str], timeout: float) -> int:
    """GET url+path from `address` (or from the URL's host when None) and return the status.

    The request is the URL's own (its Host header, its TLS name and certificate check); only
    the TCP connection goes to `address`, as `curl --resolve` does.
    """
    parts = urllib.parse.urlsplit(url)
    host, secure = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((address or host, port), timeout=timeout)
    try:
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = sock  # already connected: the connection sends over it as it is
        connection.request("GET", path, headers={"Host": parts.netloc, **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        sock.close()


def wait_healthy(url: str, timeout: float, log: str, address: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    problem = ""
    while time.monotonic() < deadline:
        try:
            status = get(url, "/healthz", address, {}, 5)
            if status == 200:
                return
            problem = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as error:
            problem = str(error) or type(error).__name__
        time.sleep(1.0)
    at = f" at {address}" if address else ""
    raise DeployError(
        f"the hub was installed but {url}/healthz did not answer{at} within {timeout:.0f} s "
        f"({problem or 'no answer'}): check {log} and the firewall"
    )


def points_elsewhere(url: str, address: str) -> str | None:
    """Say so when the URL's host does not resolve to `address`, where the hub was installed:
    the check went there directly, and sessions that use the URL would not reach it."""
    host = urllib.parse.urlsplit(url).hostname or ""
    installed, named = resolve(address), resolve(host)
    if not installed:
        return None  # a name only ssh knows how to reach (a proxy): nothing to compare
    if not named:
        return f"{host} does not resolve here; sessions reach the hub at {url} once it points to {address}"
    if named & installed:
        return None
    return (
        f"{host} resolves to {', '.join(sorted(named))}, not to {address} where the hub was installed; "
        f"sessions that use {url} reach another machine until {host} points to {address}"
    )


def resolve(name: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return set()


def project_key(project: Path) -> str | None:
    if os.environ.get("VPS_API_KEY"):
        return os.environ["VPS_API_KEY"]
    try:
        settings = json.loads((project / LOCAL_SETTINGS).read_text(encoding="utf-8"))
        key = settings["env"]["VPS_API_KEY"]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    return key if isinstance(key, str) and key else None


def check_key(url: str, key: str, address: str | None = None) -> None:
    try:
        status = get(url, "/v1/status", address, {"Authorization": f"Bearer {key}"}, 10)
    except (OSError, http.client.HTTPException) as error:
        raise DeployError(f"GET {url}/v1/status failed: {error}") from None
    if status == 401:
        raise DeployError(
            "the hub answers but refuses the project's key (401): the key's hash in "
            "vps/hub.toml must be the one of VPS_API_KEY; `scaffold hub keys add` makes "
            "a new key on the server"
        )
    if status != 200:
        raise DeployError(f"the hub answered GET /v1/status with {status}")


def next_steps(project: Path, answers: dict[str, object], keyed: bool) -> str:
    url, roles = answers["hub_url"], answers.get("worker_roles") or ["backend"]
    role = roles[0] if isinstance(roles, list) else "backend"
    key_line = (
        "the key is already in .claude/settings.local.json (git-ignored)"
        if keyed
        else 'put the key in .claude/settings.local.json: {"env": {"VPS_API_KEY": "<key>"}}'
    )
    return f"""
The hub is up at {url}.
Next steps:
  1. VPS_API_URL is {url} in .claude/settings.json; {key_line}.
     Sessions started elsewhere need the same two variables in their environment.
  2. cd {project} && claude      then type /coordinator    (one session: plans and queues tasks)
  3. cd {project} && claude      then type /worker {role} (one session per worker; the roles
     are in .claude/WORKER_CLAUDE.md)
  Check it any time with: python3 .claude/skills/vps-workspace/scripts/vps.py status"""
