"""Writes the generated parts of docs/api.md and docs/queue.md from the code, so they cannot drift.

Each doc is hand-written prose around blocks marked `<!-- generated: NAME -->` ...
`<!-- end generated -->`. This module rewrites what is inside them: the endpoints, schemas and
security from the OpenAPI document, the error codes from the error classes, the task life from
`TRANSITIONS` and the queue's settings from `HubSettings`. Run it from the checkout's root:

    python -m scaffold.hub.faces.apidoc           # rewrite the blocks
    python -m scaffold.hub.faces.apidoc --check   # exit 1 with a diff when a doc is out of date
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import HubError
from scaffold.hub.core.limits import MAX_ID
from scaffold.hub.core.schemas import COMPONENTS
from scaffold.hub.core.settings import _FIELDS, HubSettings
from scaffold.hub.faces.rest.http import openapi
from scaffold.hub.faces.rest.routes import ENDPOINTS
from scaffold.hub.services.auth import ROLE_RANK, Authenticator
from scaffold.hub.services.queue import TRANSITIONS

BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)
Schema = dict[str, Any]

# What each [queue] setting of hub.toml means; a setting missing here stops the generator.
QUEUE_SETTINGS = {
    "lease_seconds": "how long a claim or a heartbeat holds a task before the reaper may take it back; "
    "at least two `heartbeat_seconds`",
    "heartbeat_seconds": "how often the PostToolUse hook renews a working session's leases (the hooks "
    "read it from `GET /v1/session`)",
    "max_attempts": "attempts (failures and expired leases) a task gets unless it sets its own",
    "idle_timeout_minutes": "how long an idle worker's Stop hook waits before it lets the worker "
    "stop (the hub itself does not act on it)",
    "worker_lost_seconds": "a worker not heard from (no heartbeat, no waiting claim) for this long shows "
    "as `lost`; at least 30 (two beats of the session's watcher)",
    "max_wait_seconds": "the longest a claim long-polls; a larger `wait` is cut to this",
    "reap_interval_seconds": "how often the reaper looks for expired leases",
    "gate": "a shell command run in the task's tree at main plus the task before main moves; if it "
    "fails, main stays and the task goes back (409 `gate_failed`); empty: no gate",
    "gate_timeout_seconds": "how long the gate may run; at most `[exec] timeout_seconds`",
}


# -- JSON Schemas as text ------------------------------------------------------------------------


def type_of(schema: Schema, inline: bool = True) -> str:
    """A schema as a short type: `[Task](#schema-task)`, `array of string`, `{a: integer}`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#schema-{name.lower()})"
    values = [schema["const"]] if "const" in schema else schema.get("enum", [])
    if values:
        shown = [f"`{v}`" if isinstance(v, str) else f"`{json.dumps(v)}`" for v in values]
        return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(type_of(alternative, inline) for alternative in schema[key])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = type_of(schema.get("items", {}), inline)
        return f"array of ({items})" if " or " in items else f"array of {items}"
    if kind == "object" and "properties" in schema and inline:
        return "{" + ", ".join(f"{k}: {type_of(v)}" for k, v in schema["properties"].items()) + "}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    return str(kind)


def limits(schema: Schema) -> str:
    """A schema's constraints in words: `1-500 characters; ...`, `at most 64 items; each ...`."""
    parts = []
    for low, high, unit in (
        ("minLength", "maxLength", " characters"),
        ("minimum", "maximum", ""),
        ("minItems", "maxItems", " items"),
    ):
        lo, hi = schema.get(low), schema.get(high)
        hi = None if hi == MAX_ID else hi  # an id: any positive integer
        if lo is not None and hi is not None:
            parts.append(f"{lo:,}-{hi:,}{unit}" if unit else f"{lo:,} to {hi:,}")
        elif hi is not None:
            parts.append(f"at most {hi:,}{unit}")
        elif lo is not None:
            parts.append(f"at least {lo:,}{unit}")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    alternatives = [limits(alt) for alt in schema.get("anyOf") or schema.get("oneOf") or []]
    if any(alternatives):
        parts.append(" or ".join(alt or "any" for alt in alternatives))
    if isinstance(schema.get("items"), dict) and (each := limits(schema["items"])):
        parts.append(f"each {each}")
    return "; ".join(parts)


def field_rows(schema: Schema, prefix: str = "") -> Iterator[list[str]]:
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        yield [
            f"`{prefix}{name}`",
            type_of(prop, inline=False),
            "yes" if name in required else "",
            limits(prop),
            prose(prop.get("description", "")),
        ]
        if "properties" in prop:
            yield from field_rows(prop, f"{prefix}{name}.")
        if "properties" in prop.get("items", {}):
            yield from field_rows(prop["items"], f"{prefix}{name}[].")


FIELD = ["field", "type", "required", "limits", "meaning"]


def prose(text: str) -> str:
    """Text from the code as Markdown: `role:<name>` outside backticks would read as an HTML tag."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a column empty in every row is left out (e.g. `meaning` before any)."""
    keep = [i for i in range(len(header)) if any(row[i] for row in rows)]
    cells = [[header[i] for i in keep], ["---"] * len(keep), *([row[i] for i in keep] for row in rows)]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)


# -- docs/api.md ---------------------------------------------------------------------------------


def operations(doc: Schema) -> Iterator[tuple[str, str, Schema]]:
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def role(method: str, path: str) -> str:
    """The role an operation needs: the OpenAPI document says only whether it needs a key."""
    endpoint = {(e.method.lower(), e.path): e for e in ENDPOINTS}[(method, path)]
    if endpoint.role is None:
        return "none (open)"
    if endpoint.role_setting is not None:
        section, key = next(place for place, (name, _) in _FIELDS.items() if name == endpoint.role_setting)
        return f"`{endpoint.role}`, or the one hub.toml's `[{section}] {key}` names"
    return f"`{endpoint.role}`"


def common_errors(doc: Schema) -> set[tuple[str, str]]:
    """(status, description) of the errors every operation that needs a key can answer."""
    answers = [
        {(s, r["description"]) for s, r in op["responses"].items() if int(s) >= 400}
        for _, _, op in operations(doc)
        if "security" in op
    ]
    return answers[0].intersection(*answers[1:])


def api_auth(doc: Schema) -> str:
    schemes = doc["components"]["securitySchemes"].values()
    headers = [
        f"`{s['name']}: KEY`" if s["type"] == "apiKey" else "`Authorization: Bearer KEY`" for s in schemes
    ]
    unguarded = ", ".join(f"`{m.upper()} {p}`" for m, p, op in operations(doc) if "security" not in op)
    rate = inspect.signature(Authenticator).parameters
    return "\n".join(
        [
            f"- The key goes in either header: {' or '.join(headers)}.",
            f"- Roles, each allowed all that the one before it is: {', '.join(f'`{r}`' for r in ROLE_RANK)}.",
            f"- Open to anyone, without a key: {unguarded}.",
            f"- After {rate['max_failures'].default} failed authentications from one address within "
            f"{rate['window_seconds'].default:g} s, every request from it that needs a key gets 429 "
            "with a `Retry-After` header, until the oldest failure leaves the window.",
        ]
    )


def api_overview(doc: Schema) -> str:
    rows = [
        [f"`{m.upper()}`", f"[`{p}`](#{op['operationId']})", role(m, p), prose(op["summary"])]
        for m, p, op in operations(doc)
    ]
    return table(["method", "path", "role", "summary"], rows)


def api_endpoints(doc: Schema) -> str:
    common, out = common_errors(doc), []
    for method, path, op in operations(doc):
        out += [
            f'<a id="{op["operationId"]}"></a>',
            f"### `{method.upper()} {path}`",
            "",
            f"{prose(op['summary'])}. Role: {role(method, path)}.",
            "",
        ]
        params = [
            [
                f"`{p['name']}`",
                p["in"],
                type_of(p["schema"]),
                limits(p["schema"]),
                prose(p.get("description", "")) + (" (repeatable)" if p.get("explode") else ""),
            ]
            for p in op.get("parameters", [])
        ]
        if params:
            out += [table(["parameter", "in", "type", "limits", "meaning"], params), ""]
        if "application/octet-stream" in op.get("requestBody", {}).get("content", {}):
            out += ["Request body: the raw bytes (`application/octet-stream`).", ""]
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        forms = [] if body is None else body.get("oneOf", [body])
        for number, form in enumerate(forms):
            named = ", ".join(f"`{name}`" for name in form.get("required", []))
            lead = f"{'Or' if number else 'Either'} a body with {named}" if len(forms) > 1 else "Request body"
            out += [f"{lead}:", "", table(FIELD, list(field_rows(form))), ""]
        answers, errors = [], []
        for status, response in sorted(op["responses"].items()):
            kind, content = next(iter((response.get("content") or {"": {}}).items()))
            shape = (
                type_of(content["schema"]) if kind == "application/json" else f"`{kind}`" if kind else "none"
            )
            if int(status) < 400:
                answers.append([f"`{status}`", prose(response["description"]), shape])
            elif (status, response["description"]) not in common:
                errors.append(f"`{status}` {prose(response['description'])}")
        errors.append("the [common ones](#errors)" if "security" in op else "only malformed requests")
        out += [table(["status", "meaning", "body"], answers), "", f"Errors: {'; '.join(errors)}.", ""]
    return "\n".join(out).rstrip()


def api_schemas(doc: Schema) -> str:
    out = []
    for name, schema in doc["components"]["schemas"].items():
        rows = list(field_rows(schema))
        out += [
            f'<a id="schema-{name.lower()}"></a>',
            f"### {name}",
            "",
            table(["field", "type", "always there", "limits", "meaning"], rows),
            "",
        ]
    return "\n".join(out).rstrip()


def api_errors(doc: Schema) -> str:
    """Each status and code; the meaning is the class's docstring, else the OpenAPI description."""
    common = dict(common_errors(doc))
    classes: list[type[HubError]] = [HubError]
    rows = {}
    for cls in classes:  # grows as it goes: every subclass, at any depth
        classes.extend(cls.__subclasses__())
        meaning = prose(" ".join((cls.__doc__ or "").split("\n\n")[0].split()))
        rows[(cls.status, cls.code)] = [
            f"`{cls.status}`",
            f"`{cls.code}`",
            meaning or common.get(str(cls.status), "see below"),
        ]
    return table(["status", "code", "meaning"], [rows[k] for k in sorted(rows)])


# -- docs/queue.md -------------------------------------------------------------------------------


def queue_diagram(doc: Schema) -> str:
    edges = [(a.strip(), b) for start, b, _ in TRANSITIONS for a in start.split(",")]
    ends = sorted({b for _, b in edges} - {a for a, _ in edges}, key=[b for _, b in edges].index)
    lines = [f"    {a.replace('(new)', '[*]')} --> {b}" for a, b in edges if a != b]
    return "\n".join(["```mermaid", "stateDiagram-v2", *lines, *(f"    {e} --> [*]" for e in ends), "```"])


def queue_transitions(doc: Schema) -> str:
    def states(names: str) -> str:
        return ", ".join(f"`{s.strip()}`" if s != "(new)" else s for s in names.split(","))

    return table(["from", "to", "when"], [[states(a), states(b), why] for a, b, why in TRANSITIONS])


def queue_settings(doc: Schema) -> str:
    defaults = {f.name: f.default for f in fields(HubSettings)}
    rows = [
        [f"`{key}`", f"{defaults[name]:g}" if defaults[name] != "" else '`""`', QUEUE_SETTINGS[key]]
        for (section, key), (name, _) in _FIELDS.items()
        if section == "queue"
    ]
    return table(["`[queue]` setting", "default", "meaning"], rows)


# -- docs/security.md ----------------------------------------------------------------------------

# What each [exec] setting of hub.toml means; a setting missing here stops the generator.
EXEC_SETTINGS = {
    "enabled": "`false` refuses every command with 403 `disabled`",
    "timeout_seconds": "the longest a command may run (and the default): then its processes get "
    "SIGTERM, and SIGKILL 2 s later",
    "max_output_bytes": "of stdout and of stderr kept each; the rest is read and dropped",
    "sandbox": '`"bubblewrap"`, or `"none"` to accept running commands as the hub\'s user',
    "network": "`true` lets commands use the network (the host's); else they have none, not even loopback",
    "max_processes": "processes and threads of one command (a pids cgroup where one can be made; "
    "else RLIMIT_NPROC, shared by the hub user's commands)",
    "max_memory_mb": "RLIMIT_DATA of each process: its private writable memory",
    "cpu_seconds": "RLIMIT_CPU of each process: SIGXCPU, then SIGKILL",
    "max_concurrent": "commands running at once; one more gets 429 with `Retry-After`",
}


def security_roles(doc: Schema) -> str:
    rows = []
    for rank in ROLE_RANK:
        routes = [f"`{e.method} {e.path}`" for e in ENDPOINTS if e.role == rank]
        rows.append([f"`{rank}`", ", ".join(routes)])
    return table(["role", "what it adds to the role before it"], rows)


def exec_settings(doc: Schema) -> str:
    shown = {
        f.name: f"{f.default:g}" if isinstance(f.default, float) else json.dumps(f.default)
        for f in fields(HubSettings)
        if f.name.startswith("exec_")
    }
    rows = [
        [f"`{key}`", shown[name], EXEC_SETTINGS[key]]
        for (section, key), (name, _) in _FIELDS.items()
        if section == "exec"
    ]
    return table(["`[exec]` setting", "default", "meaning"], rows)


BLOCKS: dict[str, dict[str, Callable[[Schema], str]]] = {
    "api.md": {
        "auth": api_auth,
        "overview": api_overview,
        "endpoints": api_endpoints,
        "errors": api_errors,
        "schemas": api_schemas,
    },
    "queue.md": {"diagram": queue_diagram, "transitions": queue_transitions, "settings": queue_settings},
    "security.md": {"auth": api_auth, "roles": security_roles, "exec-settings": exec_settings},
}


def generate(name: str, text: str, doc: Schema) -> str:
    """`text`, a doc's current content, with each of its generated blocks rewritten."""
    blocks, found = BLOCKS[name], [match[1] for match in BLOCK.findall(text)]
    if sorted(found) != sorted(blocks):
        raise SystemExit(f"docs/{name} must hold the generated blocks {sorted(blocks)}; it has {found}")
    return BLOCK.sub(lambda m: m[1] + blocks[m[2]](doc) + "\n" + m[4], text)


def outdated(docs: Path) -> dict[Path, tuple[str, str]]:
    """Each doc under `docs` whose text differs from the generated one: (current, generated)."""
    doc, changed = openapi(ENDPOINTS, __version__, COMPONENTS), {}
    for name in BLOCKS:
        current = (docs / name).read_text(encoding="utf-8")
        if (wanted := generate(name, current, doc)) != current:
            changed[docs / name] = (current, wanted)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m scaffold.hub.faces.apidoc", description="Regenerate the docs."
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if outdated")
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="the docs directory (default: docs)")
    args = parser.parse_args(argv)
    changed = outdated(args.docs)
    for path, (current, wanted) in changed.items():
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), wanted.splitlines(True), str(path), f"{path} (generated)"
                )
            )
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"rewrote {path}")
    if args.check and changed:
        print("the docs are out of date: run `python -m scaffold.hub.faces.apidoc`", file=sys.stderr)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
