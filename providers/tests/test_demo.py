"""The offline demo: it quotes the question as written and shows off the rendering."""

import re

from conversations.markdown import render_markdown
from providers.adapters.demo import QUOTE_LIMIT, demo_reply
from providers.base import ChatMessage, ChatRequest


def reply_to(text: str) -> str:
    return demo_reply(ChatRequest(model="demo-echo", messages=[ChatMessage("user", text)]))


def test_the_question_is_quoted_as_written_not_rendered() -> None:
    question = "# Not a heading\nline two\n\n    indented\n```js\nlet x = 1;\n```\n**not bold**"
    reply = reply_to(question)
    assert question in reply  # every line, nothing joined or cut
    html = render_markdown(reply)
    assert "<h1" not in html
    assert "# Not a heading" in html
    assert "**not bold**" in html
    # The question's own fence does not end the quote early: one quote block.
    assert html.count("let x = 1;") == 1


def test_a_long_question_is_cut_at_a_line_and_says_how_much_is_left() -> None:
    question = "\n".join(f"line {i}" for i in range(600))
    reply = reply_to(question)
    quoted = re.search(r"```text\n(.*?)\n```", reply, re.S)
    assert quoted is not None
    assert len(quoted.group(1)) <= QUOTE_LIMIT
    assert question.startswith(quoted.group(1) + "\n")
    left = len(question) - len(quoted.group(1))
    assert f"and {left:,} more characters" in reply


def test_the_reply_shows_a_list_code_and_a_table() -> None:
    html = render_markdown(reply_to("Hello"))
    assert "<strong>This is the offline demo model</strong>" in html
    assert "<ul>" in html
    assert "<table>" in html
    assert 'class="highlight' in html  # highlighted code
