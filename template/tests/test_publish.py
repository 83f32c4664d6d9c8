"""POST /_publish: the app's own backend broadcasts through the hub with a bearer token."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import Server, start_server

TOKEN = "test-token-0123456789abcdef"  # noqa: S105 - a test token
DATA = {"headline": "café", "n": [1, 2]}


def post(
    server: Server, body: bytes, token: str | None = TOKEN, path: str = "/_publish"
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` with ``token`` as the bearer token (none when None)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def publisher() -> Iterator[Server]:
    """A server with publishing on, the integers demo off (bench mode) and small bodies."""
    running = start_server(BENCH="1", PUBLISH_TOKEN=TOKEN, MAX_PUBLISH_BYTES="1000")
    yield running
    running.stop()


def test_publish_is_absent_without_a_token(server: Server) -> None:
    status, headers, _ = post(server, b"{}")
    assert status == 404
    assert headers["Cache-Control"] == "no-store"


def test_published_message_reaches_every_client(publisher: Server) -> None:
    async def scenario() -> tuple[int, dict[str, str], bytes, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(f"{publisher.ws_base}/_ws/{i}") for i in range(2)]
            body = json.dumps(DATA).encode()
            status, headers, answer = await asyncio.to_thread(post, publisher, body)
            received = []
            for ws in clients:
                while (message := json.loads(await ws.receive_str(timeout=10))).get("type"):
                    pass  # heartbeats
                received.append(message)
                await ws.close()
            return status, headers, answer, received

    status, headers, answer, received = asyncio.run(scenario())
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    message_id = json.loads(answer)["id"]
    expected = {"id": message_id, "data": DATA}
    assert received == [expected, expected]


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789abcdef", TOKEN + "x"])
def test_bad_token_is_refused_with_401(publisher: Server, token: str | None) -> None:
    status, headers, _ = post(publisher, b"{}", token=token)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("body", [b"not json", b"", b"NaN", b'{"x": Infinity}'])
def test_body_must_be_json(publisher: Server, body: bytes) -> None:
    status, headers, _ = post(publisher, body)
    assert (status, headers["Cache-Control"]) == (400, "no-store")


def test_body_in_many_chunks_is_read_whole(publisher: Server) -> None:
    """A body that arrives in pieces (chunked transfer encoding) is read to its end."""
    conn = http.client.HTTPConnection("127.0.0.1", publisher.port, timeout=10)
    chunks = [b'{"parts": [', b'"a' + b"b" * 300 + b'",', b' "c"]}']
    try:
        conn.request(
            "POST",
            "/_publish",
            body=iter(chunks),
            headers={"Authorization": f"Bearer {TOKEN}"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert (response.status, response.read()[:6]) == (200, b'{"id":')
    finally:
        conn.close()


def test_body_past_the_limit_is_refused_with_413(publisher: Server) -> None:
    status, headers, _ = post(publisher, json.dumps("x" * 1000).encode())
    assert (status, headers["Cache-Control"]) == (413, "no-store")


def test_get_on_publish_is_not_allowed(publisher: Server) -> None:
    status, headers, _ = publisher.get("/_publish")
    assert (status, headers["Cache-Control"]) == (405, "no-store")
