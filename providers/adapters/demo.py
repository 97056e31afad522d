"""The offline demo provider: free, no key, no network.

It streams a helpful canned reply (with an echo of the question) at a realistic
pace, so a fresh `make run` chats out of the box. Operators turn it off with
DEMO_PROVIDER=false.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from django.conf import settings

from providers.base import (
    ChatRequest,
    Credentials,
    Event,
    Finish,
    Provider,
    ProviderError,
    TextDelta,
    Usage,
    UsageReport,
)

DEMO_MODEL = "demo-echo"

_REPLY = """\
**This is the offline demo model** — it runs inside llmchat and costs nothing.

You wrote:

> {quote}

To talk to a real model, add an API key for OpenAI, Anthropic or Google Gemini on the \
**Keys** page (or ask your operator to enable a server key), then pick that model above. \
Every reply will then show its input, cached, output and reasoning tokens and what it cost.
"""


def _count(text: str) -> int:
    # About four characters a token, like the real tokenizers on English text.
    return max(1, round(len(text) / 4))


def demo_reply(request: ChatRequest) -> str:
    last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    quote = re.sub(r"\s+", " ", last).strip()
    if len(quote) > 280:
        quote = quote[:279] + "…"
    return _REPLY.format(quote=quote or "(nothing)")


class DemoProvider(Provider):
    name = "demo"
    label = "Offline demo"
    needs_key = False

    def server_credentials(self) -> Credentials | None:
        return Credentials("", "", "none")

    def map_error(self, exc: BaseException) -> ProviderError | None:
        return None

    async def _check_key(self, creds: Credentials) -> None:
        return None

    async def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        reply = demo_reply(request)
        pieces = re.findall(r"\s*\S+", reply) + ["\n"] * reply.endswith("\n")
        if request.max_output_tokens:
            pieces = pieces[: request.max_output_tokens]
        delay = settings.DEMO_TOKEN_DELAY
        for i, piece in enumerate(pieces):
            if delay:
                await asyncio.sleep(delay * (4 if i == 0 else 1))
            yield TextDelta(piece)
        prompt = request.system + "".join(m.content for m in request.messages)
        yield UsageReport(Usage(input_tokens=_count(prompt), output_tokens=_count("".join(pieces))))
        yield Finish("stop")
