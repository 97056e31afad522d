"""Every JSON endpoint, with every method, fed what hypothesis draws: arbitrary JSON
(deep nesting, huge numbers, NaN, lone surrogates, NUL, long text, wrong types),
bodies that are not JSON, odd content types and odd ids in the path. Whatever
comes in, the answer is never a 5xx, and every error is JSON with a code and a
message. The routes come from the URLconf: a new endpoint is fuzzed without
being listed here, and must be documented in docs/api.md."""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations.models import Conversation

CSRF_TOKEN = "f" * 32
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def api_routes() -> dict[str, Callable[..., Any]]:
    """Every route under /api/ in the URLconf, with its view."""
    found: dict[str, Callable[..., Any]] = {}

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                found["/" + route] = pattern.callback

    walk(get_resolver().url_patterns, "")
    return found


ROUTES = api_routes()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
FIELDS = [
    "conversation",
    "provider",
    "model",
    "message",
    "system_prompt",
    "client_message_id",
    "regenerate",
    "title",
    "key",
    "base_url",
    "parameters",
    "render",
    "pinned",
    "archived",
    "name",
    "default",
    "favourite",
]
PROVIDERS = ["demo", "openai", "anthropic", "google", "compatible"]

# Text of every kind, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
texts = st.one_of(
    any_text,
    st.sampled_from(
        [
            "",
            "\ud800",
            "a\udfffb",
            "\x00",
            "nul\x00inside",
            "x" * 5_000,
            "demo-echo",
            "gpt-4o",
            "sk-test-0000000000000000",
            "http://127.0.0.1:9/v1",
            "http://[::1]/",
            "file:///etc/passwd",
            "\U0001f600",
            *PROVIDERS,
        ]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(),  # NaN and the infinities too
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
# Objects with the fields the endpoints read, drawn from anything: the code past
# the body's checks is reached too, not only the refusals.
objects = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(FIELDS, values),
        "provider": st.sampled_from(PROVIDERS) | values,
        "model": st.sampled_from(["demo-echo", "gpt-4o", ""]) | values,
        "message": texts,
    },
)
raw_bodies = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"",
            b"[" * 12_000,
            b'{"message": ' + b"[" * 12_000,
            b'{"a": ' * 2_000 + b"1" + b"}" * 2_000,
            b"null",
            b'"\\ud800"',
            b'{"title": "\xed\xa0\x80"}',
            b'{"conversation": NaN}',
            b'{"conversation": 1' + b"0" * 5_000 + b"}",
            b"\xff\xfe{\x00}\x00",
            b"message=hi&key=sk",
            b"--x\r\nbroken",
        ]
    ),
)
bodies = st.one_of(
    objects.map(json.dumps).map(str.encode),
    values.map(json.dumps).map(str.encode),
    raw_bodies,
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "multipart/form-data",
    ]
)
queries = st.dictionaries(
    st.sampled_from(["q", "format", "since", "until"]),
    st.one_of(
        st.text(max_size=20),
        st.sampled_from(["md", "json", "2026-01-01", "9999-12-31", "0001-01-01", "\x00"]),
    ),
    max_size=3,
)
ids = st.one_of(
    st.sampled_from(
        ["{own}", "1", "0", "-1", str(2**63 - 1), str(2**63), "9" * 30, "1.5", "abc", "%00"]
    ),
    st.integers(min_value=0, max_value=2**80).map(str),
)
path_texts = st.one_of(
    st.sampled_from([*PROVIDERS, "nope", "%00", "%ED%A0%80", "..", "a" * 300]),
    any_text.filter(bool).map(lambda t: quote(t, safe="", errors="surrogatepass")),
)
PATH_VALUES = {"id": ids, "str": path_texts}
PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")


def paths(route: str) -> st.SearchStrategy[str]:
    """The route with its parameters drawn; a converter the fuzzer does not know
    fails the test, so that a new kind of parameter is fuzzed too."""
    converters = [converter or "str" for converter, _ in PARAMETER.findall(route)]
    unknown = set(converters) - set(PATH_VALUES)
    assert not unknown, f"{route}: teach the fuzz test the converter(s) {unknown}"
    parts = PARAMETER.split(route)[::3]
    drawn = st.tuples(*(PATH_VALUES[c] for c in converters))
    return drawn.map(lambda vs: "".join(p + v for p, v in zip(parts, [*vs, ""], strict=True)))


def finish(response: Any) -> None:
    """Close a reply's stream without reading it, as a client that leaves: its turn
    is closed as stopped. (Not request_finished's closing of the test's database
    connection, as Django's test client does too.)"""
    if response.streaming:
        request_finished.disconnect(close_old_connections)
        try:
            response.close()
        finally:
            request_finished.connect(close_old_connections)


def assert_json_error_or_success(response: Any, request: str) -> None:
    assert response.status_code < 500, f"{request} → {response.status_code}"
    if response.status_code < 400:
        return
    assert response["Content-Type"] == "application/json", f"{request} → not JSON"
    if request.startswith("HEAD"):
        return  # (the same answer as GET, without its body)
    error = json.loads(response.content)["error"]
    assert isinstance(error["code"], str), request
    assert error["code"], request
    assert isinstance(error["message"], str), request
    assert error["message"], request


@pytest.fixture
def fuzz_client(alice: Any, settings: Any) -> tuple[Client, int]:
    """Alice, signed in, through the CSRF check; her conversation's id. The demo
    provider is the only one with a key (none are set), so no call leaves."""
    settings.CHAT_RATE_LIMIT = ""
    settings.DEMO_TOKEN_DELAY = 0
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies[django_settings.CSRF_COOKIE_NAME] = CSRF_TOKEN
    own = Conversation.objects.create(user=alice, title="Mine", provider="demo", model="demo")
    return client, own.pk


FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_input_makes_an_endpoint_fail_or_answer_anything_but_json(
    route: str, fuzz_client: tuple[Client, int]
) -> None:
    client, own = fuzz_client

    @FUZZ
    @given(
        path=paths(route),
        method=st.sampled_from(METHODS),
        body=bodies,
        content_type=content_types,
        query=queries,
        csrf=st.integers(0, 9).map(bool),  # mostly with the token
    )
    def fuzz(
        path: str, method: str, body: bytes, content_type: str, query: dict[str, str], csrf: bool
    ) -> None:
        url = path.replace("{own}", str(own))
        if query:
            url += "?" + urlencode(query)
        headers = {"X-CSRFToken": CSRF_TOKEN} if csrf else {}
        response = client.generic(method, url, body, content_type=content_type, headers=headers)
        try:
            assert_json_error_or_success(response, f"{method} {url} {content_type!r} {body[:80]!r}")
        finally:
            finish(response)

    fuzz()


def test_the_fuzzed_routes_are_every_api_route_and_documented() -> None:
    """Each route under /api/ is fuzzed (the list above is the URLconf's), answers
    through api_view (JSON errors, 401, 405), and each of its methods is in
    docs/api.md, which documents no endpoint that does not exist."""
    assert len(ROUTES) >= 9
    routed = set()
    for route, view in ROUTES.items():
        methods = getattr(view, "api_methods", None)
        assert methods, f"{route} is not an api_view"
        routed |= {f"{method} {PARAMETER.sub('<>', route)}" for method in methods}
    endpoint = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^`?\s]*)")
    documented = {
        f"{method} {re.sub(r'<[^>]*>', '<>', path)}"
        for method, path in endpoint.findall(DOCS.read_text())
    }
    assert routed == documented
