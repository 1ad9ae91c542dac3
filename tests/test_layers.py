"""The hub's layers, read from the code's own imports: faces -> services -> store -> core.

A module may import its own layer and the ones below it, never one above; the process modules
(`scaffold.hub.app`, `server`, `backup`) sit on top and may import anything of the hub. The hub
never imports the project side (`scaffold.cli`, `render`, `deploy`, ...), only the one error
tree (`scaffold.errors`) and the version. And no two modules of the package import each other,
directly or round a longer circle. Every import counts: the ones inside functions and under
`TYPE_CHECKING` too, since a reader follows those as well. Each rule has a control: a small
package written here that breaks it, which the checker must report.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Highest first. A module belongs to the first layer whose prefix names it or its package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("process", ("scaffold.hub.app", "scaffold.hub.server", "scaffold.hub.backup")),
    ("faces", ("scaffold.hub.faces",)),
    ("services", ("scaffold.hub.services",)),
    ("store", ("scaffold.hub.store",)),
    ("core", ("scaffold.hub.core",)),
)
SHARED = ("scaffold", "scaffold.errors")  # below every layer: the version and the error tree


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line; `from a import b` yields a.b
    when a.b is a module of the tree, else a."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found = _module_path(candidate, root) is not None
                yield (candidate if found else base), node.lineno


def _module_path(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same tree: line}."""
    edges: dict[str, dict[str, int]] = {}
    for path in sorted(root.joinpath(*package.split(".")).rglob("*.py")):
        module = module_name(path, root)
        edges[module] = {}
        for target, line in imports(path, root):
            if target.split(".")[0] == package.split(".")[0] and target != module:
                edges[module].setdefault(target, line)
    return edges


def layer_violations(root: Path) -> list[str]:
    problems = []
    for module, targets in graph(root, "scaffold").items():
        if not module.startswith("scaffold.hub"):
            continue
        mine = layer_of(module)
        for target, line in targets.items():
            if target in SHARED:
                continue
            theirs = layer_of(target)
            where = f"{module} (line {line}) imports {target}"
            if not target.startswith("scaffold.hub"):
                problems.append(f"{where}: the hub imports only scaffold.errors from outside it")
            elif mine is None or theirs is None:
                unplaced = module if mine is None else target
                problems.append(f"{where}: {unplaced} is in no layer; put it in one of the folders")
            elif theirs < mine:
                problems.append(f"{where}: {LAYERS[mine][0]} may not import {LAYERS[theirs][0]}")
    return problems


def circles(root: Path, package: str = "scaffold") -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    edges = graph(root, package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # the package is a few dozen modules: recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in edges:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_every_hub_module_is_in_a_layer_and_imports_only_down() -> None:
    assert layer_violations(SRC) == []


def test_no_module_of_the_package_is_on_a_circle() -> None:
    assert circles(SRC) == []


def test_the_layers_are_folders_that_exist() -> None:
    hub = SRC / "scaffold" / "hub"
    for folder in ("faces", "services", "store", "core"):
        assert (hub / folder / "__init__.py").is_file(), folder
    loose = sorted(
        p.stem
        for p in hub.glob("*.py")
        if p.stem != "__init__" and layer_of(f"scaffold.hub.{p.stem}") is None
    )
    assert loose == [], f"modules of the hub outside every layer: {loose}"


TYPE_CHECKING_ONLY = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for layer in ("faces", "services", "store", "core"):
        init = tmp_path / "scaffold" / "hub" / layer / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    for package in ("scaffold", "scaffold/hub"):
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from scaffold.hub.services.queue import Queue\n", "store may not import services"),
        (
            TYPE_CHECKING_ONLY + "    from scaffold.hub.faces import rest\n",
            "store may not import faces",
        ),
        ("def late():\n    import scaffold.cli\n", "the hub imports only scaffold.errors"),
        ("from scaffold.hub import loose\n", "scaffold.hub.loose is in no layer"),
    ],
)
def test_control_an_upward_import_is_reported(tmp_path: Path, source: str, expected: str) -> None:
    root = _tree(
        tmp_path,
        {
            "scaffold/hub/store/sqlite.py": source,
            "scaffold/hub/services/queue.py": "from scaffold.hub.store import sqlite\nQueue = 1\n",
            "scaffold/hub/faces/rest.py": "",
            "scaffold/hub/loose.py": "",
            "scaffold/cli.py": "",
            "scaffold/errors.py": "",
        },
    )
    problems = layer_violations(root)
    assert any(expected in problem for problem in problems), problems
    assert all("scaffold.hub.services.queue" not in p.split(" imports")[0] for p in problems)


def test_control_a_circle_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "scaffold/hub/core/a.py": "from scaffold.hub.core import b\n",
            "scaffold/hub/core/b.py": TYPE_CHECKING_ONLY + "    from scaffold.hub.core.c import C\n",
            "scaffold/hub/core/c.py": "import scaffold.hub.core.a\nC = 1\n",
            "scaffold/hub/core/d.py": "from scaffold.hub.core import a\n",
        },
    )
    assert circles(root) == [["scaffold.hub.core.a", "scaffold.hub.core.b", "scaffold.hub.core.c"]]
