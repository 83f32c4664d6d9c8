"""Logs: one line per event; with LOG_FORMAT=json, one JSON object per line; never a secret."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from conftest import PACKAGE, Server
from test_publish import TOKEN, post

SECRET = "a-secret-of-at-least-thirty-two-characters"  # noqa: S105 - a test secret
WRONG_TOKEN = "wrong-token-0123456789"  # noqa: S105 - a test token


def test_json_logs_parse_line_by_line_and_never_show_a_secret(make_server: Any) -> None:
    server: Server = make_server(
        LOG_FORMAT="json", LOG_LEVEL="DEBUG", AUTH_SECRET=SECRET, PUBLISH_TOKEN=TOKEN
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as no_token:
                await session.ws_connect(
                    f"{server.ws_base}/_ws/?token={SECRET}",
                    protocols=("bearer", WRONG_TOKEN),  # invalid: 401 (none: anonymous)
                    # The client wrote the first entry; the platform's edge appended the second.
                    headers={"X-Forwarded-For": "198.51.100.66, 203.0.113.7"},
                )
            assert no_token.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as other_site:
                await session.ws_connect(
                    f"{server.ws_base}/_ws/", headers={"Origin": "https://evil.example"}
                )
            assert other_site.value.status == 403

    asyncio.run(scenario())
    assert post(server, b'"hello"', token=WRONG_TOKEN)[0] == 401
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        sock.recv(65536)
    assert server.stop() == 0
    time.sleep(0.2)  # the last lines are read by a thread
    entries = [json.loads(line) for line in server.log]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    refused = [e for e in entries if "from origin" in e["message"]]
    assert refused
    assert refused[0]["level"] == "WARNING"
    assert len(refused[0]["connection"]) == 8
    assert [e["message"] for e in entries if "Error handling request" in e["message"]]
    assert any(e.get("client") == "203.0.113.7" for e in entries)
    assert not any(e.get("client") == "198.51.100.66" for e in entries)  # never the forged entry
    for secret in (SECRET, TOKEN, WRONG_TOKEN):
        assert not any(secret in line for line in server.log)


def test_text_logs_name_the_connection_they_are_about(make_server: Any) -> None:
    server: Server = make_server()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(
                    f"{server.ws_base}/_ws/",
                    headers={"Origin": "https://evil.example", "X-Forwarded-For": "198.51.100.9"},
                )
            assert refused.value.status == 403

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while not any("from origin" in line for line in server.log):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    line = next(line for line in server.log if "from origin" in line)
    assert line.rstrip().endswith(" 198.51.100.9]")


#: What a client slips into its headers to forge log lines: line separators and bidi controls
#: (CR and LF in a header get 400 from aiohttp's parser; the logs escape them too).
FORGERS = ["\u2028", "\u2029", "\x85", "\u202e", "\u2066"]


def forged_upgrade(server: Server) -> None:
    """An upgrade from another origin, its Origin and X-Forwarded-For sown with forgers."""
    # No comma: X-Forwarded-For's last entry (the one the trusted proxy appended) is all of it.
    forged = "".join(f"{c}2026-01-01 00:00:00.000 ERROR forged: line" for c in FORGERS)
    request = (
        f"GET /_ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: https://evil.example{forged}\r\nX-Forwarded-For: 203.0.113.9{forged}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_line_separators_and_bidi_controls_cannot_forge_log_lines(
    make_server: Any, log_format: str
) -> None:
    server: Server = make_server(LOG_FORMAT=log_format)
    forged_upgrade(server)
    deadline = time.monotonic() + 10
    while not any("refused a WebSocket from origin" in line for line in server.log):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    server.stop()
    lines = "".join(server.log).splitlines()  # as a reader that honours U+2028 and U+0085 splits
    assert not any("forged" in line and "refused" not in line for line in lines), lines
    (refused,) = [line for line in lines if "refused a WebSocket" in line]
    assert not any(c in refused for c in FORGERS)
    assert "\\u2028" in refused  # shown, escaped
    if log_format == "json":
        assert json.loads(refused)["client"].startswith("203.0.113.9\u2028")


def test_a_flood_of_refused_upgrades_logs_one_line_per_reason_per_interval(
    make_server: Any,
) -> None:
    server: Server = make_server()
    interval: float = importlib.import_module(f"{PACKAGE}.logs").REFUSALS_INTERVAL
    for _ in range(50):
        forged_upgrade(server)
    deadline = time.monotonic() + interval + 10
    while not any("49 more refused (origin)" in line for line in server.log):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.1)
    assert sum("refused a WebSocket from origin" in line for line in server.log) == 1
