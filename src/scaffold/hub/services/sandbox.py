"""The confinement of one command run through the hub (see exec.py): bubblewrap, rlimits, a pids cgroup.

With `[exec] sandbox = "bubblewrap"` a command runs under `bwrap` and sees only:

- its tree (the workspace), read-write, at its own path; the hub's data directory is masked
  even where it lies inside the tree;
- /usr (and /bin, /sbin, /lib* as they are: links into /usr or read-only binds), and a list of
  /etc entries programs need (users, name resolution, certificates, alternatives, ...), all
  read-only: /etc as a whole is not shown, so neither is the hub's hub.toml under it, nor
  /etc/shadow; everything else of the host (the data directory, HOME, /root, /var, /run,
  /opt, /srv, /home, /work, ...) does not exist;
- a private tmpfs at /tmp (also HOME), its own /proc (a pid namespace: no process of the host
  or of another command is visible or can be signalled) and a minimal /dev; the root and
  everything but the tree and /tmp are read-only.

All namespaces are new (`--unshare-all`; the network's too unless `[exec] network = true`),
with a user namespace in which the command runs as the hub's uid (or `nobody` when the hub
runs as root) with no capabilities and may create no further user namespace; it is in a new
session (no TIOCSTI into a terminal) and dies with the hub.

Limits, per command: RLIMIT_DATA (`max_memory_mb`, the private writable memory of each
process; RLIMIT_AS would also count address space reserved but unused, which WebAssembly in
node needs by the gigabyte) and RLIMIT_CPU (`cpu_seconds` per process: SIGXCPU, then SIGKILL a
second later). Processes: RLIMIT_NPROC (`max_processes`), which the kernel applies to all
processes of the hub's user together (the hub's own threads included) and not at all to root.
So where a pids cgroup can be made (cgroup v1 `pids` hierarchy, or cgroup v2 with the pids
controller), each command gets its own with `pids.max = max_processes`, which holds for root
too; a hub that runs as root without one cannot limit processes and says so in its log.

`probe()` runs once when the hub starts: it runs `true` in the full sandbox. If that fails
(bwrap missing, user namespaces disabled), every command is refused with one line saying how
to enable the sandbox. With `[exec] sandbox = "none"`, commands run as the hub's user, as
before there was a sandbox: the operator accepted that an agent key can then read the hub's
data (logged once at start).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import SandboxUnavailable

log = logging.getLogger("scaffold.hub")

BWRAP = "bwrap"
BWRAP_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # bwrap's own environment holds nothing else
TMP = "/tmp"  # noqa: S108 (the sandbox's own tmpfs, not the host's)
HOME = TMP  # tools that write to HOME (git, npm, pip) work
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "fonts",
    "gai.conf",
    "gitconfig",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "inputrc",
    "java-17-openjdk",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "lsb-release",
    "magic",
    "magic.mime",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "perl",
    "pki",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "resolv.conf",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
    "xdg",
)
"""The /etc entries a command sees (those that exist); not secrets, not the hub's configuration."""
MASKED_ETC = ("ssl/private",)
NOBODY = 65534
PROBE_TIMEOUT = 30.0
CGROUP_PREFIX = "scaffold-exec-"
_SERIAL = itertools.count(1)  # per process: the hub's sandboxes (tests build many) share the names
ENABLE = (
    "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user namespaces, or set "
    '[exec] sandbox = "none" in hub.toml to accept that commands run as the hub\'s user and can read '
    "its data and keys"
)


@dataclass(frozen=True)
class Limits:
    processes: int
    memory_mb: int
    cpu_seconds: int

    def apply(self) -> None:
        """Set the rlimits of the calling process (the command's, before it starts)."""
        memory = self.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1))


@dataclass
class Launch:
    """How to start one command: its argv and what to do in the child before exec."""

    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None] | None = None
    status_fd: int | None = None
    """The write end of bwrap's --json-status-fd, passed to the child (closed here once it started)."""
    status_read: int | None = None
    """The read end: the first line names the sandbox's pid 1 ("child-pid"), the last its exit code."""
    cgroup: Path | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self.status_fd is None else (self.status_fd,)

    def started(self) -> None:
        """The child has its copy of the status pipe: close ours, so its end is seen."""
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None


class Sandbox:
    """Turns a command into what runs it confined; `probe()` once before the first command."""

    def __init__(
        self,
        kind: str,
        *,
        network: bool = False,
        limits: Limits | None = None,
        hidden: Sequence[Path] = (),
        bwrap: str = BWRAP,
    ) -> None:
        self.kind = kind
        self.network = network
        self.limits = limits or Limits(256, 4096, 3600)
        self.hidden = tuple(path.expanduser().absolute() for path in hidden)
        self.bwrap = bwrap
        self.unavailable: str | None = None
        self.cgroups: Path | None = None  # where each command's pids cgroup is made

    @property
    def confined(self) -> bool:
        return self.kind == "bubblewrap"

    def check(self) -> None:
        """Raise SandboxUnavailable when commands must be refused."""
        if self.unavailable is not None:
            raise SandboxUnavailable(self.unavailable)

    def probe(self, tree: Path) -> None:
        """Find out once whether commands can run confined here, and log how they will run."""
        if not self.confined:
            log.warning(
                '[exec] sandbox = "none": commands run as the hub\'s user, unconfined; an agent '
                "key can read the hub's data and keys"
            )
            return
        found = shutil.which(self.bwrap)
        if found is None:
            self.unavailable = f"commands are refused: bubblewrap ({self.bwrap}) is not installed; {ENABLE}"
            log.error("%s", self.unavailable)
            return
        self.bwrap = found
        self.cgroups = _pids_cgroup_parent()
        launch = self.launch(["true"], tree, tree, {"PATH": "/usr/bin:/bin"})
        try:
            done = subprocess.run(
                launch.argv,
                env=launch.env,
                preexec_fn=launch.preexec,
                cwd=tree,
                pass_fds=launch.pass_fds,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
            reason = done.stderr.decode(errors="replace").strip().splitlines()[:1]
            failed = f"it exited {done.returncode}: {reason[0] if reason else 'no message'}"
        except (OSError, subprocess.SubprocessError) as error:
            done, failed = None, str(error)
        finally:
            deadline = time.monotonic() + PROBE_TIMEOUT
            while not self.release(launch, last_try=time.monotonic() > deadline):
                time.sleep(0.001)  # its processes die a moment after bwrap
        if done is None or done.returncode != 0:
            self.unavailable = (
                f"commands are refused: the bubblewrap sandbox does not work here ({failed}); {ENABLE}"
            )
            log.error("%s", self.unavailable)
            return
        if self.cgroups is not None:
            processes = f"a pids cgroup per command under {self.cgroups}"
        elif os.geteuid() != 0:
            processes = "RLIMIT_NPROC, for all commands of the hub's user together"
        else:
            processes = (
                "nothing: the hub runs as root, which RLIMIT_NPROC exempts, and no pids cgroup is writable"
            )
        log.info(
            "commands run in a bubblewrap sandbox (network %s); processes are limited by %s",
            "on" if self.network else "off",
            processes,
        )

    def launch(
        self,
        argv: Sequence[str],
        tree: Path,
        cwd: Path,
        env: Mapping[str, str],
        readonly: Sequence[Path] = (),
    ) -> Launch:
        """What to start for `argv` in `cwd` (inside `tree`, with `readonly` paths beside it, at
        their own places: a task tree's repository and shared paths); call release() once it has
        ended."""
        if not self.confined:
            return Launch(list(argv), dict(env))
        # The caller's environment goes to the command only, never to bwrap itself, which runs
        # outside the sandbox (LD_PRELOAD naming a library in the tree would run code there).
        variables = [
            arg for name, value in {**env, "HOME": HOME}.items() for arg in ("--setenv", name, value)
        ]
        read, write = os.pipe2(os.O_CLOEXEC)
        cgroup = self._new_cgroup()
        procs = str(cgroup / "cgroup.procs") if cgroup is not None else None
        limits = self.limits

        def preexec() -> None:  # in the child, before bwrap starts: nothing it forks escapes these
            if procs is not None:
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            limits.apply()

        command = [
            self.bwrap,
            *self._arguments(tree.resolve(), cwd, readonly),
            "--json-status-fd",
            str(write),
            "--clearenv",
            *variables,
            "--",
            *argv,
        ]
        return Launch(
            command, {"PATH": BWRAP_PATH}, preexec, status_fd=write, status_read=read, cgroup=cgroup
        )

    def release(self, launch: Launch, *, last_try: bool = True) -> bool:
        """Close what the launch opened and remove its cgroup, which must be empty by then.

        False while the cgroup still holds processes that are ending (retry; with `last_try`
        it is left behind, logged).
        """
        for fd in (launch.status_fd, launch.status_read):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        launch.status_fd = launch.status_read = None
        if launch.cgroup is not None:
            try:
                launch.cgroup.rmdir()
            except OSError as error:
                if not last_try:
                    return False
                log.warning("could not remove the cgroup %s of a command: %s", launch.cgroup, error)
            launch.cgroup = None
        return True

    def _arguments(self, tree: Path, cwd: Path, readonly: Sequence[Path] = ()) -> list[str]:
        uid = os.getuid() or NOBODY  # root's commands run as nobody (a uid of the sandbox only)
        gid = os.getgid() or NOBODY
        args = [
            "--unshare-all",
            *(["--share-net"] if self.network else []),
            "--unshare-user",
            "--disable-userns",
            "--uid",
            str(uid),
            "--gid",
            str(gid),
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
        ]
        for system in map(Path, SYSTEM):
            if system.is_symlink():
                args += ["--symlink", str(system.readlink()), str(system)]
            elif system.is_dir():
                args += ["--ro-bind", str(system), str(system)]
        for name in ETC:
            if Path("/etc", name).is_symlink() or Path("/etc", name).exists():
                args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", TMP, "--symlink", TMP, "/var/tmp"]  # noqa: S108
        args += ["--bind", str(tree), str(tree)]
        for path in readonly:
            args += ["--ro-bind-try", str(path.resolve()), str(path.resolve())]
        for path in (*(Path("/etc", name) for name in MASKED_ETC), *self.hidden):
            args += _mask(path, tree)
        return [*args, "--remount-ro", "/", "--chdir", str(cwd)]

    def _new_cgroup(self) -> Path | None:
        if self.cgroups is None:
            return None
        cgroup = self.cgroups / f"{CGROUP_PREFIX}{os.getpid()}-{next(_SERIAL)}"
        try:
            cgroup.mkdir()
            (cgroup / "pids.max").write_text(str(self.limits.processes))
        except OSError as error:
            log.warning("could not make a pids cgroup for a command (%s); RLIMIT_NPROC only", error)
            with contextlib.suppress(OSError):
                cgroup.rmdir()
            return None
        return cgroup


def _mask(path: Path, tree: Path) -> list[str]:
    """bwrap arguments that hide `path`, if it exists where the command could see it."""
    visible = path.is_relative_to(tree) or (path.is_relative_to("/etc") and path.parts[2] in ETC)
    if not visible or not path.exists():
        return []
    resolved = str(path.resolve())
    if path.is_dir():  # an empty read-only directory in its place
        return ["--tmpfs", resolved, "--remount-ro", resolved]
    return ["--ro-bind", "/dev/null", resolved]


def _pids_cgroup_parent() -> Path | None:
    """A cgroup of this process under which a child with its own `pids.max` can be made, or None.

    cgroup v1: the `pids` hierarchy; v2: the unified one, where the pids controller must be (or
    become) enabled for children. Either needs write access there, which a hub running as root
    outside a restricted container has.
    """
    for parent in _own_cgroups():
        probe = parent / f"{CGROUP_PREFIX}probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if not (probe / "pids.max").exists() and (parent / "cgroup.subtree_control").exists():
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text("+pids")
            if (probe / "pids.max").exists():
                _sweep(parent)
                return parent
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return None


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of commands of hubs that have ended (stopped before they could)."""
    for cgroup in parent.glob(f"{CGROUP_PREFIX}*-*"):
        owner = cgroup.name.removeprefix(CGROUP_PREFIX).split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not Path("/proc", owner).exists():
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def _own_cgroups() -> Iterator[Path]:
    """This process's cgroup directory in the v1 `pids` hierarchy and in the v2 one, where mounted."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    where: dict[str, str] = {}
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) > 4 and len(tail) > 2 and tail[0] == "cgroup2":
            where.setdefault("", fields[4])
        elif len(fields) > 4 and len(tail) > 2 and tail[0] == "cgroup" and "pids" in tail[2].split(","):
            where.setdefault("pids", fields[4])
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        key = "" if controllers == "" else "pids" if "pids" in controllers.split(",") else None
        if key is not None and key in where:
            yield Path(where[key]) / path.lstrip("/")
