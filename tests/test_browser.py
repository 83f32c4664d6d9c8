"""End to end in headless Chromium: the page connects, survives a server restart, and goes on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start_app
from rendering import render
from servers import free_port

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
        if Path(p).is_file()
    ),
    None,
)
# Flags for a sandboxed CI machine without a network: see shared notes on Chromium here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

#: The demo's integers a few times a second, so a page shows them soon.
TICKING = {"TICK_SECONDS": "0.2"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]


@pytest.fixture
def project(template_snapshot: Path, tmp_path: Path) -> Path:
    return render(template_snapshot, tmp_path / "realtime-app")  # package realtime_app


@pytest.fixture
def page_factory() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page
        finally:
            browser.close()


def test_page_reconnects_after_the_server_restarts(project: Path, page_factory: object) -> None:
    port = free_port()
    app = start_app(project, port, TICKING)
    page = page_factory()  # type: ignore[operator]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.querySelector('#state').dataset.state === 'open'")
        page.wait_for_function("Number(document.querySelector('#latest').textContent) >= 2")
        before = int(page.get_attribute("#latest", "data-id"))
        assert not page.is_visible("#retry")
        # Long backoffs, so that only the "Retry now" button brings the page back quickly.
        page.evaluate("window.wsClient.options.baseDelay = 600000")

        app.send_signal(signal.SIGKILL)  # the container dies without a word
        app.wait()
        page.wait_for_function(
            "document.querySelector('#state').dataset.state === 'reconnecting'", timeout=10_000
        )
        # A countdown to the next attempt, and a button not to wait for it.
        assert page.is_visible("#retry")
        assert "retrying in" in page.text_content("#detail")
        assert page.text_content("#members") == "?", "no stale presence count while disconnected"
        assert int(page.get_attribute("#detail", "data-seconds")) >= 0
        app = start_app(project, port, TICKING)
        page.wait_for_function(
            "document.querySelector('#state').dataset.state === 'reconnecting'", timeout=10_000
        )
        page.click("#retry")
        page.wait_for_function(
            "document.querySelector('#state').dataset.state === 'open'", timeout=5_000
        )
        page.wait_for_function(
            f"Number(document.querySelector('#latest').dataset.id) > {before}", timeout=10_000
        )
        assert int(page.text_content("#latest")) >= 1  # the new process's integers
        assert page.text_content("#reconnects").strip() == "1"
        page.wait_for_function("document.querySelector('#members').textContent === '1'")
        # The count started again: the page marks the restart instead of running backwards.
        page.wait_for_selector("#recent li.restart", timeout=5_000)
        assert "restarted" in page.text_content("#recent li.restart")
        assert not page.is_visible("#retry")
        assert errors == []
    finally:
        app.kill()
        app.wait()


def test_two_pages_chat_across_a_server_restart(project: Path, page_factory: object) -> None:
    port = free_port()
    app = start_app(project, port, TICKING)
    pages = [page_factory() for _ in range(2)]  # type: ignore[operator]
    errors: list[str] = []
    open_state = "document.querySelector('#state').dataset.state === 'open'"

    def say(page: object, name: str, text: str) -> None:
        page.fill("#name", name)  # type: ignore[attr-defined]
        page.fill("#text", text)  # type: ignore[attr-defined]
        page.click("#say button")  # type: ignore[attr-defined]

    def hears(page: object, text: str) -> None:
        page.wait_for_function(  # type: ignore[attr-defined]
            f"document.querySelector('#chat').textContent.includes({text!r})", timeout=10_000
        )

    try:
        for page in pages:
            page.on("pageerror", lambda error: errors.append(str(error)))  # type: ignore[attr-defined]
            page.goto(f"http://127.0.0.1:{port}/#room-1")  # type: ignore[attr-defined]
            page.wait_for_function(open_state)  # type: ignore[attr-defined]
        ann, bob = pages
        ann.wait_for_function("document.querySelector('#members').textContent === '2'")  # type: ignore[attr-defined]
        assert ann.text_content("#room") == "chat/room-1"  # type: ignore[attr-defined]
        say(ann, "Ann", "hello from Ann")
        hears(bob, "hello from Ann")
        hears(ann, "hello from Ann")  # a publisher hears its own message too

        app.send_signal(signal.SIGKILL)  # the container dies without a word
        app.wait()
        app = start_app(project, port, TICKING)
        for page in pages:  # no waiting for the backoff: reconnect now
            page.wait_for_function(  # type: ignore[attr-defined]
                "window.wsClient.state === 'open' || (window.wsClient.reconnectNow(), false)",
                polling=200,
                timeout=15_000,
            )
        assert bob.text_content("#reconnects").strip() == "1"  # type: ignore[attr-defined]
        bob.wait_for_function("document.querySelector('#members').textContent === '2'")  # type: ignore[attr-defined]
        say(bob, "Bob", "Bob is back")
        hears(ann, "Bob is back")
        assert errors == []
    finally:
        app.kill()
        app.wait()


def test_page_keeps_max_subscriptions_channels_across_a_restart(
    project: Path, page_factory: object
) -> None:
    """The browser client resubscribes to MAX_SUBSCRIPTIONS channels within its allowance (#24)."""
    port = free_port()
    env = {**TICKING, "MAX_SUBSCRIPTIONS": "250"}  # six times the allowance's burst of frames
    app = start_app(project, port, env)
    page = page_factory()  # type: ignore[operator]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("window.wsClient.state === 'open'")
        page.evaluate(
            """() => {
                const client = window.wsClient;
                window.taken = new Map();
                window.refusals = [];
                window.closes = [];
                client.on("subscribed", ({ channel }) => {
                    if (channel.startsWith("chat/many-"))
                        window.taken.set(channel, (window.taken.get(channel) ?? 0) + 1);
                });
                client.on("refused", (refusal) => window.refusals.push(refusal));
                client.on("state", ({ state, code }) => {
                    if (state !== "open") window.closes.push(code ?? null);
                });
                // As many as the server allows, the page's own chat room included.
                window.mine = 250 - client.channels.size;
                for (let n = 0; n < window.mine; n++) client.subscribe(`chat/many-${n}`);
            }"""
        )
        all_taken = (
            "window.taken.size === window.mine && [...window.taken.values()].every(n => n >= {})"
        )
        page.wait_for_function(all_taken.format(1), timeout=20_000)
        assert page.evaluate("window.wsClient.channels.size") == 250

        app.send_signal(signal.SIGKILL)  # the container dies without a word
        app.wait()
        app = start_app(project, port, env)
        page.wait_for_function(  # no waiting for the backoff: reconnect now
            "window.wsClient.state === 'open' || (window.wsClient.reconnectNow(), false)",
            polling=200,
            timeout=15_000,
        )
        page.wait_for_function(all_taken.format(2), timeout=20_000)
        assert page.evaluate("window.refusals") == []
        assert page.evaluate("window.wsClient.channels.size") == 250
        assert 4008 not in page.evaluate("window.closes")  # never past its allowance
        assert page.evaluate("window.wsClient.state") == "open"
        assert errors == []
    finally:
        app.kill()
        app.wait()


def test_socketio_view_recovers_after_the_server_restarts(
    template_snapshot: Path, tmp_path: Path, page_factory: object
) -> None:
    """With socketio_server, the page's Socket.IO view (the official client, no build step)."""
    project = render(template_snapshot, tmp_path / "realtime-app", socketio_server=True)
    port = free_port()
    app = start_app(project, port, TICKING)
    page = page_factory()  # type: ignore[operator]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_state = "document.querySelector('#sio-state').dataset.state === 'open'"
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(open_state)
        page.wait_for_function("Number(document.querySelector('#sio-latest').textContent) >= 2")
        assert page.evaluate("window.socketioClient.io.engine.transport.name") == "websocket"
        before = int(page.get_attribute("#sio-latest", "data-id"))

        app.send_signal(signal.SIGKILL)  # the container dies without a word
        app.wait()
        page.wait_for_function(
            "document.querySelector('#sio-state').dataset.state === 'reconnecting'",
            timeout=10_000,
        )
        app = start_app(project, port, TICKING)
        page.wait_for_function(open_state, timeout=15_000)
        page.wait_for_function(
            f"Number(document.querySelector('#sio-latest').dataset.id) > {before}",
            timeout=10_000,
        )
        # The raw WebSocket view beside it goes on too.
        page.wait_for_function("document.querySelector('#state').dataset.state !== 'closed'")
        assert errors == []
    finally:
        app.kill()
        app.wait()


SECRET = "a-secret-of-at-least-thirty-two-characters"  # noqa: S105 - a test secret


def mint(secret: str, claims: dict[str, object]) -> str:
    """An HS256 token as the app's tokens.mint_token makes it (the app's own test checks that)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + part(signature)


def test_page_renews_its_token_and_shows_unauthorized(project: Path, page_factory: object) -> None:
    """A page with a token provider: 2-s tokens closed with 4001 and renewed, then refused."""
    port = free_port()
    app = start_app(project, port, {**TICKING, "AUTH_SECRET": SECRET})
    page = page_factory()  # type: ignore[operator]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    issued: list[str] = []
    signing = {"secret": SECRET}

    def token_route(route: object) -> None:
        claims = {"sub": "reader", "exp": int(time.time()) + 2}
        issued.append(mint(signing["secret"], claims))
        route.fulfill(status=200, body=issued[-1], headers={"Cache-Control": "no-store"})  # type: ignore[attr-defined]

    # What a WordPress page would do: ask a REST route of its own for a fresh token.
    page.route("**/test-token", token_route)
    page.add_init_script(
        "window.wsTokenProvider = () =>"
        " fetch('/test-token', {cache: 'no-store'}).then((r) => r.text());"
    )
    state = "document.querySelector('#state').dataset.state"
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(f"{state} === 'open'")
        # Its token expires: the server closes with 4001, the page comes back with a new one.
        page.wait_for_function("window.wsClient.reconnects >= 2", timeout=20_000)
        page.wait_for_function(f"{state} === 'open'", timeout=5_000)
        assert len(issued) >= 3
        before = int(page.get_attribute("#latest", "data-id"))
        page.wait_for_function(
            f"Number(document.querySelector('#latest').dataset.id) > {before}", timeout=5_000
        )
        # The site's secret changes under it: one renewal, one retry, then "unauthorized".
        signing["secret"] = "a-secret-the-server-was-never-given-0123"  # noqa: S105 - a test one
        renewed_at = len(issued)
        page.wait_for_function(f"{state} === 'unauthorized'", timeout=20_000)
        assert "refused the token" in page.text_content("#detail")
        assert page.is_visible("#retry")
        time.sleep(1)  # nothing more happens: no silent loop
        assert page.evaluate("window.wsClient.state") == "unauthorized"
        assert len(issued) - renewed_at == 2
        assert errors == []
    finally:
        app.kill()
        app.wait()
