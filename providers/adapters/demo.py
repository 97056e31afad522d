"""The offline demo provider: free, no key, no network.

It streams a canned reply at a realistic pace, so a fresh `make run` chats out of
the box: the question quoted back as written, then a showcase of how replies are
rendered (a list, highlighted code, a table) and what their counters mean.
Operators turn it off with DEMO_PROVIDER=false.
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

_INTRO = """\
**This is the offline demo model** — it runs inside llmchat and costs nothing.

You wrote:

"""

# What replies look like here: a list, code, a table, rendered as a real model's are.
_SHOWCASE = """
Replies are Markdown, rendered as they stream:

- **lists**, *emphasis*, `inline code` and [links](https://example.com)
- code blocks, highlighted:

```python
def cost(input_tokens, output_tokens, input_per_1m, output_per_1m):
    return (input_tokens * input_per_1m + output_tokens * output_per_1m) / 1_000_000
```

| Under each reply | What it counts |
|---|---|
| in | your message, the history and the system prompt sent with it |
| cached | input the provider had recently seen, billed at a discount |
| out | the reply, with any reasoning tokens |
| $ | what the call cost, at the price in effect when it was made |

To talk to a real model, add an API key for OpenAI, Anthropic or Google Gemini on the \
**Keys** page (or ask your operator to enable a server key), then pick that model above.
"""

QUOTE_LIMIT = 2000
"""The most of the user's message the demo quotes back, in characters."""


def _count(text: str) -> int:
    # About four characters a token, like the real tokenizers on English text.
    return max(1, round(len(text) / 4))


def _quoted(text: str) -> str:
    """The message as it was written, lines and all, in a code block: quoted, not
    rendered (a `#` line stays a line); a fence longer than any run of backticks in it."""
    text = text.strip("\n") or "(nothing)"
    note = ""
    if len(text) > QUOTE_LIMIT:
        cut = text.rfind("\n", 0, QUOTE_LIMIT)
        kept = text[: cut if cut > QUOTE_LIMIT // 2 else QUOTE_LIMIT]
        note = f"\n*… and {len(text) - len(kept):,} more characters.*\n"
        text = kept
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}\n{note}"


def demo_reply(request: ChatRequest) -> str:
    last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    return _INTRO + _quoted(last) + _SHOWCASE


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
