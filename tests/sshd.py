"""OpenSSH's server on 127.0.0.1 for the tests that log in over ssh (`scaffold deploy`, `scaffold
team --host`): a throwaway host key, logins as root by one throwaway key only."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool as tool
from tests.hubproc import free_port


@dataclass
class SSHServer:
    port: int
    identity: Path
    known_hosts: Path

    def args(self, identity: Path | None = None, port: int | None = None) -> list[str]:
        """`scaffold deploy` options that reach this server as root."""
        known = f"UserKnownHostsFile={self.known_hosts}"
        return [
            "--host",
            "root@127.0.0.1",
            "--port",
            str(port or self.port),
            "--identity",
            str(identity or self.identity),
            "--ssh-option",
            known,
        ]


@contextlib.contextmanager
def ssh_server(tmp_path: Path, env: Mapping[str, str] | None = None) -> Iterator[SSHServer]:
    """The server, stopped on exit. `env` is set in every session it starts (sshd's SetEnv), HOME
    and PATH included: a stand-in for another machine's login environment."""
    assert os.geteuid() == 0, "the SSH tests log in as root: run the tests as root (as CI does)"
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(
            [tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    port = free_port()
    config = keys / "sshd_config"
    # One SetEnv line: sshd takes only the first of several.
    setenv = "SetEnv " + " ".join(f'"{name}={value}"' for name, value in env.items()) + "\n" if env else ""
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        + setenv,
        encoding="utf-8",
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    log = keys / "sshd.log"
    with log.open("wb") as errors:
        server = subprocess.Popen([tool("sshd"), "-D", "-e", "-f", str(config)], stderr=errors)
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True, check=False
            ).returncode
            != 0
        ):
            assert server.poll() is None, f"sshd exited: {log.read_text()}"
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
        yield SSHServer(port, keys / "client", keys / "known_hosts")
    finally:
        server.terminate()
        server.wait(10)
