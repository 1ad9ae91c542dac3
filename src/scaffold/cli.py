"""The `scaffold` command: parses arguments and maps ScaffoldErrors to exit codes.

Everything it does is a call into the library (`scaffold.wizard`, `scaffold.render`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import ScaffoldError

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    _add_data_option(
        new, "answer a question (repeatable), e.g. --data 'worker_roles=[backend, qa]'"
    )
    save = new.add_mutually_exclusive_group()
    save.add_argument(
        "--save-key", dest="save_key", action="store_true", default=None,
        help="write the key to the git-ignored .claude/settings.local.json",
    )  # fmt: skip
    save.add_argument(
        "--no-save-key", dest="save_key", action="store_false", help="only show the key"
    )
    new.add_argument(
        "--no-key", action="store_true",
        help="generate no key; the hub creates one on its first start and prints it once",
    )  # fmt: skip
    new.add_argument(
        "--template", metavar="SRC", help="template path or git URL (default: the bundled one)"
    )
    new.add_argument("--vcs-ref", metavar="REF", help="template git tag or commit to render")
    new.add_argument("--quiet", "-q", action="store_true", help="do not list the rendered files")
    new.set_defaults(run=_run_new)

    update = commands.add_parser(
        "update",
        help="upgrade a rendered project to a newer template",
        description="Upgrade a rendered project with copier's 3-way merge: your edits stay, the "
        "template's changes arrive. Recorded answers, the key among them, are not asked again.",
        epilog="example: scaffold update my-team --vcs-ref 0.2.0",
    )
    update.add_argument(
        "dir", nargs="?", type=Path, default=Path(), help="project directory (default: .)"
    )
    update.add_argument(
        "--vcs-ref", metavar="REF", help="template tag or commit to update to (default: newest)"
    )
    _add_data_option(update, "change a recorded answer (repeatable), e.g. --data worker_count=5")
    update.add_argument(
        "--defaults", action="store_true", help="answer new questions with their defaults"
    )
    update.add_argument("--quiet", "-q", action="store_true", help="do not list the changed files")
    update.set_defaults(run=_run_update)
    return parser


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
    project = new_project(
        args.dest,
        resolve_template(args.template, args.vcs_ref),
        data=_parse_data(args.data),
        interactive=interactive,
        save_key=args.save_key,
        make_key=not args.no_key,
        quiet=args.quiet,
    )
    print(f"Created {project.dest} ({project.answers['project_name']}).")
    if project.key:
        print(f"API key (shown once; only its SHA-256 is in the project): {project.key}")
        if project.key_file:
            print(f"Saved it to {project.key_file} (git-ignored) for local Claude Code sessions.")
        else:
            print("Keep it safe and set it as VPS_API_KEY where your Claude Code sessions run.")
    elif not project.answers.get("api_key_hash"):
        print("No key yet: the hub creates one on its first start and prints it once.")
    print(f"Next: read {project.dest / 'docs' / 'setup-guide.md'}")
    return 0


def _run_update(args: argparse.Namespace) -> int:
    from scaffold.render import update_project

    interactive = not args.defaults and sys.stdin.isatty()
    commit = update_project(
        args.dir,
        template_ref=args.vcs_ref,
        quiet=args.quiet,
        interactive=interactive,
        data=_parse_data(args.data),
    )
    print(
        f"Updated {args.dir.resolve()} to template {commit}. Review with `git diff`, then commit."
    )
    return 0


def _add_data_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--data", "-d", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def _parse_data(items: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ScaffoldError(f"--data takes KEY=VALUE, got {item!r}")
        data[name.strip()] = value
    return data
