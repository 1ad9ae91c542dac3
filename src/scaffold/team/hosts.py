"""The machines a team runs on: this one, or one reached with ssh the way `scaffold deploy` reaches it.

Every command runs in the project's checkout on that host. Over ssh the remote shell gets one
string (`cd DIR && ...`), every word quoted, so paths and prompts with spaces survive.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.deploy import SSH_FAILED, Target
from scaffold.errors import TeamError

PROBE = Path(__file__).with_name("hostprobe.py")
LOCAL = "local"


@dataclass(frozen=True)
class Host:
    """`target.host` is user@host, or None for this machine; `project` is the checkout there."""

    target: Target
    project: Path

    where: str = ""  # the DIR of USER@HOST:DIR as given, part of the label

    @property
    def label(self) -> str:
        return f"{self.target.host}:{self.where}" if self.where else self.target.host or LOCAL

    @property
    def tmux(self) -> str:
        """The team's tmux server and session on this host: scaffold-<folder>-<6 hex of the path>,
        one per checkout, readable in `tmux ls`, safe as a socket name."""
        folder = re.sub(r"[^a-z0-9-]+", "-", self.project.name.lower()).strip("-")[:24] or "project"
        return f"scaffold-{folder}-{hashlib.sha1(str(self.project).encode()).hexdigest()[:6]}"  # noqa: S324

    @property
    def local(self) -> bool:
        return self.target.host is None

    def command(self, argv: list[str], *, tty: bool = False) -> list[str]:
        """The argv that runs `argv` in the project's directory on this host."""
        if self.local:
            return argv
        remote = f"cd {shlex.quote(str(self.project))} && {shlex.join(argv)}"
        ssh = self.target.ssh(remote)
        return [ssh[0], "-t", *ssh[1:]] if tty else ssh

    def run(
        self, argv: list[str], *, stdin: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                self.command(argv),
                cwd=self.project if self.local else None,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as error:
            raise TeamError(f"{self.label}: {error.filename} is not installed") from None
        except subprocess.TimeoutExpired:
            raise TeamError(
                f"{self.label}: `{shlex.join(argv)}` did not finish within {timeout:.0f} s"
            ) from None
        if not self.local and done.returncode == SSH_FAILED:
            reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
            raise TeamError(f"{self.label}: ssh could not log in: {reason}")
        if check and done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise TeamError(f"{self.label}: `{shlex.join(argv[:3])}` failed: {reason}")
        return done

    def probe(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """hostprobe.py run with the host's python3; its one JSON line."""
        done = self.run(["python3", "-", *args], stdin=PROBE.read_text(encoding="utf-8"), timeout=timeout)
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TeamError(
                f"{self.label}: the host check printed no answer: {done.stderr.strip()[-200:]}"
            ) from None
        if not isinstance(answer, dict):
            raise TeamError(f"{self.label}: the host check printed {answer!r}")
        return answer

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "host": target.host,
            "project": str(self.project),
            "identity": str(target.identity) if target.identity else None,
            "port": target.port,
            "ssh_options": list(target.ssh_options),
            "where": self.where,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Host:
        identity = data.get("identity")
        target = Target(
            host=data.get("host"),
            identity=Path(identity) if identity else None,
            port=data.get("port"),
            ssh_options=tuple(data.get("ssh_options") or ()),
        )
        return cls(target, Path(data["project"]), str(data.get("where") or ""))


def parse_host(spec: str, project: Path, base: Target) -> Host:
    """`local`, `user@host` or `user@host:DIR` (DIR: the checkout there, else the same path as here)."""
    if spec == LOCAL:
        return Host(Target(), project)
    address, colon, where = spec.partition(":")
    if not address or any(char.isspace() for char in spec) or address.startswith("-"):
        raise TeamError(f"--host {spec!r} is not USER@HOST, USER@HOST:DIR or local")
    if colon and not where.startswith("/"):
        raise TeamError(f"--host {spec!r}: the project's directory there must be an absolute path")
    target = Target(host=address, identity=base.identity, port=base.port, ssh_options=base.ssh_options)
    return Host(target, Path(where), where) if colon else Host(target, project)
