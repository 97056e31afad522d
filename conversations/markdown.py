"""Render untrusted model output (Markdown) to HTML that is safe to show.

Model output is attacker-influenced (prompt injection, pasted web pages), so the pipeline
is defensive in depth:

1. markdown-it-py parses CommonMark (+ tables, strikethrough) with raw HTML disabled, so any
   tag in the source is shown as text.
2. Our renderer never emits ``<img>``: an image URL in model output would be fetched by the
   reader's browser and can exfiltrate conversation data in its query string. Images become
   ordinary links that the user has to click.
3. Fenced code is highlighted server-side by Pygments with CSS classes only; the site's
   Content-Security-Policy forbids inline ``style`` attributes.
4. Whatever the renderer produced, nh3 (ammonia) re-parses it and keeps only an explicit
   allow-list of tags, attributes, classes and URL schemes. This is the security boundary;
   steps 1-3 only aim to make its job a no-op.

Everything expensive (parser, formatter, sanitizer) is built once at import: the chat page
renders hundreds of messages per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_all_lexers, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = ["pygments_css", "render_markdown"]

# The class on every code block's <pre>, and the scope of the stylesheet from pygments_css().
HIGHLIGHT_CLASS = "highlight"
PYGMENTS_STYLE = "default"  # A light theme, matching the site.
# For readers whose system is in dark mode (the site follows prefers-color-scheme).
PYGMENTS_DARK_STYLE = "github-dark"

URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"

# Token.meta key set on images that are part of a link's label.
_IN_LINK = "llmchat_in_link"

# A URL scheme as RFC 3986 defines it; anything without one is relative and allowed.
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def _is_allowed_url(url: str) -> bool:
    # Mirrors nh3's url_schemes check, so that an image whose URL nh3 would strip becomes
    # plain text here instead of an <a> without href that still looks like a link.
    match = _SCHEME_RE.match(url)
    return match is None or match.group(1).lower() in URL_SCHEMES


@lru_cache(maxsize=256)
def _lexer_for(language: str) -> Lexer | None:
    # Exact alias lookup only: guessing a language from content is slow and picks wrong
    # lexers for short snippets. The cache is bounded because the name is untrusted input.
    # Lexer instances are reusable: get_tokens() keeps its state in local variables.
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _language_class(lexer: Lexer) -> str:
    # The canonical alias rather than what the model wrote ("py", "Python3"), so that the
    # sanitizer can allow-list every class that can legitimately appear on <code>.
    return "language-" + lexer.aliases[0]


# nowrap: we write the <pre><code> wrapper ourselves, and Pygments' own wrapper would add a
# <div>. Classes only, never noclasses=True, whose inline styles the CSP would block.
_FORMATTER = HtmlFormatter(nowrap=True, style=PYGMENTS_STYLE, cssclass=HIGHLIGHT_CLASS)
_DARK_FORMATTER = HtmlFormatter(nowrap=True, style=PYGMENTS_DARK_STYLE, cssclass=HIGHLIGHT_CLASS)


class _SafeRenderer(RendererHTML):
    """markdown-it's HTML renderer, without images and with Pygments for fenced code."""

    def fence(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        # Like the stock renderer: the language is the info string's first word, after
        # resolving backslash escapes and entities (so "c\\+\\+" means "c++").
        info = unescapeAll(token.info).split(maxsplit=1)
        language = info[0] if info else ""
        lexer = _lexer_for(language) if language else None
        if lexer is None:
            return _code_block_html(escapeHtml(token.content), None)
        return _code_block_html(highlight(token.content, lexer, _FORMATTER), lexer)

    def code_block(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        # Indented code has no language; it only gets the same wrapper so it looks the same.
        return _code_block_html(escapeHtml(tokens[idx].content), None)

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        # Never an <img>: loading it is an exfiltration channel. Show a link to the image,
        # labelled by its alt text (or the URL when the alt text is empty).
        token = tokens[idx]
        url = str(token.attrGet("src") or "")
        alt = self.renderInlineAsText(token.children, options, env)
        label = escapeHtml(alt or url)
        # markdown-it has already refused javascript:/vbscript:/file: and non-image data:
        # URLs (the "image" stays literal text), but it accepts data:image/png and any other
        # scheme; those become plain text rather than a link nh3 would strip to no href.
        # Inside a link ([![badge](img)](url)) the label alone avoids a nested <a>.
        if not url or not _is_allowed_url(url) or token.meta.get(_IN_LINK):
            return label
        title = token.attrGet("title")
        title_attr = f' title="{escapeHtml(str(title))}"' if title else ""
        return f'<a href="{escapeHtml(url)}"{title_attr}>{label}</a>'


def _mark_images_in_links(state: StateCore) -> None:
    # One linear pass per message, so that the image renderer does not have to scan back
    # through the tokens for every image (quadratic on a paragraph of many images).
    for block in state.tokens:
        depth = 0
        for token in block.children or ():
            if token.type == "link_open":
                depth += 1
            elif token.type == "link_close":
                depth -= 1
            elif token.type == "image" and depth > 0:
                token.meta[_IN_LINK] = True


def _code_block_html(code_html: str, lexer: Lexer | None) -> str:
    code_class = f' class="{_language_class(lexer)}"' if lexer is not None else ""
    return f'<pre class="{HIGHLIGHT_CLASS}"><code{code_class}>{code_html}</code></pre>\n'


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt(
        "commonmark",
        {
            # Raw HTML in the source is rendered as text, never passed through.
            "html": False,
            # Chat models write single newlines meaning line breaks.
            "breaks": True,
            # nh3 serialises HTML5 anyway; "<br />" would only be rewritten.
            "xhtmlOut": False,
        },
        renderer_cls=_SafeRenderer,
    )
    md.enable(["table", "strikethrough"])
    md.core.ruler.after("inline", "mark_images_in_links", _mark_images_in_links)
    return md


_MARKDOWN = _build_markdown()

# Every class our renderer can emit; anything else (e.g. Pygments' "nf-Custom" classes for
# non-standard token types, which no stylesheet rule would match) is dropped by nh3.
_CODE_CLASSES = frozenset(
    "language-" + aliases[0] for _name, aliases, _files, _mimes in get_all_lexers() if aliases
)
_TOKEN_CLASSES = frozenset(cls for cls in STANDARD_TYPES.values() if cls)

_CLEANER = nh3.Cleaner(
    tags={
        "p",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "strong",
        "em",
        "del",
        "s",
        "code",
        "pre",
        "span",
        "blockquote",
        "ul",
        "ol",
        "li",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    },
    # Drop these together with their content: their text is never meant to be shown.
    clean_content_tags={"script", "style"},
    # No "class" here: ammonia panics (at clean time) when a tag has both a "class" attribute
    # and allowed_classes. No "rel" either: link_rel sets it and nh3 refuses both. The table
    # alignment markdown-it writes as style="text-align:..." is dropped on purpose (CSP).
    attributes={"a": {"href", "title"}, "ol": {"start"}},
    allowed_classes={
        "pre": {HIGHLIGHT_CLASS},
        "code": _CODE_CLASSES,
        "span": _TOKEN_CLASSES,
    },
    url_schemes=set(URL_SCHEMES),
    link_rel=LINK_REL,
    strip_comments=True,
)


def render_markdown(text: str) -> str:
    """Render untrusted Markdown to sanitised HTML, ready to be marked safe by the caller."""
    return _CLEANER.clean(_MARKDOWN.render(text))


def pygments_css() -> str:
    """The stylesheet for the highlighted code blocks, scoped under ``.highlight``.

    Unlike ``HtmlFormatter.get_style_defs()``, this leaves out the unscoped line-number and
    ``pre { line-height }`` rules, which would restyle every <pre> on the site.
    """
    selector = "." + HIGHLIGHT_CLASS
    light = [
        *_FORMATTER.get_background_style_defs(selector),
        *_FORMATTER.get_token_style_defs(selector),
    ]
    dark = [
        *_DARK_FORMATTER.get_background_style_defs(selector),
        *_DARK_FORMATTER.get_token_style_defs(selector),
    ]
    # A token the dark style leaves alone must not keep its light colour.
    styled = {line.split("{")[0].strip() for line in dark}
    dark += [
        f"{rule} {{ color: inherit }}"
        for rule in dict.fromkeys(line.split("{")[0].strip() for line in light)
        if rule.startswith(selector + " .") and rule not in styled
    ]
    return (
        "\n".join(light)
        + "\n@media (prefers-color-scheme: dark) {\n"
        + "\n".join("  " + line for line in dark)
        + "\n}\n"
    )
