"""A scripted stand-in for the Anthropic Messages API, for running the real Claude Code CLI.

Claude Code (`claude -p`, `ANTHROPIC_BASE_URL` pointing here) sends each model request to
`POST /v1/messages`; this answers with the streaming events a model would send
(`message_start`, `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`).
What the "model" does is a policy: a function of the request that returns the next step, a tool
call or the end of the turn. Policies read what Claude Code sent back (tool results, a Stop
hook's reason) as a model would, so a scenario's hub ids and lease tokens are never scripted.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Usage:
    """The token counts an answer reports, as the Messages API does; Claude Code turns them into
    its cost and telemetry (input excludes the cache reads and writes, as in the API)."""

    input: int = 1
    output: int = 1
    cache_read: int = 0
    cache_creation: int = 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_creation


@dataclass(frozen=True)
class Call:
    """A tool_use block: Claude Code runs the tool and sends its result in the next request."""

    name: str
    input: dict[str, Any]
    usage: Usage | None = None  # None: the model's `usage` function decides


@dataclass(frozen=True)
class End:
    """The end of the turn, with this text; Claude Code then runs the Stop hooks."""

    text: str = "Done."
    usage: Usage | None = None


Step = Call | End


@dataclass
class Turn:
    """One request from Claude Code as the policy sees it.

    Claude Code resends the whole conversation each time and merges a turn's assistant messages,
    so what is new is found by id: the tool result the model has not seen yet, if any; else the
    text after the model last spoke (a prompt, a skill's text, a Stop hook's feedback)."""

    body: dict[str, Any]
    names: dict[str, str]  # tool_use id -> tool name, of every call this model made
    seen: set[str]  # tool_use ids whose results an earlier turn returned

    def __post_init__(self) -> None:
        self.result: tuple[str, str, bool] | None = None
        for message in self.body["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "tool_result" and block["tool_use_id"] not in self.seen:
                    self.seen.add(block["tool_use_id"])
                    content = block.get("content", "")
                    text = (
                        content
                        if isinstance(content, str)
                        else "".join(part.get("text", "") for part in content if isinstance(part, dict))
                    )
                    name = self.names.get(block["tool_use_id"], "?")
                    self.result = (name, text, bool(block.get("is_error")))
                    return

    @property
    def text(self) -> str:
        """The text sent since the model last spoke; of a Stop hook's feedback, only the latest."""
        texts: list[str] = []
        for message in reversed(self.body["messages"]):
            if message["role"] == "assistant":
                break
            content = message["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            texts[:0] = [block.get("text", "") for block in blocks if block.get("type") == "text"]
        return "\n".join(texts).rsplit(HOOK_FEEDBACK, 1)[-1]


HOOK_FEEDBACK = "Stop hook blocking error from command"
Policy = Callable[[Turn], Step]
Metering = Callable[[dict[str, Any], Step], Usage]  # (request body, answer) -> its usage


def one_each(body: dict[str, Any], step: Step) -> Usage:
    return Usage()


@dataclass
class FakeModel:
    policy: Policy
    max_steps: int = 100  # a policy that loops ends its session instead of running forever
    usage: Metering = one_each  # for answers (side requests too) whose step names no usage
    requests: list[dict[str, Any]] = field(default_factory=list)
    usages: list[Usage] = field(default_factory=list)  # what each answer reported, as `requests`
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])

    async def messages(self, request: Request) -> Response:
        return self.answer(json.loads(await request.body()))

    def answer(self, body: dict[str, Any]) -> Response:
        with self._lock:
            self.requests.append(body)
            if "tools" not in body:  # a side request (a title, a summary): no tools, no policy
                step: Step = End("Fake model.")
            elif len(self.steps) >= self.max_steps:
                self.errors.append(f"more than {self.max_steps} steps: the policy loops")
                step = End("Stopping: too many steps.")
            else:
                try:
                    step = self.policy(Turn(body, self.names, self.seen))
                except Exception as error:  # noqa: BLE001 - reported by the test, the turn ends
                    self.errors.append(f"{type(error).__name__}: {error}")
                    step = End(f"policy failed: {error}")
                self.steps.append(step)
            usage = step.usage or self.usage(body, step)
            self.usages.append(usage)
            if isinstance(step, Call):
                ident = f"toolu_{next(self._ids):04d}"
                self.names[ident] = step.name
                block: dict[str, Any] = {"type": "tool_use", "id": ident, "name": step.name, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(step.input)}
                stop = "tool_use"
            else:
                block = {"type": "text", "text": ""}
                delta, stop = {"type": "text_delta", "text": step.text}, "end_turn"
        return Response(stream(body["model"], block, delta, stop, usage), media_type="text/event-stream")


@dataclass
class Sessions:
    """A scripted model per Claude Code session, for sessions something else starts (`scaffold
    team`): each request goes to its session's model, by the session id Claude Code sends in
    `metadata.user_id`; a new session gets a new model with a new policy from `make`."""

    make: Callable[[], Policy]
    models: dict[str, FakeModel] = field(default_factory=dict)
    usage: Metering = one_each

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])

    async def messages(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self._lock:
            session = session_of(body)
            model = self.models.get(session)
            if model is None:
                model = self.models[session] = FakeModel(self.make(), usage=self.usage)
        return model.answer(body)

    @property
    def errors(self) -> list[str]:
        return [f"{session}: {error}" for session, model in self.models.items() for error in model.errors]


def session_of(body: dict[str, Any]) -> str:
    """The session id Claude Code puts in each request's metadata (a JSON text in user_id)."""
    user = (body.get("metadata") or {}).get("user_id") or "{}"
    try:
        return str(json.loads(user).get("session_id") or "?")
    except (ValueError, AttributeError):
        return "?"


def stream(
    model: str, block: dict[str, Any], delta: dict[str, Any], stop: str, usage: Usage = Usage()
) -> str:
    counts = {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": counts,
    }
    events = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage.output},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def search(*tools: str) -> Call:
    """Claude Code defers MCP tools behind ToolSearch: a model loads their schemas first."""
    return Call(
        "ToolSearch",
        {"query": "select:" + ",".join(f"mcp__vps__{tool}" for tool in tools), "max_results": len(tools)},
    )


def found(pattern: str, text: str) -> str:
    """The first group of `pattern` in `text`; a clear failure when the text lacks it."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in {text[:600]!r}"
    return match.group(1)
