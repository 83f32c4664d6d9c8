"""Logs: one line per event; with LOG_FORMAT=json, one JSON object per line; never a secret."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from conftest import Server
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
                    headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
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
