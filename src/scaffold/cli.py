"""The `scaffold` command: parses arguments and maps ScaffoldErrors to exit codes.

Everything it does is a call into the library (`scaffold.wizard`, `scaffold.render`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaffold import __version__
from scaffold.errors import ScaffoldError

if TYPE_CHECKING:
    from scaffold.wizard import NewProject

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ScaffoldError as error:
        print(f"scaffold: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("scaffold: cancelled; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps text as usual, except an `example:` line: a command broken over lines cannot be pasted."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example: "):
            return indent + text
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """Every parser of the command, subcommands included (they take their parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scaffold",
        description="Run a coordinator and Claude Code workers on one codebase on a server.",
    )
    parser.add_argument("--version", action="version", version=f"scaffold {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    new = commands.add_parser(
        "new",
        help="render a new thin-client project (wizard, or --defaults)",
        description="Render a new thin-client project and its vps/ bundle. Generates the API key, "
        "shows it once and passes only its SHA-256 to the template.",
        epilog="example: scaffold new my-team --defaults --data worker_count=4 --save-key",
    )
    new.add_argument("dest", type=Path, help="directory to create (must not exist or be empty)")
    new.add_argument(
        "--defaults", action="store_true", help="take defaults for unanswered questions; no prompts"
    )
    _add_data_option(new, "answer a question (repeatable), e.g. --data 'worker_roles=[backend, testing]'")
    save = new.add_mutually_exclusive_group()
    save.add_argument(
        "--save-key",
        dest="save_key",
        action="store_true",
        default=None,
        help="write the key to the git-ignored .claude/settings.local.json",
    )
    save.add_argument("--no-save-key", dest="save_key", action="store_false", help="only show the key")
    new.add_argument(
        "--no-key",
        action="store_true",
        help="generate no key; the hub creates one on its first start and prints it once",
    )
    new.add_argument("--template", metavar="SRC", help="template path or git URL (default: the bundled one)")
    new.add_argument("--vcs-ref", metavar="REF", help="template git tag or commit to render")
    new.add_argument("--quiet", "-q", action="store_true", help="do not list the rendered files")
    new.set_defaults(run=_run_new)

    update = commands.add_parser(
        "update",
        help="upgrade a rendered project to a newer template",
        description="Upgrade a rendered project with copier's 3-way merge: your edits stay, the "
        "template's changes arrive. Recorded answers, the key among them, are not asked again.",
        epilog="example: scaffold update my-team --data worker_count=5",
    )
    update.add_argument("dir", nargs="?", type=Path, default=Path(), help="project directory (default: .)")
    update.add_argument(
        "--template",
        metavar="SRC",
        help="update from this template path or git URL instead of the recorded one "
        "(it must hold the project's version too)",
    )
    update.add_argument(
        "--vcs-ref", metavar="REF", help="template tag or commit to update to (default: newest)"
    )
    _add_data_option(update, "change a recorded answer (repeatable), e.g. --data worker_count=5")
    update.add_argument("--defaults", action="store_true", help="answer new questions with their defaults")
    update.add_argument("--quiet", "-q", action="store_true", help="do not list the changed files")
    update.set_defaults(run=_run_update)
    _add_deploy_command(commands)
    _add_team_commands(commands)
    _add_hub_commands(commands)
    return parser


def _add_deploy_command(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="install the project's hub on a server over SSH (or here) and check it",
        description="Build the bundle (vps/ and a wheel of this package), copy it over SSH, run its "
        "bootstrap.sh, wait for /healthz at the hub URL and check a request with the project's key. "
        "Run it again to update the server: the bootstrap changes only what differs.",
        epilog="example: scaffold deploy --host root@203.0.113.10 --identity ~/.ssh/id_ed25519",
    )
    deploy.add_argument("dir", nargs="?", type=Path, default=Path(), help="project directory (default: .)")
    where = deploy.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", metavar="USER@HOST", help="the server, as for ssh")
    where.add_argument("--local", action="store_true", help="install on this machine instead")
    _add_ssh_options(deploy)
    deploy.add_argument(
        "--prefix", metavar="DIR", help="install under DIR, the hub run without systemd (no root needed)"
    )
    deploy.add_argument(
        "--wheel", type=Path, metavar="FILE", help="ship this vps_agent_scaffold wheel (default: build one)"
    )
    deploy.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for /healthz (default 60)",
    )
    deploy.set_defaults(run=_run_deploy)


def _add_ssh_options(parser: argparse.ArgumentParser) -> None:
    """How ssh reaches --host: `scaffold deploy` and `scaffold team up` log in the same way."""
    parser.add_argument("--identity", "-i", type=Path, metavar="FILE", help="SSH private key to log in with")
    parser.add_argument("--port", "-p", type=int, metavar="N", help="SSH port (default 22)")
    parser.add_argument(
        "--ssh-option",
        "-o",
        action="append",
        default=[],
        metavar="OPTION",
        help="an ssh -o option, e.g. ProxyJump=bastion (repeatable)",
    )


def _run_deploy(args: argparse.Namespace) -> int:
    from scaffold.deploy import Target, deploy

    if args.local and (args.identity or args.port or args.ssh_option):
        raise ScaffoldError("--identity, --port and --ssh-option are for --host; --local runs here")
    if args.wheel is not None and not args.wheel.is_file():
        raise ScaffoldError(f"--wheel {args.wheel}: no such file")
    target = Target(None if args.local else args.host, args.identity, args.port, tuple(args.ssh_option))
    deploy(args.dir.resolve(), target, prefix=args.prefix, wheel=args.wheel, health_timeout=args.timeout)
    return 0


def _add_team_commands(commands: Any) -> None:
    team = commands.add_parser(
        "team",
        help="start, watch and stop the coordinator and its workers",
        description="Start the coordinator and the workers of a project in tmux (interactive, to watch "
        "and type into) or headless (claude -p under a supervisor that starts it again while there is "
        "work), here or on hosts reached with ssh; see who does what; stop them all.",
        epilog="example: scaffold team up --workers 3 --trust",
    )
    team_commands = team.add_subparsers(title="team commands", required=True, metavar="COMMAND")
    up = team_commands.add_parser(
        "up",
        help="start the team",
        description="Start the coordinator and N workers (roles in turn, as the setup guide's table says), "
        "each registered with its role without anyone typing. Checks the hub, each host's tools, login, "
        "trust and size first; a refused start leaves nothing running.",
        epilog="example: scaffold team up --workers 4 --role backend --role testing --headless",
    )
    _add_team_dir(up, positional=True)
    up.add_argument(
        "--workers", type=int, metavar="N", help="how many workers (default: the worker_count answer)"
    )
    up.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="roles to take in turn (repeatable)"
    )
    up.add_argument(
        "--headless", action="store_true", help="claude -p workers under a supervisor, no coordinator session"
    )
    up.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="USER@HOST[:DIR]",
        help="spread the sessions over these machines (repeatable; `local` is this one)",
    )
    _add_ssh_options(up)
    up.add_argument("--force", action="store_true", help="start even where the sessions do not fit the host")
    up.add_argument(
        "--trust",
        action="store_true",
        help="record your yes to Claude Code's trust and API-key questions, so no session waits on them",
    )
    up.add_argument(
        "--claude", default="claude", metavar="CMD", help="the Claude Code command (default: claude)"
    )
    up.add_argument(
        "--wait", type=float, default=90.0, metavar="SECONDS", help="how long to wait for workers to register"
    )
    up.set_defaults(run=_run_team_up)
    status = team_commands.add_parser(
        "status",
        help="who is working on what",
        description="A table of the team's slots: host, role, worker, state, current task, idle time, "
        "restarts.",
        epilog="example: scaffold team status --json",
    )
    _add_team_dir(status, positional=True)
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.set_defaults(run=_run_team_status)
    attach = team_commands.add_parser(
        "attach",
        help="watch and type into a session (tmux)",
        description="Attach this terminal to a session's tmux window (over ssh -t for another host); "
        "tmux's Ctrl-b d leaves it running.",
        epilog="example: scaffold team attach coordinator",
    )
    attach.add_argument("slot", nargs="?", help="coordinator, w1, w2, ... (default: the first)")
    _add_team_dir(attach)
    attach.set_defaults(run=_run_team_attach)
    logs = team_commands.add_parser(
        "logs",
        help="a slot's log (headless) or screen (interactive)",
        description="Print a headless slot's log (its runs, their results, Claude Code's errors) or an "
        "interactive slot's screen and scrollback.",
        epilog="example: scaffold team logs w2 --follow",
    )
    logs.add_argument("slot", help="w1, w2, ...")
    _add_team_dir(logs)
    logs.add_argument(
        "--lines", "-n", type=int, default=200, metavar="N", help="how many lines (default 200)"
    )
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing what comes")
    logs.set_defaults(run=_run_team_logs)
    down = team_commands.add_parser(
        "down",
        help="stop every session",
        description="Stop every session of the team; the tasks they held go back to the queue at once "
        "and their workers are marked stopped.",
        epilog="example: scaffold team down ~/my-team",
    )
    _add_team_dir(down, positional=True)
    down.set_defaults(run=_run_team_down)


def _add_team_dir(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    where = "the project (default: the one around .)"
    if positional:
        parser.add_argument("dir", nargs="?", type=Path, default=Path(), help=where)
    else:
        parser.add_argument("--dir", "-C", type=Path, default=Path(), metavar="DIR", help=where)


def _team() -> Any:
    from scaffold.team import launch

    return launch


def _run_team_status(args: argparse.Namespace) -> int:
    _team().show_status(args.dir, as_json=args.json)
    return 0


def _run_team_attach(args: argparse.Namespace) -> int:
    _team().attach(args.dir, args.slot)
    return 0


def _run_team_logs(args: argparse.Namespace) -> int:
    _team().logs(args.dir, args.slot, lines=args.lines, follow=args.follow)
    return 0


def _run_team_down(args: argparse.Namespace) -> int:
    _team().down(args.dir)
    return 0


def _run_team_up(args: argparse.Namespace) -> int:
    from scaffold.deploy import Target

    if (args.identity or args.port or args.ssh_option) and not args.host:
        raise ScaffoldError("--identity, --port and --ssh-option are for --host")
    _team().up(
        args.dir,
        workers=args.workers,
        roles=args.role,
        headless=args.headless,
        hosts=args.host,
        ssh=Target(None, args.identity, args.port, tuple(args.ssh_option)),
        force=args.force,
        trust=args.trust,
        claude=args.claude,
        wait=args.wait,
    )
    return 0


def _add_hub_commands(commands: Any) -> None:
    hub = commands.add_parser(
        "hub", help="run and administer the hub", description="Run and administer the hub."
    )
    hub_commands = hub.add_subparsers(title="hub commands", required=True, metavar="COMMAND")
    serve = hub_commands.add_parser(
        "serve",
        help="start the hub (one process; Ctrl-C stops it cleanly)",
        description="Start the hub: the task queue, workers, messages and events over HTTP.",
        epilog="example: scaffold hub serve --config my-team/vps/hub.toml",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="the shared code (default: from --config, or ./workspace)",
    )
    serve.add_argument("--port", type=int, help="port to listen on (default 5555)")
    _add_location(serve)
    serve.add_argument("--access-log", action="store_true", help="log every request line")
    serve.set_defaults(run=_run_hub_serve)

    keys = hub_commands.add_parser(
        "keys", help="manage API keys", description="Manage the hub's API keys (kept as hashes)."
    )
    key_commands = keys.add_subparsers(title="key commands", required=True, metavar="COMMAND")
    add = key_commands.add_parser(
        "add",
        help="create a key and print it (only its hash is kept)",
        description="Create an API key; the key alone is printed on standard output, once.",
        epilog="example: export VPS_API_KEY=$(scaffold hub keys add worker-1 --role agent"
        " --config vps/hub.toml)",
    )
    add.add_argument("name", help="a name for the key, e.g. laptop or worker-1")
    add.add_argument(
        "--role",
        choices=["viewer", "agent", "admin"],
        default="agent",
        help="viewer reads; agent works; admin also cancels and manages keys",
    )
    _add_location(add, keys=True)
    add.set_defaults(run=_run_keys_add)
    listing = key_commands.add_parser(
        "list",
        help="list keys (names and roles, never the keys)",
        description="List API keys: name, role, where it came from, when; never the key.",
        epilog="example: scaffold hub keys list --config vps/hub.toml",
    )
    _add_location(listing, keys=True)
    listing.set_defaults(run=_run_keys_list)
    revoke = key_commands.add_parser(
        "revoke",
        help="revoke a key by name",
        description="Revoke an API key by name.",
        epilog="example: scaffold hub keys revoke worker-1 --config vps/hub.toml",
    )
    revoke.add_argument("name", help="the key's name")
    _add_location(revoke, keys=True)
    revoke.set_defaults(run=_run_keys_revoke)
    _add_backup_commands(hub_commands)


def _add_backup_commands(hub_commands: Any) -> None:
    backup = hub_commands.add_parser(
        "backup",
        help="copy a hub's database and workspace history into a new directory (it may be running)",
        description="Copy the hub's database (SQLite's online backup: a running hub keeps serving) and "
        "the workspace's git history (a git bundle; uncommitted changes are not in it) into a new "
        "directory, 0700, with a manifest of checksums. Never copies initial-admin-key.",
        epilog="example: scaffold hub backup ~/backups/hub-1 --config my-team/vps/hub.toml",
    )
    backup.add_argument("dest", nargs="?", type=Path, help="directory to create (must not exist or be empty)")
    backup.add_argument("--into", type=Path, metavar="DIR", help="create DIR/hub-<UTC time> instead of DEST")
    backup.add_argument(
        "--keep", type=int, metavar="N", help="with --into: then delete all but the newest N backups in DIR"
    )
    _add_workspace(backup)
    _add_location(backup)
    backup.set_defaults(run=_run_hub_backup)

    restore = hub_commands.add_parser(
        "restore",
        help="put a backup back as the hub's database and workspace (the hub stopped)",
        description="Check a backup (its checksums, the database's integrity) and restore the "
        "database and the workspace from it. Refuses while a hub runs on the data directory, and "
        "refuses existing data unless --force, which moves it aside rather than deleting it.",
        epilog="example: scaffold hub restore ~/backups/hub-1 --config my-team/vps/hub.toml",
    )
    restore.add_argument("src", type=Path, help="the backup directory")
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore over existing data, moving it aside (DATA_DIR/before-restore-*, "
        "WORKSPACE.before-restore-*)",
    )
    _add_workspace(restore)
    _add_location(restore)
    restore.set_defaults(run=_run_hub_restore)


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="the hub's workspace (default: from --config, or ./workspace)",
    )


def _add_location(parser: argparse.ArgumentParser, *, keys: bool = False) -> None:
    if keys:
        config_help = "the hub's hub.toml (default: vps/hub.toml of the project around the current directory)"
        data_help = "the hub's database directory (default: from --config, or an existing ./hub-data)"
    else:
        config_help = "the hub's hub.toml"
        data_help = "the hub's database directory (default: from --config, or ./hub-data)"
    parser.add_argument("--config", type=Path, metavar="HUB_TOML", help=config_help)
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help=data_help)


def _run_new(args: argparse.Namespace) -> int:
    from scaffold.render import resolve_template
    from scaffold.wizard import new_project

    interactive = not args.defaults
    if interactive and not sys.stdin.isatty():
        raise ScaffoldError(
            "standard input is not a terminal: "
            "pass --defaults (and --data KEY=VALUE) to answer without prompts"
        )
    if args.no_key and any(item.startswith("api_key_hash=") for item in args.data):
        raise ScaffoldError("--no-key and --data api_key_hash=... contradict each other; use one")
    new_project(
        args.dest,
        resolve_template(args.template, args.vcs_ref),
        data=_parse_data(args.data),
        interactive=interactive,
        save_key=args.save_key,
        make_key=not args.no_key,
        quiet=args.quiet,
        on_created=_announce_new,
    )
    return 0


def _announce_new(project: NewProject) -> None:
    """Runs as the project appears, Ctrl-C held off: a created project always shows its key."""
    print(f"Created {project.dest} ({project.answers['project_name']}).")
    if project.key:
        print(f"API key (shown once; only its SHA-256 is in the project): {project.key}")
        if project.key_file:
            print(f"Saved it to {project.key_file} (git-ignored) for local Claude Code sessions.")
        else:
            print("Keep it safe and set it as VPS_API_KEY where your Claude Code sessions run.")
    elif not project.answers.get("api_key_hash"):
        print("No key yet: the hub creates one on its first start and prints it once.")
    guide, dest = project.dest / "docs" / "setup-guide.md", shlex.quote(str(project.dest))
    print(
        f"Next: read {guide}, start the hub, then `scaffold team up {dest}` starts the coordinator "
        "and the workers.",
        flush=True,
    )


def _run_update(args: argparse.Namespace) -> int:
    from scaffold.render import update_project

    interactive = not args.defaults and sys.stdin.isatty()
    commit = update_project(
        args.dir,
        template_ref=args.vcs_ref,
        quiet=args.quiet,
        interactive=interactive,
        data=_parse_data(args.data),
        template_src=args.template,
    )
    print(f"Updated {args.dir.resolve()} to template {commit}. Review with `git diff`, then commit.")
    return 0


def _hub_settings(args: argparse.Namespace) -> Any:
    from scaffold.hub.core.settings import load_settings

    settings = load_settings(args.config)
    data_dir = args.data_dir.expanduser().resolve() if args.data_dir else None
    workspace = getattr(args, "workspace", None)
    return settings.with_overrides(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=data_dir,
        workspace=workspace.expanduser().resolve() if workspace else None,
    )


def _key_settings(args: argparse.Namespace) -> Any:
    """Where a keys command works: --config/--data-dir; else the project around the current
    directory (its vps/hub.toml); else an existing ./hub-data. Never a new database that no hub
    reads, which is what a key added in the wrong directory used to land in."""
    from scaffold.hub.core.settings import HubSettings
    from scaffold.hub.store.sqlite import DB_FILE
    from scaffold.render import read_answers

    if args.config is not None or args.data_dir is not None:
        return _hub_settings(args)
    project = _enclosing_project(Path.cwd())
    if project is None:
        if not (HubSettings().data_dir / DB_FILE).is_file():
            raise ScaffoldError(
                "no hub here: run this inside a project made by `scaffold new` (it uses the project's "
                "vps/hub.toml), or pass --config HUB_TOML or --data-dir DIR"
            )
        return _hub_settings(args)
    args.config = project / "vps" / "hub.toml"
    settings = _hub_settings(args)
    # A remote project's data_dir names the server's disk: here it would be a new, unread database.
    answers = read_answers(project)
    if answers.get("deployment") == "remote" and not (settings.data_dir / DB_FILE).is_file():
        raise ScaffoldError(
            f"{project}'s hub runs on a server and its database ({settings.data_dir}) is not on this "
            f"machine: run the command on the server with --config /etc/{answers.get('project_slug')}/"
            'hub.toml (docs/setup-guide.md, "Adding and rotating keys"), or pass --config or --data-dir'
        )
    print(f"scaffold: the hub of {project} (vps/hub.toml), database in {settings.data_dir}", file=sys.stderr)
    return settings


def _enclosing_project(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding a rendered project (answers and vps/hub.toml)."""
    from scaffold.render import ANSWERS_FILE

    for directory in (start, *start.parents):
        if (directory / ANSWERS_FILE).is_file() and (directory / "vps" / "hub.toml").is_file():
            return directory
    return None


def _run_hub_serve(args: argparse.Namespace) -> int:
    from scaffold.hub.server import serve

    if args.port is not None and not 0 < args.port < 65536:
        raise ScaffoldError(f"--port must be between 1 and 65535, got {args.port}")
    serve(_hub_settings(args), access_log=args.access_log)
    return 0


def _run_keys_add(args: argparse.Namespace) -> int:
    import time

    from scaffold.hub.core.settings import KEY_NAME, KEY_NAME_RULE
    from scaffold.hub.server import open_store
    from scaffold.hub.services.auth import new_key

    if not KEY_NAME.fullmatch(args.name):
        raise ScaffoldError(f"key name {args.name!r}: {KEY_NAME_RULE}")
    with _closing(open_store(_key_settings(args))) as store:
        key, digest = new_key()
        store.add_key(args.name, args.role, digest, "cli", time.time())
    print(key)
    return 0


def _run_keys_list(args: argparse.Namespace) -> int:
    import time

    from scaffold.hub.server import open_store

    with _closing(open_store(_key_settings(args))) as store:
        keys = store.list_keys()
    print(f"{'name':<24} {'role':<7} {'source':<10} {'created':<20} state")
    for key in keys:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created_at))
        state = "active" if key.revoked_at is None else "revoked"
        print(f"{key.name:<24} {key.role:<7} {key.source:<10} {created:<20} {state}")
    return 0


def _run_keys_revoke(args: argparse.Namespace) -> int:
    import time

    from scaffold.hub.server import open_store

    with _closing(open_store(_key_settings(args))) as store:
        store.revoke_key(args.name, time.time())
    print(f"Revoked {args.name}; requests with it now get 401.")
    return 0


def _run_hub_backup(args: argparse.Namespace) -> int:
    from scaffold.hub.backup import backup, backup_into

    if (args.dest is None) == (args.into is None):
        raise ScaffoldError("give the backup's directory (DEST), or --into DIR for DIR/hub-<UTC time>")
    if args.keep is not None and (args.into is None or args.keep < 1):
        raise ScaffoldError("--keep N needs --into DIR and N of at least 1")
    started = time.monotonic()
    if args.into is not None:
        made, pruned = backup_into(_hub_settings(args), args.into.expanduser().absolute(), args.keep)
    else:
        made, pruned = backup(_hub_settings(args), args.dest), []
    print(f"Backed up the hub into {made.path} in {time.monotonic() - started:.1f} s: {made.summary()}.")
    uncommitted = made.manifest["workspace"]["uncommitted"]
    if uncommitted:
        print(
            f"Not in it: {uncommitted} uncommitted change(s) in the workspace (a backup holds git history)."
        )
    for old in pruned:
        print(f"Deleted the old backup {old} (--keep {args.keep}).")
    return 0


def _run_hub_restore(args: argparse.Namespace) -> int:
    from scaffold.hub.backup import restore

    done = restore(_hub_settings(args), args.src, force=args.force)
    print(
        f"Restored the backup {done.backup.path} of {done.backup.manifest['created_at']} "
        f"(hub {done.backup.manifest['hub_version']}): {done.backup.summary()}."
    )
    print(f"  database:  {done.database}")
    print(f"  workspace: {done.workspace}")
    for path in done.moved_aside:
        print(f"  moved the previous data aside to {path}")
    print("Start the hub to serve it; it upgrades an older schema on start.")
    return 0


@contextmanager
def _closing(store: Any) -> Iterator[Any]:
    try:
        yield store
    finally:
        store.close()


def _add_data_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--data", "-d", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _parse_data(items: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ScaffoldError(f"--data takes KEY=VALUE, got {item!r}")
        data[name.strip()] = value
    return data
