"""Playwright over the Debian Chromium (never a downloaded browser)."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# What the machine's own probe uses: headless, and none of Chromium's background
# connections to Google (the network is closed; the tests stay on loopback).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def page(live_server: Any) -> Iterator[Any]:
    """A Chromium page on the WSGI live server."""
    yield from _page(live_server.url)


@pytest.fixture
def asgi_page(asgi_live_server: Any) -> Iterator[Any]:
    """A Chromium page on the ASGI server (streaming replies, Stop)."""
    yield from _page(asgi_live_server.url)


def _page(base_url: str) -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls are still plain synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(base_url=base_url)
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.csp_violations = []  # type: ignore[attr-defined]
            page.external_requests = []  # type: ignore[attr-defined]

            def on_console(msg: Any) -> None:
                if "Content Security Policy" in msg.text:
                    page.csp_violations.append(msg.text)  # type: ignore[attr-defined]

            def on_request(request: Any) -> None:
                if not request.url.startswith((base_url, "data:")):
                    page.external_requests.append(request.url)  # type: ignore[attr-defined]

            page.on("console", on_console)
            page.on("request", on_request)
            yield page
            context.close()
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target
