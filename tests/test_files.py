"""Workspace files and path reservations over HTTP: every operation, the ETag rules, limits,
hostile paths against every file route, and reservations (423, shared, expiry, release).

Every response is checked against the OpenAPI document, as in tests/test_api.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from scaffold.errors import StaleFile
from scaffold.hub.services.container import Services
from scaffold.hub.services.files import Files
from tests.conftest import FakeClock, Keys, MakeHub
from tests.test_api import assert_error, bearer, conforming

T0 = 1_800_000_000.0
MAX_BODY = 8 * 1024 * 1024
MAX_FILE = 6 * 1024 * 1024
SENTINEL = b"SENTINEL outside: must never change\n"


@dataclass
class Setup:
    client: TestClient
    hub: Services
    keys: Keys
    root: Path
    outside: Path
    clock: FakeClock

    def agent(self, **headers: str) -> dict[str, str]:
        return {**bearer(self.keys.agent), **headers}

    def put(self, path: str, content: bytes, **headers: str) -> httpx2.Response:
        return self.client.put(
            "/v1/files/content", params={"path": path}, content=content, headers=self.agent(**headers)
        )

    def create(self, path: str, content: bytes) -> str:
        response = self.put(path, content, **{"If-None-Match": "*"})
        assert response.status_code == 201, response.text
        etag: str = response.json()["etag"]
        return etag

    def read(self, path: str) -> httpx2.Response:
        return self.client.get("/v1/files/content", params={"path": path}, headers=bearer(self.keys.viewer))

    def post(self, route: str, body: dict[str, Any], key: str | None = None) -> httpx2.Response:
        return self.client.post(f"/v1/files/{route}", json=body, headers=bearer(key or self.keys.agent))

    def register(self, session: str, role: str = "backend") -> int:
        response = self.client.post(
            "/v1/workers", json={"session_id": session, "role": role}, headers=self.agent()
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def reserve(self, worker: int, *globs: str, **extra: Any) -> httpx2.Response:
        body = {"worker_id": worker, "globs": list(globs), **extra}
        return self.client.post("/v1/reservations", json=body, headers=self.agent())


@pytest.fixture
def setup(tmp_path: Path, make_hub: MakeHub) -> Iterator[Setup]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_bytes(SENTINEL)
    clock, limits = FakeClock(T0), {"max_file_bytes": MAX_FILE, "grep_max_bytes": MAX_FILE * 2}
    made = make_hub(clock=clock, workspace=tmp_path / "ws", max_body_bytes=MAX_BODY, **limits)
    with TestClient(made.app) as client:
        yield Setup(conforming(client), made.services, made.keys, made.workspace, outside, clock)


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@contextlib.contextmanager
def nothing_changes(setup: Setup) -> Iterator[None]:
    """No event, the same workspace tree (.git included), the same files beside it."""
    before = (
        setup.hub.store.last_event_id(),
        snapshot(setup.root),
        snapshot(setup.root.parent, deep=False),
        snapshot(setup.outside),
    )
    yield
    after = (
        setup.hub.store.last_event_id(),
        snapshot(setup.root),
        snapshot(setup.root.parent, deep=False),
        snapshot(setup.outside),
    )
    assert after[0] == before[0], "a refused request recorded a change"
    assert after[1] == before[1], "the workspace changed"
    assert after[2] == before[2], "something appeared or vanished beside the workspace"
    assert after[3] == before[3], "the directory outside the workspace changed"
    assert (setup.outside / "sentinel.txt").read_bytes() == SENTINEL


def snapshot(top: Path, deep: bool = True) -> dict[str, tuple[Any, ...]]:
    """Every entry below `top`: kind, mode, and the bytes' hash or the link's target. Never
    opens anything but regular files (a FIFO would block)."""
    found: dict[str, tuple[Any, ...]] = {}
    for directory, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            path = Path(directory, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                detail: Any = str(path.readlink())
            elif stat.S_ISREG(info.st_mode):
                detail = sha(path.read_bytes()) if deep else info.st_size
            else:
                detail = None
            found[str(path.relative_to(top))] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                detail,
            )
        if not deep:
            break
    return found


# -- reading and writing --------------------------------------------------------------------


def test_write_then_read_with_the_etag(setup: Setup) -> None:
    content = b"print('hello')\n"
    created = setup.put("src/app.py", content)
    assert created.status_code == 201
    assert created.json() == {"path": "src/app.py", "size": len(content), "etag": sha(content)}
    assert created.headers["etag"] == f'"{sha(content)}"'
    read = setup.read("src/app.py")
    assert read.status_code == 200
    assert read.content == content
    assert read.headers["content-type"] == "application/octet-stream"
    assert read.headers["etag"] == f'"{sha(content)}"'
    assert (setup.root / "src" / "app.py").read_bytes() == content
    # The same file by another spelling of its path.
    assert setup.read("./src//app.py").content == content


def test_an_update_needs_the_etag_and_a_stale_one_is_412(setup: Setup) -> None:
    first = setup.create("notes.md", b"one\n")
    target = setup.root / "notes.md"
    with nothing_changes(setup):
        assert_error(setup.put("notes.md", b"blind\n"), 412, "stale_file", "If-Match")
        assert_error(setup.put("notes.md", b"again\n", **{"If-None-Match": "*"}), 412, "stale_file", "exists")
    second = sha(b"two\n")
    updated = setup.put("notes.md", b"two\n", **{"If-Match": f'"{first}"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["etag"] == sha(b"two\n")
    with nothing_changes(setup):  # the first ETag is stale now
        response = setup.put("notes.md", b"lost update\n", **{"If-Match": f'"{first}"'})
        assert_error(response, 412, "stale_file", "changed since it was read")
        weak = setup.put("notes.md", b"weak\n", **{"If-Match": f'W/"{second}"'})
        assert_error(weak, 412, "stale_file")
        missing = setup.put("absent.md", b"x", **{"If-Match": f'"{first}"'})
        assert_error(missing, 412, "stale_file", "does not exist")
        assert_error(setup.put("absent.md", b"x", **{"If-Match": "*"}), 412, "stale_file")
    assert target.read_bytes() == b"two\n"
    # A list of ETags, the bare form, and If-Match: * all work.
    listed = setup.put("notes.md", b"three\n", **{"If-Match": f'"nope", "{second}"'})
    assert listed.status_code == 200
    bare = setup.put("notes.md", b"four\n", **{"If-Match": sha(b"three\n")})
    assert bare.status_code == 200
    assert setup.put("notes.md", b"five\n", **{"If-Match": "*"}).status_code == 200
    assert target.read_bytes() == b"five\n"


def test_concurrent_writers_with_the_same_etag_one_wins(tmp_path: Path) -> None:
    workspace = Files(tmp_path / "ws", max_file_bytes=1024, grep_max_bytes=1024)
    etag = workspace.write("f.txt", b"base").etag
    outcomes: list[str] = []

    def write(number: int) -> None:
        try:
            workspace.write("f.txt", f"writer {number}".encode(), if_match=f'"{etag}"')
            outcomes.append("won")
        except StaleFile:
            outcomes.append("stale")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["stale"] * 15 + ["won"]


def test_binary_files_round_trip_byte_for_byte(setup: Setup) -> None:
    every_byte = bytes(range(256)) * 4
    assert setup.create("data/all.bin", every_byte) == sha(every_byte)
    assert setup.read("data/all.bin").content == every_byte
    big = os.urandom(5 * 1024 * 1024 + 3)
    response = setup.put("data/big.bin", big)
    assert response.status_code == 201
    assert response.json()["size"] == len(big)
    read = setup.read("data/big.bin")
    assert read.content == big
    assert read.headers["etag"] == f'"{sha(big)}"'
    assert (setup.root / "data" / "big.bin").read_bytes() == big
    assert setup.create("data/empty", b"") == sha(b"")
    assert setup.read("data/empty").content == b""


def test_writes_leave_no_temporary_file_and_keep_the_mode(setup: Setup) -> None:
    etag = setup.create("run.sh", b"#!/bin/sh\necho hi\n")
    (setup.root / "run.sh").chmod(0o750)
    assert setup.put("run.sh", b"#!/bin/sh\necho bye\n", **{"If-Match": etag}).status_code == 200
    response = setup.post("edit", {"path": "run.sh", "old": "bye", "new": "ciao"})
    assert response.status_code == 200
    assert stat.S_IMODE((setup.root / "run.sh").stat().st_mode) == 0o750
    assert [p.name for p in setup.root.iterdir() if p.name != ".git"] == ["run.sh"]


def test_files_over_the_limits_are_413(setup: Setup) -> None:
    with nothing_changes(setup):
        too_big = setup.put("big.bin", b"x" * (MAX_FILE + 1))
        assert_error(too_big, 413, "payload_too_large", "max_file_bytes")
        over_body = setup.put("big.bin", b"x" * (MAX_BODY + 1))
        assert_error(over_body, 413, "payload_too_large")
    (setup.root / "huge.bin").write_bytes(b"y" * (MAX_FILE + 1))
    assert_error(setup.read("huge.bin"), 413, "payload_too_large", str(MAX_FILE))
    (setup.root / "grow.txt").write_bytes(b"a" * (MAX_FILE - 10) + b"MARK")
    with nothing_changes(setup):
        response = setup.post("edit", {"path": "grow.txt", "old": "MARK", "new": "b" * 50})
        assert_error(response, 413, "payload_too_large")


def test_reading_what_is_not_a_file(setup: Setup) -> None:
    (setup.root / "dir").mkdir()
    assert_error(setup.read("missing.txt"), 404, "not_found", "does not exist")
    assert_error(setup.read("missing/deeper.txt"), 404, "not_found")
    assert_error(setup.read("dir"), 422, "invalid_request", "directory")
    response = setup.client.get("/v1/files/content", headers=bearer(setup.keys.viewer))
    assert_error(response, 422, "invalid_request", "'path' is required")
    setup.create("file.txt", b"x")
    assert_error(setup.read("file.txt/below"), 404, "not_found")
    with nothing_changes(setup):
        assert_error(setup.put("file.txt/below", b"x"), 409, "conflict", "in the way")
        assert_error(setup.put("dir", b"x", **{"If-Match": "*"}), 422, "invalid_request", "directory")


# -- list -------------------------------------------------------------------------------------


def test_list_a_directory_a_glob_and_a_file(setup: Setup) -> None:
    for path in ("src/app.py", "src/util.py", "src/web/page.html", "src/web/deep/x.py", "README.md"):
        setup.create(path, path.encode())
    (setup.root / "link").symlink_to("src")
    viewer = bearer(setup.keys.viewer)

    def listing(**params: Any) -> dict[str, Any]:
        response = setup.client.get("/v1/files", params=params, headers=viewer)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    top = listing()
    assert [(e["path"], e["type"]) for e in top["entries"]] == [
        ("README.md", "file"),
        ("link", "symlink"),
        ("src", "dir"),
    ]  # .git is never listed
    assert top["entries"][0]["size"] == len(b"README.md") and top["truncated"] is False
    assert [e["path"] for e in listing(path="src")["entries"]] == ["src/app.py", "src/util.py", "src/web"]
    assert [e["path"] for e in listing(path="src", glob="**/*.py")["entries"]] == [
        "src/app.py",
        "src/util.py",
        "src/web/deep/x.py",
    ]
    assert [e["path"] for e in listing(glob="*/*.py")["entries"]] == ["src/app.py", "src/util.py"]
    everything = listing(glob="**")["entries"]
    assert "link/app.py" not in [e["path"] for e in everything], "a walk does not follow links"
    assert not any(e["path"].startswith(".git") for e in everything)
    assert listing(glob="**", limit=2) == {"entries": everything[:2], "truncated": True}
    assert listing(path="src/app.py")["entries"] == [{"path": "src/app.py", "type": "file", "size": 10}]
    # Through a link that stays inside: followed, and named as asked.
    assert [e["path"] for e in listing(path="link")["entries"]] == ["link/app.py", "link/util.py", "link/web"]
    assert_error(setup.client.get("/v1/files", params={"path": "nowhere"}, headers=viewer), 404)
    response = setup.client.get("/v1/files", params={"glob": "../*"}, headers=viewer)
    assert_error(response, 403, "path_refused", "..")


# -- edit ------------------------------------------------------------------------------------


def test_edit_replaces_exactly_one_occurrence(setup: Setup) -> None:
    original = "def f():\r\n    return 1\r\n\r\ndef g():\r\n    return 1\r\n# ünïcode ✓\r\n"
    etag = setup.create("m.py", original.encode())
    target = setup.root / "m.py"
    with nothing_changes(setup):
        cases = [
            ({"old": "return 1", "new": "return 2"}, 422, "occurs 2 times"),
            ({"old": "return 3", "new": "return 2"}, 422, "not found"),
            ({"old": "", "new": "x"}, 422, "body.old"),
            ({"old": "def f", "new": "def f"}, 422, "the same"),
            ({"old": "def f", "new": "def h", "etag": sha(b"other")}, 412, "changed since"),
        ]
        for change, status, says in cases:
            assert_error(setup.post("edit", {"path": "m.py", **change}), status, None, says)
    change = {"old": "def f():\r\n    return 1", "new": "def f():\r\n    return 7", "etag": etag}
    response = setup.post("edit", {"path": "m.py", **change})
    assert response.status_code == 200, response.text
    expected = original.replace("return 1", "return 7", 1).encode()
    assert response.json() == {
        "path": "m.py",
        "size": len(expected),
        "etag": sha(expected),
        "replacements": 1,
    }
    assert target.read_bytes() == expected, "everything else is kept byte for byte (CRLF, UTF-8)"
    every = setup.post("edit", {"path": "m.py", "old": "\r\n", "new": "\n", "replace_all": True})
    assert every.json()["replacements"] == 6
    assert target.read_bytes() == expected.replace(b"\r\n", b"\n")


def test_edit_refuses_overlapping_matches_binary_and_missing_files(setup: Setup) -> None:
    setup.create("aaa.txt", b"aaa")
    (setup.root / "blob.bin").write_bytes(b"\xff\xfe\x00abc")
    with nothing_changes(setup):
        assert_error(setup.post("edit", {"path": "aaa.txt", "old": "aa", "new": "b"}), 422, None, "times")
        assert_error(setup.post("edit", {"path": "blob.bin", "old": "abc", "new": "x"}), 422, None, "UTF-8")
        assert_error(setup.post("edit", {"path": "none.txt", "old": "a", "new": "b"}), 404, "not_found")


# -- delete and move -----------------------------------------------------------------------


def test_delete_files_links_and_empty_directories(setup: Setup) -> None:
    etag = setup.create("a/b.txt", b"b")
    setup.create("keep.txt", b"keep")
    (setup.root / "alias").symlink_to("keep.txt")
    with nothing_changes(setup):
        assert_error(setup.post("delete", {"path": "a/b.txt", "etag": sha(b"other")}), 412, "stale_file")
        assert_error(setup.post("delete", {"path": "a"}), 409, "conflict", "not empty")
        assert_error(setup.post("delete", {"path": "a", "etag": etag}), 422, None, "only a file")
        assert_error(setup.post("delete", {"path": "gone.txt"}), 404, "not_found")
    assert setup.post("delete", {"path": "a/b.txt", "etag": etag}).json() == {
        "path": "a/b.txt",
        "type": "file",
    }
    assert setup.post("delete", {"path": "a"}).json() == {"path": "a", "type": "dir"}
    assert setup.post("delete", {"path": "alias"}).json() == {"path": "alias", "type": "symlink"}
    assert (setup.root / "keep.txt").read_bytes() == b"keep", "deleting a link leaves its target"
    assert sorted(p.name for p in setup.root.iterdir()) == [".git", "keep.txt"]


def test_move_files_and_directories(setup: Setup) -> None:
    setup.create("src/a.py", b"a")
    setup.create("src/b.py", b"b")
    setup.create("other.py", b"other")
    moved = setup.post("move", {"from": "src/a.py", "to": "lib/new/a.py"})
    assert moved.json() == {"from": "src/a.py", "to": "lib/new/a.py", "type": "file"}
    assert (setup.root / "lib/new/a.py").read_bytes() == b"a"
    assert not (setup.root / "src/a.py").exists()
    with nothing_changes(setup):
        assert_error(setup.post("move", {"from": "other.py", "to": "src/b.py"}), 409, "conflict", "overwrite")
        assert_error(setup.post("move", {"from": "src", "to": "src/inner"}), 422, None, "into itself")
        assert_error(
            setup.post("move", {"from": "src", "to": "other.py", "overwrite": True}), 409, "conflict"
        )
        assert_error(setup.post("move", {"from": "nothing", "to": "x"}), 404, "not_found")
        assert_error(setup.post("move", {"from": "other.py", "to": "./other.py"}), 422, None, "same path")
    replaced = setup.post("move", {"from": "other.py", "to": "src/b.py", "overwrite": True})
    assert replaced.status_code == 200
    assert (setup.root / "src/b.py").read_bytes() == b"other"
    assert setup.post("move", {"from": "src", "to": "pkg/src"}).json()["type"] == "dir"
    assert (setup.root / "pkg/src/b.py").read_bytes() == b"other"
    (setup.root / "pkglink").symlink_to("pkg")
    with nothing_changes(setup):
        assert_error(setup.post("move", {"from": "pkglink", "to": "x"}), 403, "path_refused", "symbolic link")


def test_changes_are_events_naming_the_key_and_worker(setup: Setup) -> None:
    worker = setup.register("s-events")
    start = setup.hub.store.last_event_id()
    etag = setup.create("e.txt", b"1")
    setup.put("e.txt", b"2", **{"If-Match": etag})
    response = setup.client.put(
        "/v1/files/content",
        params={"path": "w.txt", "worker_id": worker},
        content=b"w",
        headers=setup.agent(),
    )
    assert response.status_code == 201
    setup.post("edit", {"path": "e.txt", "old": "2", "new": "3"})
    setup.post("move", {"from": "e.txt", "to": "f.txt"})
    setup.post("delete", {"path": "f.txt"})
    events = setup.hub.store.events_after(start, 100)
    assert [e.type for e in events] == [
        "file.written",
        "file.written",
        "file.written",
        "file.edited",
        "file.moved",
        "file.deleted",
    ]
    assert all(e.actor == "agent-key" for e in events)
    assert events[0].data["created"] is True and events[1].data["created"] is False
    assert (events[2].worker_id, events[2].task_id) == (worker, None)  # no task: on main
    assert (events[4].data["path"], events[4].data["to"]) == ("e.txt", "f.txt")


def test_a_viewer_reads_but_may_not_write(setup: Setup) -> None:
    setup.create("r.txt", b"r")
    viewer = bearer(setup.keys.viewer)
    assert setup.read("r.txt").status_code == 200
    assert setup.post("grep", {"pattern": "r"}, setup.keys.viewer).status_code == 200
    with nothing_changes(setup):
        response = setup.client.put(
            "/v1/files/content", params={"path": "r.txt"}, content=b"v", headers=viewer
        )
        assert_error(response, 403, "forbidden", "agent")
        changes = (
            ("edit", {"path": "r.txt", "old": "r", "new": "v"}),
            ("delete", {"path": "r.txt"}),
            ("move", {"from": "r.txt", "to": "v.txt"}),
        )
        for route, body in changes:
            assert_error(setup.post(route, body, setup.keys.viewer), 403, "forbidden")
        response = setup.client.post(
            "/v1/reservations", json={"worker_id": 1, "globs": ["a"]}, headers=viewer
        )
        assert_error(response, 403, "forbidden")


# -- grep ------------------------------------------------------------------------------------


def test_grep_finds_lines_within_its_limits(setup: Setup) -> None:
    setup.create("src/a.py", b"import os\nx = 1  # TODO fix\n\tprint('todo')\n")
    setup.create("src/b.txt", b"nothing here\nTODO: b\n")
    setup.create("docs/c.md", b"# TODO (docs) [x]\n")
    (setup.root / "bin.dat").write_bytes(b"TODO\x00binary")
    (setup.root / "huge.txt").write_bytes(b"TODO " * (MAX_FILE // 5 + 1))

    def grep(**body: Any) -> dict[str, Any]:
        response = setup.post("grep", body, setup.keys.viewer)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    found = grep(pattern="TODO")
    assert [(m["path"], m["line"], m["column"]) for m in found["matches"]] == [
        ("docs/c.md", 1, 3),
        ("src/a.py", 2, 10),
        ("src/b.txt", 2, 1),
    ]
    assert found["matches"][1]["text"] == "x = 1  # TODO fix"
    assert (found["files_searched"], found["files_skipped"], found["truncated"]) == (3, 2, False)
    assert len(grep(pattern="todo", ignore_case=True)["matches"]) == 4
    assert [m["path"] for m in grep(pattern="(docs) [x]", fixed_string=True)["matches"]] == ["docs/c.md"]
    assert [m["path"] for m in grep(pattern="TODO", glob="**/*.py")["matches"]] == ["src/a.py"]
    assert [m["path"] for m in grep(pattern="TODO", path="src")["matches"]] == ["src/a.py", "src/b.txt"]
    assert [m["line"] for m in grep(pattern="[hb]", path="src/b.txt")["matches"]] == [1, 2]
    limited = grep(pattern="TODO", max_matches=2)
    assert len(limited["matches"]) == 2 and limited["truncated"] is True
    exact = grep(pattern="TODO", max_matches=3)
    assert len(exact["matches"]) == 3 and exact["truncated"] is False
    budget = grep(pattern="TODO", max_bytes=30)
    assert budget["truncated"] is True and budget["bytes_searched"] <= 30
    with nothing_changes(setup):
        assert_error(setup.post("grep", {"pattern": "("}), 422, "invalid_request", "regular expression")
        assert_error(setup.post("grep", {"pattern": "x", "path": "none"}), 404, "not_found")


def test_grep_shows_a_window_of_a_long_line(setup: Setup) -> None:
    setup.create("min.js", b"a" * 5000 + b"NEEDLE" + b"b" * 5000)
    (match,) = setup.post("grep", {"pattern": "NEEDLE"}).json()["matches"]
    assert match["column"] == 5001
    assert "NEEDLE" in match["text"] and len(match["text"]) == 500


def test_walks_never_leave_the_workspace(setup: Setup) -> None:
    hostile_tree(setup)
    found = setup.post("grep", {"pattern": "SENTINEL|root:"}, setup.keys.viewer).json()
    assert [m["path"] for m in found["matches"]] == ["inside.txt"], "links are not followed, .git skipped"
    listed = setup.client.get("/v1/files", params={"glob": "**"}, headers=bearer(setup.keys.viewer)).json()
    paths = [e["path"] for e in listed["entries"]]
    assert not any(p.startswith((".git", "outdir/", "etc_link/", "parent_link/")) for p in paths)
    assert {e["path"]: e["type"] for e in listed["entries"]}["fifo"] == "other"


# -- hostile paths ---------------------------------------------------------------------------


def hostile_tree(setup: Setup) -> None:
    """Links and special files inside the workspace that lead out of it, or into .git."""
    root = setup.root
    (root / "inside.txt").write_bytes(b"SENTINEL inside\n")
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_bytes(b"keep\n")
    links = {
        "etc_link": "/etc",
        "passwd_link": "/etc/passwd",
        "parent_link": "..",
        "outdir": str(setup.outside),
        "sentinel_link": str(setup.outside / "sentinel.txt"),
        "devnull": "/dev/null",
        "git_link": ".git",
        "loop": "loop",
        "sub/up": "../..",
        "dangling_out": "/nonexistent/x",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    os.mkfifo(root / "fifo")
    with contextlib.suppress(OSError):  # a socket's path must be short; skip it where it is not
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(root / "sock"))
        server.close()
    assert (root / ".git" / "config").is_file(), "the hub made the workspace a git repository"


# Grouped by kind, several a line: the groups read better unformatted.
HOSTILE = [
    # absolute
    "/etc/passwd", "//etc/passwd", "/", "/tmp", "///etc//passwd",
    # .. in many spellings
    "..", "../", "../outside/sentinel.txt", "a/../../outside/sentinel.txt", "./../outside/sentinel.txt",
    "sub/../../outside/sentinel.txt", "sub/./../../outside", ".//..//outside//sentinel.txt",
    "a//..//..//x", "~/../outside", "sub/keep.txt/../../../outside",
    # backslashes and encodings a naive decoder would turn into ..
    "..\\outside\\sentinel.txt", "sub\\..\\..\\x", "C:\\Windows\\win.ini", "%2e%2e/outside/sentinel.txt",
    "%2E%2E%2Foutside%2Fsentinel.txt", "..%2foutside%2fsentinel.txt", ".%2e/outside", "%5c..%5coutside",
    # NUL and other control characters, empty, dots only
    "inside.txt\x00.png", "\x00", "sub/keep.txt\x00", "a\nb", "inside.txt\r", "", ".", "./", "...",
    "sub/...", "..../x", "a" * 300,
    # .git, directly or by a link
    ".git", ".git/config", ".git/hooks/pre-commit", ".GIT/config", "./.git/HEAD", "sub/.git/config",
    "git_link", "git_link/config",
    # links leading out, special files
    "etc_link", "etc_link/passwd", "passwd_link", "parent_link", "parent_link/outside/sentinel.txt",
    "parent_link/ws/inside.txt", "outdir", "outdir/sentinel.txt", "outdir/new.txt", "sentinel_link",
    "devnull", "sub/up", "sub/up/outside/sentinel.txt", "dangling_out", "loop", "loop/x", "fifo", "sock",
]  # fmt: skip
ROOT_SPELLINGS = {"", ".", "./"}  # list and grep take these as the root, on purpose


def attempts(path: str) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(method, route, query, JSON body) of every file route, with `path` where a path goes."""
    out: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
        ("GET", "/v1/files/content", {"path": path}, None),
        ("PUT", "/v1/files/content", {"path": path}, None),
        ("POST", "/v1/files/edit", None, {"path": path, "old": "SENTINEL", "new": "PWNED"}),
        ("POST", "/v1/files/delete", None, {"path": path}),
        ("POST", "/v1/files/move", None, {"from": path, "to": "stolen.txt"}),
        ("POST", "/v1/files/move", None, {"from": "inside.txt", "to": path}),
        ("POST", "/v1/files/move", None, {"from": "inside.txt", "to": path, "overwrite": True}),
    ]
    if path not in ROOT_SPELLINGS:
        out += [
            ("GET", "/v1/files", {"path": path}, None),
            ("GET", "/v1/files", {"path": path, "glob": "**"}, None),
            ("POST", "/v1/files/grep", None, {"pattern": "SENTINEL|root", "path": path}),
        ]
    return out


def test_at_least_30_hostile_paths() -> None:
    assert len(HOSTILE) >= 30 and len(set(HOSTILE)) == len(HOSTILE)


def test_hostile_paths_are_refused_by_every_file_route(setup: Setup) -> None:
    hostile_tree(setup)
    admin = bearer(setup.keys.admin)
    refused = 0
    with nothing_changes(setup):
        for path in HOSTILE:
            for method, route, query, body in attempts(path):
                response = setup.client.request(
                    method,
                    route,
                    params=query,
                    json=body,
                    headers=admin,
                    content=b"PWNED" if method == "PUT" else None,
                )
                where = f"{method} {route} {query or body}"
                assert response.status_code in (400, 403, 404), (
                    f"{where}: {response.status_code} {response.text}"
                )
                refused += 1
    assert refused >= 30 * 8


RAW_QUERIES = [
    "%2e%2e/outside/sentinel.txt",
    "%2E%2E%2Foutside%2Fsentinel.txt",
    "..%2f..%2foutside",
    "%2fetc%2fpasswd",
    "%5c..%5coutside",
    ".%2e/outside/sentinel.txt",
    "%00",
    "inside.txt%00.png",
    "%2e%2e",
    "sub%2f..%2f..%2fx",
    "%2E%2E/%2E%2E/etc/passwd",
    "%2e%2e%5coutside",
    "%2egit/config",
    "outdir%2fsentinel.txt",
]


@pytest.mark.parametrize("raw", RAW_QUERIES)
def test_pre_encoded_query_strings_are_decoded_once_then_refused(setup: Setup, raw: str) -> None:
    hostile_tree(setup)
    admin = bearer(setup.keys.admin)
    with nothing_changes(setup):
        for method, route in (
            ("GET", "/v1/files/content"),
            ("PUT", "/v1/files/content"),
            ("GET", "/v1/files"),
        ):
            url = f"{route}?path={raw}"
            response = setup.client.request(
                method, url, headers=admin, content=b"PWNED" if method == "PUT" else None
            )
            assert response.status_code in (400, 403, 404), f"{method} {url}: {response.text}"
            message = response.json()["error"]["message"]
            # The hub saw the decoded text, not the %-escapes (it names what it refused).
            assert "%2e" not in message.lower() or "decoded once" in message, message


def test_a_refusal_says_what_was_wrong(setup: Setup) -> None:
    hostile_tree(setup)
    for path, says in (
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a\x00b", "NUL"),
        ("a\\b", "backslash"),
        (".git/config", ".git"),
        ("git_link/config", ".git"),
        ("etc_link/passwd", "outside"),
        ("fifo", "FIFO"),
        ("loop", "loop"),
        ("", "empty"),
        ("%2e%2e/x", "decoded once"),
        ("...", "only of dots"),
    ):
        assert_error(setup.read(path), 403, "path_refused", says)


def test_links_that_stay_inside_are_followed(setup: Setup) -> None:
    setup.create("real/target.txt", b"v1")
    (setup.root / "dirlink").symlink_to("real")
    (setup.root / "filelink").symlink_to("real/target.txt")
    assert setup.read("filelink").content == b"v1"
    assert setup.read("dirlink/target.txt").content == b"v1"
    response = setup.put("filelink", b"v2", **{"If-Match": sha(b"v1")})
    assert response.status_code == 200, response.text
    assert (setup.root / "real/target.txt").read_bytes() == b"v2"
    assert (setup.root / "filelink").is_symlink(), "a write goes through the link, which stays one"


# -- reservations ----------------------------------------------------------------------------


def test_an_exclusive_reservation_refuses_everyone_else_with_423(setup: Setup) -> None:
    holder = setup.register("s-holder", "backend")
    other = setup.register("s-other", "frontend")
    setup.create("src/app.py", b"app = 1\n")
    setup.create("docs/readme.md", b"docs\n")
    response = setup.reserve(holder, "src/**", ttl_seconds=600)
    assert response.status_code == 201, response.text
    (held,) = response.json()["reservations"]
    assert held == {
        "id": held["id"],
        "worker_id": holder,
        "role": "backend",
        "glob": "src/**",
        "exclusive": True,
        "task_id": None,
        "created_at": T0,
        "expires_at": T0 + 600,
    }
    changes: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
        ("PUT", {"path": "src/app.py", "worker_id": other}, None),
        ("PUT", {"path": "src/new.py"}, None),
        ("POST edit", None, {"path": "src/app.py", "old": "1", "new": "2", "worker_id": other}),
        ("POST edit", None, {"path": "src/app.py", "old": "1", "new": "2"}),
        ("POST delete", None, {"path": "src/app.py", "worker_id": other}),
        ("POST delete", None, {"path": "src"}),
        ("POST move", None, {"from": "src/app.py", "to": "elsewhere.py", "worker_id": other}),
        ("POST move", None, {"from": "docs/readme.md", "to": "src/readme.md", "worker_id": other}),
        ("POST move", None, {"from": "src", "to": "lib"}),
    ]
    with nothing_changes(setup):
        for kind, query, body in changes:
            if kind == "PUT":
                response = setup.client.put(
                    "/v1/files/content", params=query, content=b"x", headers=setup.agent(**{"If-Match": "*"})
                )
            else:
                response = setup.post(kind.split()[1], body or {})
            message = assert_error(response, 423, "reserved", f"worker {holder} (backend)")
            assert "'src/**'" in message and "exclusively" in message, message
    # The holder itself may; the rest of the workspace is open to everyone.
    by_holder = setup.post("edit", {"path": "src/app.py", "old": "1", "new": "2", "worker_id": holder})
    assert by_holder.status_code == 200
    assert (
        setup.post(
            "edit", {"path": "docs/readme.md", "old": "docs", "new": "d", "worker_id": other}
        ).status_code
        == 200
    )
    unknown = setup.post("edit", {"path": "docs/readme.md", "old": "d", "new": "e", "worker_id": 424242})
    assert_error(unknown, 404, "not_found", "424242")


def test_a_reservation_covers_a_target_reached_through_a_link(setup: Setup) -> None:
    holder = setup.register("s-holder")
    setup.create("src/app.py", b"1")
    (setup.root / "alias.py").symlink_to("src/app.py")
    assert setup.reserve(holder, "src/app.py").status_code == 201
    with nothing_changes(setup):
        assert_error(setup.put("alias.py", b"2", **{"If-Match": "*"}), 423, "reserved", "src/app.py")


def test_shared_reservations_block_nobody_but_are_listed(setup: Setup) -> None:
    first = setup.register("s-1")
    second = setup.register("s-2", "frontend")
    setup.create("src/app.py", b"1")
    assert setup.reserve(first, "src/**", exclusive=False).status_code == 201
    assert setup.reserve(second, "src/app.py", exclusive=False).status_code == 201
    assert setup.reserve(second, "src/app.py").status_code == 201, "shared does not stop an exclusive one"
    assert setup.put("src/app.py", b"2", **{"If-Match": "*"}).status_code == 423  # second's exclusive
    response = setup.client.put(
        "/v1/files/content",
        params={"path": "src/other.py", "worker_id": second},
        content=b"x",
        headers=setup.agent(),
    )
    assert response.status_code == 201
    listed = setup.client.get("/v1/reservations", headers=bearer(setup.keys.viewer)).json()["reservations"]
    assert [(r["worker_id"], r["glob"], r["exclusive"]) for r in listed] == [
        (first, "src/**", False),
        (second, "src/app.py", True),
    ]
    mine = setup.client.get(
        "/v1/reservations", params={"worker_id": first}, headers=bearer(setup.keys.viewer)
    )
    assert [r["glob"] for r in mine.json()["reservations"]] == ["src/**"]


def test_an_overlapping_exclusive_reservation_is_refused(setup: Setup) -> None:
    first = setup.register("s-1", "backend")
    second = setup.register("s-2", "frontend")
    setup.create("src/api/x.py", b"x")
    assert setup.reserve(first, "src/api").json()["reservations"][0]["glob"] == "src/api/**"
    with nothing_changes(setup):
        for globs in (["src/**"], ["src/api/x.py"], ["docs/**", "**/*.py"], ["src/api/"]):
            response = setup.reserve(second, *globs)
            message = assert_error(response, 423, "reserved", f"worker {first} (backend)")
            assert "'src/api/**'" in message
    granted = setup.reserve(second, "docs/**", "src/*.py", "src/apis/**")
    assert [r["glob"] for r in granted.json()["reservations"]] == ["docs/**", "src/*.py", "src/apis/**"]
    with nothing_changes(setup):
        assert_error(setup.reserve(second, "../x"), 403, "path_refused")
        assert_error(setup.reserve(second, ".git/**"), 403, "path_refused")
        assert_error(setup.reserve(second, "./"), 422, "invalid_request", "whole workspace")
        assert_error(setup.reserve(second, "a", ttl_seconds=0), 422, "invalid_request")
        assert_error(setup.reserve(424242, "a"), 404, "not_found")


def test_reservations_expire_by_the_hubs_clock(setup: Setup) -> None:
    holder = setup.register("s-holder")
    setup.create("a.txt", b"a")
    (held,) = setup.reserve(holder, "a.txt", ttl_seconds=60).json()["reservations"]
    assert setup.put("a.txt", b"b", **{"If-Match": "*"}).status_code == 423
    setup.clock.now = T0 + 59
    renew = f"/v1/reservations/{held['id']}/renew"
    renewed = setup.client.post(renew, json={"worker_id": holder, "ttl_seconds": 60}, headers=setup.agent())
    assert renewed.status_code == 200 and renewed.json()["expires_at"] == T0 + 119
    setup.clock.now = T0 + 118
    assert setup.put("a.txt", b"b", **{"If-Match": "*"}).status_code == 423
    setup.clock.now = T0 + 119
    assert setup.put("a.txt", b"b", **{"If-Match": "*"}).status_code == 200
    assert setup.client.get("/v1/reservations", headers=setup.agent()).json() == {"reservations": []}
    late = setup.client.post(
        f"/v1/reservations/{held['id']}/renew", json={"worker_id": holder}, headers=setup.agent()
    )
    assert_error(late, 404, "not_found")
    setup.hub.queue.reap()
    assert [e.type for e in setup.hub.store.events_after(0, 1000)][-1] == "reservation.expired"


def test_renew_and_release_by_the_holder_only(setup: Setup) -> None:
    holder = setup.register("s-holder")
    other = setup.register("s-other")
    setup.create("a.txt", b"a")
    (held,) = setup.reserve(holder, "a.txt").json()["reservations"]
    base = f"/v1/reservations/{held['id']}"
    with nothing_changes(setup):
        for action in ("renew", "release"):
            response = setup.client.post(f"{base}/{action}", json={"worker_id": other}, headers=setup.agent())
            assert_error(response, 409, "conflict", f"held by worker {holder}")
        assert_error(
            setup.client.post(
                "/v1/reservations/424242/release", json={"worker_id": holder}, headers=setup.agent()
            ),
            404,
            "not_found",
        )
    released = setup.client.post(f"{base}/release", json={"worker_id": holder}, headers=setup.agent())
    assert released.status_code == 200 and released.json()["id"] == held["id"]
    assert setup.put("a.txt", b"b", **{"If-Match": "*"}).status_code == 200
    again = setup.client.post(f"{base}/release", json={"worker_id": holder}, headers=setup.agent())
    assert_error(again, 404, "not_found")


@pytest.mark.parametrize("ending", ["complete", "fail", "release", "cancel", "stop"])
def test_reservations_end_with_their_task_or_worker(setup: Setup, ending: str) -> None:
    worker = setup.register("s-worker")
    created = setup.client.post("/v1/tasks", json={"title": "t", "instructions": "i"}, headers=setup.agent())
    task = created.json()
    claim = setup.client.post("/v1/tasks/claim", json={"worker_id": worker}, headers=setup.agent()).json()
    assert claim["id"] == task["id"]
    tied = setup.reserve(worker, "src/**", task_id=task["id"])
    assert tied.status_code == 201 and tied.json()["reservations"][0]["task_id"] == task["id"]
    free = setup.reserve(worker, "docs/**").json()["reservations"]
    assert setup.put("src/a.py", b"x").status_code == 423
    lease = {"lease_token": claim["lease_token"]}
    if ending == "stop":
        response = setup.client.delete(f"/v1/workers/{worker}", headers=setup.agent())
    elif ending == "cancel":
        response = setup.client.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer(setup.keys.admin))
    else:
        body = {**lease, "error": "no"} if ending == "fail" else lease
        response = setup.client.post(f"/v1/tasks/{task['id']}/{ending}", json=body, headers=setup.agent())
    assert response.status_code == 200, response.text
    left = setup.client.get("/v1/reservations", headers=setup.agent()).json()["reservations"]
    assert left == ([] if ending == "stop" else free)
    assert setup.put("src/a.py", b"x").status_code == 201


def test_a_reservation_for_a_task_the_worker_does_not_hold_is_409(setup: Setup) -> None:
    worker = setup.register("s-worker")
    task = setup.client.post(
        "/v1/tasks", json={"title": "t", "instructions": "i"}, headers=setup.agent()
    ).json()
    with nothing_changes(setup):
        assert_error(setup.reserve(worker, "a", task_id=task["id"]), 409, "conflict", "not claimed")
