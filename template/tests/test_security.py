"""Attacks against the app running as a real process: each is refused, and nobody else notices.

docs/security.md lists each attack, what is expected and the test here that proves it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import PACKAGE, Server, free_port, start_server
from test_publish import TOKEN, post

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def handshake(server: Server, path: str = "/_ws/", headers: str = "") -> tuple[str, str]:
    """Send a WebSocket handshake by hand; return the status line and the whole head."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        head = sock.recv(65536).decode("latin-1").split("\r\n\r\n", 1)[0]
    return head.split("\r\n", 1)[0], head


def wait_for_log(server: Server, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log:
            if text in line:
                return line
        assert time.monotonic() < deadline, f"no {text!r} in {server.log}"
        time.sleep(0.05)


# --- who may connect ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, "101"),  # servers and the Python client send no Origin
        ("http://127.0.0.1:{port}", "101"),  # the app's own page
        ("https://evil.example", "403"),
        ("null", "403"),  # sandboxed frames, local files
        ("https://partner.example", "101"),  # listed in ALLOWED_ORIGINS
        ("http://partner.example", "403"),  # the listed origin is https only
    ],
)
def test_origin_is_checked_before_any_101(
    make_server: Any, origin: str | None, status: str
) -> None:
    server: Server = make_server(ALLOWED_ORIGINS="https://partner.example")
    header = "" if origin is None else f"Origin: {origin.format(port=server.port)}\r\n"
    assert handshake(server, headers=header)[0].split()[1] == status
    if status == "403":
        wait_for_log(server, "refused a WebSocket from origin")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # A DNS-rebinding page: its name resolves to the app, so Host and Origin agree.
        ("Origin: http://rebound.example\r\n", "403"),
        ("X-Forwarded-Host: rebound.example\r\nOrigin: https://rebound.example\r\n", "403"),
        ("Origin: https://news.example.com\r\n", "101"),  # in OWN_ORIGINS
    ],
)
def test_only_own_origins_are_the_apps_own_not_host_or_forwarded_host(
    make_server: Any, headers: str, status: str
) -> None:
    server: Server = make_server(OWN_ORIGINS="https://news.example.com")
    request = (
        f"GET /_ws/ HTTP/1.1\r\nHost: rebound.example\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        assert sock.recv(65536).split(b" ")[1].decode() == status


@pytest.mark.parametrize(
    ("version", "extra", "status"),
    [
        ("HTTP/1.0", "", "400"),
        ("HTTP/1.1", "Upgrade: websocket\r\n", "400"),
        ("HTTP/1.1", f"Sec-WebSocket-Key: {KEY}\r\n", "400"),
        ("HTTP/1.1", "Sec-WebSocket-Version: 13\r\n", "400"),
        ("HTTP/1.1", "", "426"),  # version 8
        ("HTTP/1.1", "", "101"),
    ],
    ids=["http-1.0", "two-upgrade", "two-key", "two-version", "version-8", "valid"],
)
def test_handshakes_rfc_6455_refuses_get_no_101(
    server: Server, version: str, extra: str, status: str
) -> None:
    websocket_version = "8" if status == "426" else "13"
    request = (
        f"GET /_ws/ {version}\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: {websocket_version}\r\n{extra}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        head = sock.recv(65536).decode("latin-1")
    assert head.split(" ")[1] == status
    if status == "426":
        assert "Sec-WebSocket-Version: 13" in head


@pytest.mark.parametrize(
    "path",
    [
        "/_ws/../index",
        "/_ws/%2e%2e/index",
        "/_ws/%2E%2E/",
        "/%5Fws/",
        "//_ws/../x",
        "/_ws/\\..\\admin",
        "/_ws/%5C..%5Cadmin",
    ],
)
def test_paths_a_normalising_proxy_would_not_route_get_no_101(server: Server, path: str) -> None:
    assert handshake(server, path)[0] == "HTTP/1.1 404 Not Found"


def test_connections_past_the_cap_get_503_and_the_health_check_goes_on(make_server: Any) -> None:
    server: Server = make_server(MAX_CONNECTIONS="3")

    async def scenario() -> tuple[int, str | None]:
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(f"{server.ws_base}/_ws/{i}") for i in range(3)]
            try:
                await session.ws_connect(f"{server.ws_base}/_ws/4")
            except aiohttp.WSServerHandshakeError as error:
                retry = error.headers.get("Retry-After") if error.headers else None
                refused = (error.status, retry)
            for ws in clients:
                await ws.close()
            return refused

    assert asyncio.run(scenario()) == (503, "5")
    assert server.get("/cache-healthcheck?")[0] == 200
    wait_for_log(server, "(MAX_CONNECTIONS)")


def test_half_sent_requests_and_idle_connections_are_closed(server: Server) -> None:
    half_sent = socket.create_connection(("127.0.0.1", server.port))
    half_sent.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    idle = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    for sock in (half_sent, idle):
        sock.settimeout(20)
        with sock:
            assert sock.recv(65536) == b""  # closed by the server, without an answer
    assert time.monotonic() - started < 15  # within seconds, not the 75 s of aiohttp's default


# --- who a connection is -------------------------------------------------------------------

SECRET = "a-secret-of-at-least-thirty-two-characters"  # noqa: S105 - a test secret
tokens = importlib.import_module(f"{PACKAGE}.tokens")


@pytest.fixture(scope="module")
def guarded() -> Iterator[Server]:
    """A server whose demo service requires a token signed with ``SECRET``."""
    running = start_server(AUTH_SECRET=SECRET)
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ("Sec-WebSocket-Protocol: bearer, {token}\r\n", "/_ws/", "101"),
        ("Cookie: theme=dark; ws_token={token}\r\n", "/_ws/", "101"),
        ("Sec-WebSocket-Protocol: bearer, {expired}\r\n", "/_ws/", "401"),
        ("Sec-WebSocket-Protocol: bearer, {forged}\r\n", "/_ws/", "401"),
    ],
    ids=["subprotocol", "cookie", "expired", "forged"],
)
def test_with_auth_secret_a_connection_needs_a_valid_token(
    guarded: Server, headers: str, path: str, status: str
) -> None:
    values = {
        "token": tokens.issue_token(SECRET, "user-7", 60),
        "expired": tokens.issue_token(SECRET, "user-7", 60, now=time.time() - 120),
        "forged": tokens.issue_token("x" * 32, "user-7", 60),
    }
    line, head = handshake(guarded, path.format(**values), headers.format(**values))
    assert line.split()[1] == status
    if "Sec-WebSocket-Protocol" in headers and status == "101":
        assert "\r\nSec-WebSocket-Protocol: bearer" in head  # browsers require the echo


def test_a_token_in_the_query_string_is_never_read(guarded: Server) -> None:
    # The query string is logged: a token there, valid or forged, is as if there were none
    # (whatever the service makes of no token: an anonymous reader by default).
    without = handshake(guarded, "/_ws/", "")[0].split()[1]
    for secret in (SECRET, "x" * 32):
        token = tokens.issue_token(secret, "user-7", 60)
        assert handshake(guarded, f"/_ws/?token={token}", "")[0].split()[1] == without


def test_the_python_client_sends_a_fresh_token_at_every_connection(guarded: Server) -> None:
    client_module = importlib.import_module(f"{PACKAGE}.client")
    issued: list[str] = []

    def protocols() -> list[str]:
        issued.append(tokens.issue_token(SECRET, "user-7", 60))
        return ["bearer", issued[-1]]

    async def scenario() -> list[Any]:
        async with client_module.ReconnectingClient(
            f"{guarded.ws_base}/_ws/", protocols=protocols
        ) as client:
            received = []
            async for message in client:
                received.append(message)
                if len(received) == 2:
                    return received
        return received

    received = asyncio.run(scenario())
    assert len(received) == 2
    assert len(issued) == 1


# --- what a connection may do -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["messages", "pings"])
def test_a_flooding_client_is_closed_with_4008_and_nobody_else_notices(
    server: Server, kind: str
) -> None:
    async def scenario() -> tuple[int | None, list[int]]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/_ws/calm") as calm,
            session.ws_connect(f"{server.ws_base}/_ws/flood", autoping=False) as flood,
        ):
            for n in range(500):
                if flood.closed:
                    break
                await (flood.ping() if kind == "pings" else flood.send_str(f"spam {n}"))
            while (await flood.receive(timeout=10)).type is not aiohttp.WSMsgType.CLOSE:
                pass
            integers: list[int] = []
            while len(integers) < 5:
                message = json.loads(await calm.receive_str(timeout=5))
                if "id" in message:
                    integers.append(message["data"])
            return flood.close_code, integers

    code, integers = asyncio.run(scenario())
    assert code == 4008  # too much, too soon: not 1008, which clients take as final
    assert integers == list(range(integers[0], integers[0] + 5))


def test_a_client_within_its_allowance_is_never_closed(server: Server) -> None:
    async def scenario() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/_ws/polite") as ws,
        ):
            for n in range(30):  # 10 a second, half the default allowance
                await ws.send_str(f"hello {n}")
                await ws.ping()
                await asyncio.sleep(0.1)
            message = await ws.receive(timeout=5)
            return message.type is aiohttp.WSMsgType.TEXT and not ws.closed

    assert asyncio.run(scenario())


def masked_close(code: int) -> bytes:
    mask = os.urandom(4)
    payload = struct.pack("!H", code)
    return bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("sent", "answered"), [(1000, 1000), (4000, 4000), (1006, 1002), (5000, 1002)]
)
def test_close_codes_a_client_may_not_send_are_answered_with_1002(
    server: Server, sent: int, answered: int
) -> None:
    async def scenario() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"GET /_ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        writer.write(masked_close(sent))
        try:
            while True:
                head = await reader.readexactly(2)
                payload = await reader.readexactly(head[1] & 0x7F)  # server frames here are small
                if head[0] & 0x0F == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code
        finally:
            writer.close()

    assert asyncio.run(scenario()) == answered


# --- hardened edges -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def publisher() -> Iterator[Server]:
    running = start_server(BENCH="1", PUBLISH_TOKEN=TOKEN, MAX_PUBLISH_BYTES="1000000")
    yield running
    running.stop()


@pytest.mark.parametrize(
    "body",
    [b"1e999", b"[-1e999]", b'{"a": NaN}', b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"]" * 40],
    ids=["1e999", "-1e999", "NaN", "nesting-100000", "nesting-40"],
)
def test_publish_refuses_what_browsers_cannot_read_without_using_an_id(
    publisher: Server, body: bytes
) -> None:
    status, _, answer = post(publisher, b'"before"')
    assert status == 200
    before = json.loads(answer)["id"]
    status, headers, _ = post(publisher, body)
    assert (status, headers["Cache-Control"]) == (400, "no-store")
    status, _, answer = post(publisher, b'"after"')
    assert (status, json.loads(answer)["id"]) == (200, before + 1)


def test_a_malformed_request_logs_one_line_and_gets_400(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.0 400")
    # aiohttp's own answer, which no handler of the app sees, names no software either.
    assert b"\r\nServer: app\r\n" in answer
    line = wait_for_log(server, "Error handling request")
    assert "400" in line
    assert not any("Traceback" in line for line in server.log)


def test_the_server_header_names_no_software_or_version(server: Server) -> None:
    for path in ("/", "/cache-healthcheck?", "/nowhere"):
        _, headers, _ = server.get(path)
        assert headers["Server"] == "app", path
    assert "\r\nServer: app" in handshake(server)[1]


def run_app(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", PACKAGE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_port_in_use_stops_the_process_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where the app would listen
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app(PORT=str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot listen on 0.0.0.0:{port}: ")
    assert "Traceback" not in result.stderr
    assert "closing" not in result.stderr, "no shutdown talk: the app never started"


def test_a_bad_host_stops_the_process_with_one_line() -> None:
    result = run_app(PORT=str(free_port()), HOST="no-such-host.invalid")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: cannot listen on no-such-host.invalid")
    assert "Traceback" not in result.stderr


def test_a_burst_of_upgrades_past_the_admission_rate_gets_503_with_retry_after(
    make_server: Any,
) -> None:
    server: Server = make_server(MAX_CONNECTS_PER_SECOND="5")  # bursts of 10

    # From 30 addresses (behind the one trusted proxy): each within its own share.
    statuses = [
        handshake(server, f"/_ws/{n}", f"X-Forwarded-For: 10.0.0.{n}\r\n") for n in range(30)
    ]
    # A client coming back (last_id) may take the tenth of the burst first-timers leave.
    returning = handshake(server, "/_ws/back?last_id=1", "X-Forwarded-For: 10.0.1.1\r\n")

    codes = [line.split()[1] for line, _ in statuses]
    assert codes.count("101") < 30
    assert codes[:9] == ["101"] * 9
    assert returning[0] == "HTTP/1.1 101 Switching Protocols"
    refused = [head for line, head in statuses if line.split()[1] == "503"]
    assert refused
    waits = [int(head.partition("\r\nRetry-After: ")[2].split()[0]) for head in refused]
    # Each refusal told a later place than the one before: spread, at the rate, not one spike.
    assert waits == sorted(waits)
    assert waits[0] >= 1
    assert waits[-1] >= len(refused) // 5
    assert server.get("/cache-healthcheck?")[0] == 200
