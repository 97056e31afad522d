"""A mock LLM provider server that speaks each vendor's wire protocol.

Tests and benchmarks point the real SDKs at it (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
GEMINI_BASE_URL, or a user's compatible base URL): OpenAI Responses and Chat
Completions, Anthropic Messages and Gemini generateContent, streaming and not, with
exact usage in each vendor's own shape and each vendor's real error bodies.

It is a plain ASGI app (no framework): `python -m devtools.mockprovider --port 9100`
serves it with uvicorn; `MockProviderThread` runs it inside a test process.

Knobs live in `MockConfig`, set directly (in-process) or with
`POST /_mock/config {"ttft": 0.2, "fault": "429", ...}`; `POST /_mock/reset` restores
the defaults and `GET /_mock/requests` lists what was received.

A streamed reply whose latest user message carries a marker `[turn <8-32 hex>]`
(the load generator's) has its own time to first token recorded: from the request
received to the first token sent, in seconds, by marker, at `GET /_mock/first-tokens`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Faults the server can inject. "cut" drops the connection after
# `fault_after_tokens` tokens; "midstream" sends the vendor's in-stream error event
# there; "stall" waits `stall_seconds` before the first token.
FAULTS = {
    "401",
    "403",
    "400",
    "429",
    "quota",
    "500",
    "503",
    "529",
    "context",
    "filter",
    "cut",
    "midstream",
    "stall",
    "redirect",
}


@dataclasses.dataclass
class MockConfig:
    ttft: float = 0.0  # seconds before the first token
    tokens_per_second: float = 0.0  # 0: as fast as possible
    # Tokens due within this many seconds go out together, in one write at the end
    # of the interval (token_due); 0: a write per token (but for tokens already late,
    # which go with the next). Only with tokens_per_second.
    write_interval: float = 0.0
    reply: str | None = None  # fixed reply; else an echo of the last user message
    chunks: list[str] | None = None  # the reply exactly as these chunks (wins over reply)
    reply_tokens: int = 12  # length of the generated reply, in tokens
    input_tokens: int | None = None  # else counted from the request's words
    cached_tokens: int = 0  # of the input, read from cache
    cache_write_tokens: int = 0  # Anthropic: of the input, written to cache
    reasoning_tokens: int = 0  # of the output, spent reasoning
    fault: str | None = None
    fault_times: int | None = None  # inject `fault` this many times, then succeed
    fault_after_tokens: int = 3
    retry_after: int | None = 1
    stall_seconds: float = 3600.0
    # For benchmarks: {"429": 0.05, "500": 0.02, "cut": 0.01, "stall": 0.01}
    fault_rates: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int | None = None


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class _Cut(Exception):
    """Raised inside the app to drop the connection mid-response."""


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def _tokens_of(text: str) -> list[str]:
    words = _words(text)
    return [w if i == 0 else " " + w for i, w in enumerate(words)] or [""]


FILLER = (  # noqa: SIM905 - reads as a sentence
    "This is the mock provider answering with a reply of exactly the requested length "
    "so that tests and benchmarks can count every token it streams back to the client"
).split()


TURN_MARKER = re.compile(r"\[turn ([0-9a-f]{8,32})\]")


class MockProvider:
    """The ASGI app. One instance holds the config and the request log."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.requests: list[RecordedRequest] = []
        self.first_tokens: dict[str, float] = {}  # marked turns' own TTFT, seconds
        # Streams whose client went away before the end (the app's Stop button).
        self.disconnects = 0
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)  # noqa: S311 - fault sampling, not crypto

    # --- configuration -----------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.config = MockConfig()
            self.requests.clear()
            self.first_tokens.clear()
            self.disconnects = 0

    def configure(self, **changes: Any) -> None:
        for name in changes:
            if name not in {f.name for f in dataclasses.fields(MockConfig)}:
                raise ValueError(f"unknown mock setting {name!r}")
        if changes.get("fault") not in FAULTS | {None}:
            raise ValueError(f"unknown fault {changes['fault']!r}")
        with self._lock:
            self.config = dataclasses.replace(self.config, **changes)
            if "seed" in changes:
                self._rng = random.Random(changes["seed"])  # noqa: S311

    def _take_fault(self) -> str | None:
        with self._lock:
            cfg = self.config
            if cfg.fault and cfg.fault_times != 0:
                if cfg.fault_times is not None:
                    self.config = dataclasses.replace(cfg, fault_times=cfg.fault_times - 1)
                return cfg.fault
            roll = self._rng.random()
            for fault, rate in cfg.fault_rates.items():
                if roll < rate:
                    return fault
                roll -= rate
            return None

    # --- ASGI --------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        query = parse_qs(scope.get("query_string", b"").decode())
        path: str = scope["path"]
        method: str = scope["method"]
        if not path.startswith("/_mock/"):
            with self._lock:
                self.requests.append(RecordedRequest(method, path, query, headers, body))
        exchange = _Exchange(self, send, headers, query, body)
        watcher = asyncio.create_task(self._watch_disconnect(receive, exchange))
        try:
            # _Cut propagates: uvicorn then drops the connection mid-body, and the
            # client sees an incomplete chunked response.
            await self._route(method, path, exchange)
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, receive: Receive, ex: _Exchange) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        ex.disconnected = True
        if ex.started:
            with self._lock:
                self.disconnects += 1

    async def _route(self, method: str, path: str, ex: _Exchange) -> None:
        if path.startswith("/_mock/"):
            await self._control(method, path, ex)
            return
        gemini = re.fullmatch(
            r"/(v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)",
            path,
        )
        if method == "POST" and gemini and gemini.group(3) == "countTokens":
            await _count(Gemini(ex, gemini.group(2)), lambda n: {"totalTokens": n})
        elif method == "POST" and path == "/v1/messages/count_tokens":
            await _count(Anthropic(ex), lambda n: {"input_tokens": n})
        elif method == "POST" and path == "/v1/responses/input_tokens":
            await _count(
                OpenAIResponses(ex),
                lambda n: {"object": "response.input_tokens", "input_tokens": n},
            )
        elif method == "POST" and gemini:
            await Gemini(ex, gemini.group(2)).handle(stream=gemini.group(3).startswith("stream"))
        elif method == "GET" and path in {"/v1beta/models", "/v1/models"} and _is_gemini(ex):
            await Gemini(ex, "").models()
        elif method == "POST" and path == "/v1/messages":
            await Anthropic(ex).handle()
        elif method == "GET" and path == "/v1/models" and "anthropic-version" in ex.headers:
            await Anthropic(ex).models()
        elif method == "POST" and path == "/v1/responses":
            await OpenAIResponses(ex).handle()
        elif method == "POST" and path == "/v1/chat/completions":
            await OpenAIChat(ex).handle()
        elif method == "GET" and path == "/v1/models":
            await OpenAIChat(ex).models()
        else:
            await ex.json(404, {"error": {"message": f"No route for {method} {path}"}})

    async def _control(self, method: str, path: str, ex: _Exchange) -> None:
        if method == "POST" and path == "/_mock/config":
            try:
                self.configure(**(ex.body or {}))
            except (TypeError, ValueError) as exc:
                await ex.json(400, {"error": str(exc)})
                return
            await ex.json(200, dataclasses.asdict(self.config))
        elif method == "POST" and path == "/_mock/reset":
            self.reset()
            await ex.json(200, dataclasses.asdict(self.config))
        elif method == "GET" and path == "/_mock/requests":
            await ex.json(200, [dataclasses.asdict(r) for r in self.requests])
        elif method == "GET" and path == "/_mock/first-tokens":
            with self._lock:
                first_tokens = dict(self.first_tokens)
            await ex.json(200, first_tokens)
        else:
            await ex.json(404, {"error": "unknown control path"})


async def _count(dialect: Any, answer: Any) -> None:
    """A vendor's token-counting endpoint: the prompt's input tokens, as the reply's
    usage would count them. Only the key is checked: the `fault` setting is for the
    chat calls (a page's estimate must not use up a fault meant for its message)."""
    if await dialect.auth_failed():
        return
    await dialect.ex.json(200, answer(dialect.ex.input_tokens(dialect.prompt())))


def _is_gemini(ex: _Exchange) -> bool:
    return "x-goog-api-key" in ex.headers or "key" in ex.query


def token_due(first: float, index: int, tokens_per_second: float, every: float = 0.0) -> float:
    """When token `index` (1, 2...) of a reply goes out, on the event loop's clock,
    its first token having gone at `first`: `index` steps of 1 / tokens_per_second
    after it, on a schedule (a slow moment is caught up, not added to every later
    token). With `every` longer than a step, the tokens due within each `every`
    seconds after the first go out together at its end, never early: one write
    instead of one per token. With hundreds of replies streaming, a write per
    token cost the mock more CPU than the app it stands in front of spent on
    relaying them (docs/performance.md). Each reply keeps its own phase, as real
    ones do: the replies' writes are not lined up into bursts."""
    step = 1 / tokens_per_second
    due = index * step
    if every > step > 0:
        due = math.ceil(due / every - 1e-6) * every  # (not a float's error later)
    return first + due


class _Exchange:
    """One request/response, with helpers shared by the vendor dialects."""

    def __init__(
        self,
        app: MockProvider,
        send: Send,
        headers: dict[str, str],
        query: dict[str, list[str]],
        body: Any,
    ) -> None:
        self.app = app
        self.cfg = app.config
        self._send = send
        self.headers = headers
        self.query = query
        self.body = body if isinstance(body, dict) else {}
        self.started = False
        self.disconnected = False
        self.received = time.monotonic()
        # While tokens stream, the events made between two waits go out together
        # (flush): one write, not one per event.
        self._held: list[bytes] | None = None
        self._first_token_at = 0.0

    async def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await self._send({"type": "http.response.body", "body": data})

    async def start_sse(self) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )

    async def sse(self, data: Any, event: str | None = None) -> None:
        chunk = ""
        if event:
            chunk += f"event: {event}\n"
        chunk += f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        if self._held is not None:
            self._held.append(chunk.encode())
            return
        await self._send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

    def hold(self) -> None:
        """Hold the events made from now on until the next flush."""
        self._held = []

    async def flush(self, *, release: bool = False) -> None:
        """Send the events held, in one write (and stop holding, with `release`)."""
        held = self._held
        if release:
            self._held = None
        if held:
            body = b"".join(held)
            held.clear()
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def end(self) -> None:
        await self.flush(release=True)
        await self._send({"type": "http.response.body", "body": b""})

    async def redirect(self) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", b"http://169.254.169.254/latest/meta-data/")],
            }
        )
        await self._send({"type": "http.response.body", "body": b""})

    # --- the reply -----------------------------------------------------------

    def reply_tokens(self, prompt: str) -> list[str]:
        cfg = self.cfg
        if cfg.chunks is not None:
            return list(cfg.chunks)
        if cfg.reply is not None:
            return _tokens_of(cfg.reply)
        echo = _words(prompt)[:6]
        words = (["You", "said:", *echo, "—"] + FILLER * 50)[: max(cfg.reply_tokens, 1)]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def input_tokens(self, text: str) -> int:
        if self.cfg.input_tokens is not None:
            return self.cfg.input_tokens
        return max(len(_words(text)), 1) + self.cfg.cached_tokens

    async def pace(self, index: int) -> None:
        """Wait until token `index` goes out (token_due), sending what is held
        first: the first `ttft` seconds from now, the others at `tokens_per_second`."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        if index == 0:
            await self.flush()
            if cfg.ttft:
                await asyncio.sleep(cfg.ttft)
            self._first_token_at = loop.time()
        elif cfg.tokens_per_second > 0:
            at = token_due(self._first_token_at, index, cfg.tokens_per_second, cfg.write_interval)
            if at > loop.time():
                await self.flush()
                await asyncio.sleep(at - loop.time())
        else:
            await self.flush()

    def key(self, *names: str) -> str:
        for name in names:
            value = self.headers.get(name, "")
            if name == "authorization":
                value = value.removeprefix("Bearer ").strip()
            if value:
                return value
        return self.query.get("key", [""])[0]


def _masked(key: str) -> str:
    # Vendors echo part of a wrong key back; the app must not pass that on.
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("content") or ""))
            else:
                parts.append(str(part))
        return " ".join(parts)
    return ""


class _Dialect:
    """What every vendor dialect shares: auth, faults, the streaming loop."""

    def __init__(self, ex: _Exchange) -> None:
        self.ex = ex
        self.cfg = ex.cfg
        self.id = uuid.uuid4().hex[:24]

    async def error(self, fault: str) -> None:
        raise NotImplementedError

    def reply(self, fault: str | None) -> list[str]:
        """The reply's tokens; a filtered one stops after two, as the vendors' do."""
        tokens = self.ex.reply_tokens(self.last_user_text())
        return tokens[:2] if fault == "filter" else tokens

    def last_user_text(self) -> str:
        """What the generated reply echoes: the latest user message."""
        body = self.ex.body
        turns = body.get("input") or body.get("messages") or body.get("contents") or []
        if isinstance(turns, str):
            return turns
        for turn in reversed(turns):
            if isinstance(turn, dict) and turn.get("role") == "user":
                if "parts" in turn:
                    return " ".join(
                        str(p.get("text", "")) for p in turn["parts"] if isinstance(p, dict)
                    )
                return _text_of(turn.get("content"))
        return ""

    async def auth_failed(self) -> bool:
        raise NotImplementedError

    async def preflight(self) -> str | None:
        """Check the key and inject a fault that comes before any token."""
        if await self.auth_failed():
            return "handled"
        fault = self.ex.app._take_fault()
        if fault == "redirect":
            await self.ex.redirect()
            return "handled"
        if fault in {"401", "403", "400", "429", "quota", "500", "503", "529", "context"}:
            await self.error(fault)
            return "handled"
        if fault == "stall":
            await asyncio.sleep(self.cfg.stall_seconds)
        return fault

    async def stream_tokens(
        self, tokens: list[str], fault: str | None, emit: Any, midstream: Any
    ) -> None:
        self.ex.hold()
        for i, token in enumerate(tokens):
            if self.ex.disconnected:
                return  # like a real server: stop generating for nobody
            if fault in {"cut", "midstream"} and i == self.cfg.fault_after_tokens:
                if fault == "midstream":
                    await midstream()
                    await self.ex.end()
                    return
                await self.ex.flush(release=True)  # what came before the cut
                raise _Cut()
            await self.ex.pace(i)
            await emit(token)
            if i == 0:
                await self.ex.flush()
                self._note_first_token()
        await self.ex.flush(release=True)

    def _note_first_token(self) -> None:
        marker = TURN_MARKER.search(self.last_user_text())
        if marker:
            took = time.monotonic() - self.ex.received
            with self.ex.app._lock:
                self.ex.app.first_tokens[marker.group(1)] = took


class _OpenAIDialect(_Dialect):
    async def auth_failed(self) -> bool:
        key = self.ex.key("authorization")
        if not key or "invalid" in key:
            await self.ex.json(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {_masked(key)}. You can find "
                        "your API key at https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
            return True
        return False

    async def error(self, fault: str) -> None:
        await self.ex.json(*_openai_error(fault, self.cfg))


class OpenAIResponses(_OpenAIDialect):
    def prompt(self) -> str:
        body = self.ex.body
        items = body.get("input")
        if isinstance(items, str):
            return items
        texts = [_text_of(m.get("content")) for m in items or [] if isinstance(m, dict)]
        return " ".join([str(body.get("instructions") or ""), *texts])

    def usage(self, prompt: str, output: int) -> dict[str, Any]:
        cfg = self.cfg
        inp = self.ex.input_tokens(prompt)
        out = output + cfg.reasoning_tokens
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cfg.cached_tokens},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": cfg.reasoning_tokens},
            "total_tokens": inp + out,
        }

    def response(
        self, status: str, text: str, usage: dict | None, reason: str | None = None
    ) -> dict:
        return {
            "id": f"resp_{self.id}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": self.ex.body.get("instructions"),
            "max_output_tokens": self.ex.body.get("max_output_tokens"),
            "model": self.ex.body.get("model", "gpt-mock"),
            "output": [
                {
                    "id": f"msg_{self.id}",
                    "type": "message",
                    "status": "completed" if status == "completed" else "in_progress",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
            if text
            else [],
            "parallel_tool_calls": True,
            "store": self.ex.body.get("store", True),
            "temperature": self.ex.body.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "usage": usage,
        }

    async def handle(self) -> None:
        fault = await self.preflight()
        if fault == "handled":
            return
        prompt = self.prompt()
        tokens = self.reply(fault)
        text = "".join(tokens)
        reason = "content_filter" if fault == "filter" else None
        if not self.ex.body.get("stream"):
            status = "incomplete" if reason else "completed"
            await self.ex.json(
                200, self.response(status, text, self.usage(prompt, len(tokens)), reason)
            )
            return
        ex = self.ex
        seq = iter(range(10_000))

        async def event(kind: str, **data: Any) -> None:
            await ex.sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

        await ex.start_sse()
        await event("response.created", response=self.response("in_progress", "", None))
        await event("response.in_progress", response=self.response("in_progress", "", None))
        item = {
            "id": f"msg_{self.id}",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await event("response.output_item.added", output_index=0, item=item)
        part = {"type": "output_text", "text": "", "annotations": []}
        await event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            part=part,
        )

        async def emit(token: str) -> None:
            await event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=0,
                content_index=0,
                delta=token,
                logprobs=[],
            )

        async def midstream() -> None:
            await event(
                "error",
                code="server_error",
                message="The server had an error while processing your request.",
                param=None,
            )

        await self.stream_tokens(tokens, fault, emit, midstream)
        if fault in {"cut", "midstream"}:
            return
        text = "".join(tokens)
        await event(
            "response.output_text.done",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
        )
        done_part = {"type": "output_text", "text": text, "annotations": []}
        await event(
            "response.content_part.done",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            part=done_part,
        )
        done_item = {**item, "status": "completed", "content": [done_part]}
        await event("response.output_item.done", output_index=0, item=done_item)
        final = self.response(
            "incomplete" if reason else "completed", text, self.usage(prompt, len(tokens)), reason
        )
        await event("response.incomplete" if reason else "response.completed", response=final)
        await ex.end()


class OpenAIChat(_OpenAIDialect):
    async def models(self) -> None:
        if await self.auth_failed():
            return
        fault = self.ex.app._take_fault()
        if fault in {"429", "quota", "500", "503", "403"}:
            await self.error(fault)
            return
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
            for m in ("gpt-mock", "gpt-mock-mini", "text-embedding-mock", "whisper-mock")
        ]
        await self.ex.json(200, {"object": "list", "data": data})

    def prompt(self) -> str:
        return " ".join(
            _text_of(m.get("content"))
            for m in self.ex.body.get("messages") or []
            if isinstance(m, dict)
        )

    def usage(self, prompt: str, output: int) -> dict[str, Any]:
        cfg = self.cfg
        inp = self.ex.input_tokens(prompt)
        out = output + cfg.reasoning_tokens
        return {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": cfg.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": cfg.reasoning_tokens,
                "audio_tokens": 0,
            },
        }

    def chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {
            "id": f"chatcmpl-{self.id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.ex.body.get("model", "gpt-mock"),
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    async def handle(self) -> None:
        fault = await self.preflight()
        if fault == "handled":
            return
        prompt = self.prompt()
        tokens = self.reply(fault)
        finish = "content_filter" if fault == "filter" else "stop"
        if not self.ex.body.get("stream"):
            await self.ex.json(
                200,
                {
                    "id": f"chatcmpl-{self.id}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.ex.body.get("model", "gpt-mock"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(tokens),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": self.usage(prompt, len(tokens)),
                },
            )
            return
        ex = self.ex
        await ex.start_sse()
        await ex.sse(self.chunk({"role": "assistant", "content": "", "refusal": None}))

        async def emit(token: str) -> None:
            await ex.sse(self.chunk({"content": token}))

        async def midstream() -> None:
            await ex.sse(
                {
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            )

        await self.stream_tokens(tokens, fault, emit, midstream)
        if fault in {"cut", "midstream"}:
            return
        await ex.sse(self.chunk({}, finish))
        if (self.ex.body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = self.chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self.usage(prompt, len(tokens))
            await ex.sse(usage_chunk)
        await ex.sse("[DONE]")
        await ex.end()


def _openai_error(fault: str, cfg: MockConfig) -> tuple[int, dict, dict[str, str]]:
    def err(message: str, kind: str, code: str | None) -> dict:
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    retry = {"retry-after": str(cfg.retry_after)} if cfg.retry_after is not None else {}
    table: dict[str, tuple[int, dict, dict[str, str]]] = {
        "401": (
            401,
            err(
                "Incorrect API key provided: sk-***abcd.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            {},
        ),
        "403": (
            403,
            err(
                "You are not allowed to sample from this model",
                "invalid_request_error",
                "model_not_found",
            ),
            {},
        ),
        "400": (
            400,
            err(
                "Invalid value for 'temperature': must be between 0 and 2.",
                "invalid_request_error",
                "invalid_value",
            ),
            {},
        ),
        "429": (
            429,
            err(
                "Rate limit reached for gpt-mock on tokens per min (TPM): Limit 30000, Used 30000.",
                "tokens",
                "rate_limit_exceeded",
            ),
            retry,
        ),
        "quota": (
            429,
            err(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
            {},
        ),
        "500": (
            500,
            err(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            {},
        ),
        "503": (
            503,
            err(
                "The engine is currently overloaded, please try again later.", "server_error", None
            ),
            {},
        ),
        "529": (
            529,
            err(
                "The engine is currently overloaded, please try again later.", "server_error", None
            ),
            {},
        ),
        "context": (
            400,
            err(
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            {},
        ),
    }
    return table[fault]


class Anthropic(_Dialect):
    async def auth_failed(self) -> bool:
        key = self.ex.key("x-api-key", "authorization")
        if not key or "invalid" in key:
            await self.ex.json(401, _anthropic_error("authentication_error", "invalid x-api-key"))
            return True
        return False

    async def error(self, fault: str) -> None:
        retry = (
            {"retry-after": str(self.cfg.retry_after)} if self.cfg.retry_after is not None else {}
        )
        table: dict[str, tuple[int, dict, dict[str, str]]] = {
            "401": (401, _anthropic_error("authentication_error", "invalid x-api-key"), {}),
            "403": (
                403,
                _anthropic_error(
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                {},
            ),
            "400": (400, _anthropic_error("invalid_request_error", "temperature: range: 0..1"), {}),
            "429": (
                429,
                _anthropic_error(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
                retry,
            ),
            "quota": (
                400,
                _anthropic_error(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                ),
                {},
            ),
            "500": (500, _anthropic_error("api_error", "Internal server error"), {}),
            "503": (503, _anthropic_error("api_error", "Service unavailable"), {}),
            "529": (529, _anthropic_error("overloaded_error", "Overloaded"), {}),
            "context": (
                400,
                _anthropic_error(
                    "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
                ),
                {},
            ),
        }
        await self.ex.json(*table[fault])

    async def models(self) -> None:
        if await self.auth_failed():
            return
        fault = self.ex.app._take_fault()
        if fault in {"429", "500", "529", "403"}:
            await self.error(fault)
            return
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in ("claude-mock", "claude-mock-haiku")
        ]
        await self.ex.json(
            200,
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
        )

    def prompt(self) -> str:
        body = self.ex.body
        system = body.get("system")
        texts = [
            _text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)
        ]
        return " ".join([_text_of(system) if system else "", *texts])

    def usage(self, prompt: str, output: int, *, start: bool = False) -> dict[str, Any]:
        cfg = self.cfg
        # Anthropic's input_tokens exclude the tokens read from or written to cache.
        uncached = self.ex.input_tokens(prompt) - cfg.cached_tokens - cfg.cache_write_tokens
        return {
            "input_tokens": max(uncached, 0),
            "cache_creation_input_tokens": cfg.cache_write_tokens,
            "cache_read_input_tokens": cfg.cached_tokens,
            "output_tokens": 1 if start else output + cfg.reasoning_tokens,
            "service_tier": "standard",
        }

    def message(self, content: list, stop: str | None, usage: dict) -> dict:
        return {
            "id": f"msg_{self.id}",
            "type": "message",
            "role": "assistant",
            "model": self.ex.body.get("model", "claude-mock"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    async def handle(self) -> None:
        fault = await self.preflight()
        if fault == "handled":
            return
        prompt = self.prompt()
        tokens = self.reply(fault)
        stop = "refusal" if fault == "filter" else "end_turn"
        if not self.ex.body.get("stream"):
            content = [{"type": "text", "text": "".join(tokens)}]
            await self.ex.json(200, self.message(content, stop, self.usage(prompt, len(tokens))))
            return
        ex = self.ex
        await ex.start_sse()
        await ex.sse(
            {
                "type": "message_start",
                "message": self.message([], None, self.usage(prompt, 0, start=True)),
            },
            event="message_start",
        )
        index = 0
        if self.cfg.reasoning_tokens:
            await ex.sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
                event="content_block_start",
            )
            await ex.sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "Let me think."},
                },
                event="content_block_delta",
            )
            await ex.sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "signature_delta", "signature": "c2ln"},
                },
                event="content_block_delta",
            )
            await ex.sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
            index = 1
        await ex.sse(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
            event="content_block_start",
        )
        await ex.sse({"type": "ping"}, event="ping")

        async def emit(token: str) -> None:
            await ex.sse(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": token},
                },
                event="content_block_delta",
            )

        async def midstream() -> None:
            await ex.sse(_anthropic_error("overloaded_error", "Overloaded"), event="error")

        await self.stream_tokens(tokens, fault, emit, midstream)
        if fault in {"cut", "midstream"}:
            return
        await ex.sse({"type": "content_block_stop", "index": index}, event="content_block_stop")
        # message_delta's usage is cumulative: the totals so far, not an increment.
        final = {k: v for k, v in self.usage(prompt, len(tokens)).items() if k != "service_tier"}
        if self.cfg.reasoning_tokens:
            final["output_tokens_details"] = {"thinking_tokens": self.cfg.reasoning_tokens}
        await ex.sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": final,
            },
            event="message_delta",
        )
        await ex.sse({"type": "message_stop"}, event="message_stop")
        await ex.end()


def _anthropic_error(kind: str, message: str) -> dict:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:20]}",
    }


class Gemini(_Dialect):
    def __init__(self, ex: _Exchange, model: str) -> None:
        super().__init__(ex)
        self.model = model

    async def auth_failed(self) -> bool:
        key = self.ex.key("x-goog-api-key")
        if not key or "invalid" in key:
            # Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401.
            await self.ex.json(400, _gemini_api_key_invalid())
            return True
        return False

    async def error(self, fault: str) -> None:
        retry_info = {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{30 if self.cfg.retry_after is None else self.cfg.retry_after}s",
        }
        table: dict[str, tuple[int, dict, dict[str, str]]] = {
            "401": (400, _gemini_api_key_invalid(), {}),
            "403": (
                403,
                _gemini_error(
                    403, "Permission denied: Consumer has been suspended.", "PERMISSION_DENIED"
                ),
                {},
            ),
            "400": (
                400,
                _gemini_error(
                    400,
                    "Unable to submit request because it has a temperature value of 9 but the supported range is from 0 (inclusive) to 2.0001 (exclusive).",
                    "INVALID_ARGUMENT",
                ),
                {},
            ),
            "429": (
                429,
                _gemini_error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    "RESOURCE_EXHAUSTED",
                    [retry_info],
                ),
                {},
            ),
            "quota": (
                429,
                _gemini_error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details. Quota exceeded for metric: generate_content_free_tier_requests, limit: 0",
                    "RESOURCE_EXHAUSTED",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [
                                {
                                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                    "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                                }
                            ],
                        }
                    ],
                ),
                {},
            ),
            "500": (
                500,
                _gemini_error(
                    500,
                    "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                    "INTERNAL",
                ),
                {},
            ),
            "503": (
                503,
                _gemini_error(
                    503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
                ),
                {},
            ),
            "529": (
                503,
                _gemini_error(
                    503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
                ),
                {},
            ),
            "context": (
                400,
                _gemini_error(
                    400,
                    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                    "INVALID_ARGUMENT",
                ),
                {},
            ),
        }
        await self.ex.json(*table[fault])

    async def models(self) -> None:
        if await self.auth_failed():
            return
        models = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            for m in ("gemini-mock", "gemini-mock-flash")
        ]
        await self.ex.json(200, {"models": models})

    def prompt(self) -> str:
        body = self.ex.body
        texts: list[str] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            texts.extend(str(p.get("text", "")) for p in system.get("parts", []))
        for content in body.get("contents") or []:
            texts.extend(
                str(p.get("text", "")) for p in content.get("parts", []) if isinstance(p, dict)
            )
        return " ".join(texts)

    def usage(self, prompt: str, output: int) -> dict[str, Any]:
        cfg = self.cfg
        inp = self.ex.input_tokens(prompt)
        usage: dict[str, Any] = {
            # promptTokenCount includes the cached tokens; thoughts are billed as
            # output but are not inside candidatesTokenCount.
            "promptTokenCount": inp,
            "candidatesTokenCount": output,
            "totalTokenCount": inp + output + cfg.reasoning_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": inp}],
        }
        if cfg.cached_tokens:
            usage["cachedContentTokenCount"] = cfg.cached_tokens
        if cfg.reasoning_tokens:
            usage["thoughtsTokenCount"] = cfg.reasoning_tokens
        return usage

    def chunk(self, text: str, finish: str | None, usage: dict) -> dict:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.id,
        }

    async def handle(self, *, stream: bool) -> None:
        fault = await self.preflight()
        if fault == "handled":
            return
        prompt = self.prompt()
        tokens = self.reply(fault)
        finish = "SAFETY" if fault == "filter" else "STOP"
        if not stream:
            await self.ex.json(
                200, self.chunk("".join(tokens), finish, self.usage(prompt, len(tokens)))
            )
            return
        ex = self.ex
        await ex.start_sse()
        sent = 0

        async def emit(token: str) -> None:
            nonlocal sent
            sent += 1
            partial = self.usage(prompt, sent)
            await ex.sse(self.chunk(token, None, partial))

        async def midstream() -> None:
            await ex.sse(
                _gemini_error(
                    503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
                )
            )

        await self.stream_tokens(tokens, fault, emit, midstream)
        if fault in {"cut", "midstream"}:
            return
        await ex.sse(self.chunk("", finish, self.usage(prompt, len(tokens))))
        await ex.end()


def _gemini_error(code: int, message: str, status: str, details: list | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _gemini_api_key_invalid() -> dict:
    return _gemini_error(
        400,
        "API key not valid. Please pass a valid API key.",
        "INVALID_ARGUMENT",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


class MockProviderThread:
    """Serves a MockProvider with uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: MockProvider | None = None, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.app = app or MockProvider()
        self.host = host
        config = uvicorn.Config(
            self.app, host=host, port=0, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="mock-provider", daemon=True)

    def start(self) -> MockProviderThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the mock provider did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
