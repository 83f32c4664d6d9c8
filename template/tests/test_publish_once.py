"""POST /_publish with ``Idempotency-Key``: a retried publish broadcasts nothing again.

The WordPress plugin's outbox sends an event again when it did not get the answer; the key makes
that retry harmless. Also the static client's CORS, for a WordPress page that imports it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import Server, start_server
from peers import Peer, of_type, on
from test_publish import TOKEN

ORIGIN = "https://news.example.com"


@pytest.fixture(scope="module")
def publisher() -> Iterator[Server]:
    running = start_server(BENCH="1", PUBLISH_TOKEN=TOKEN, ALLOWED_ORIGINS=ORIGIN)
    yield running
    running.stop()


def publish(server: Server, channel: str, data: object, key: str) -> tuple[int, dict[str, Any]]:
    """POST ``data`` on ``channel`` with ``key``; the status and the JSON answer (or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/_publish?channel={channel}",
            body=json.dumps(data),
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key},
        )
        response = conn.getresponse()
        body = response.read()
        answer = json.loads(body) if response.status == 200 else {"text": body.decode()}
        return response.status, answer
    finally:
        conn.close()


def test_a_retried_publish_returns_the_first_id_and_delivers_nothing(publisher: Server) -> None:
    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{publisher.ws_base}/_ws/once") as ws,
        ):
            peer = Peer(ws)
            await peer.send(type="subscribe", channel="chat/once")
            await peer.next(of_type("subscribed", "chat/once"))
            first = await asyncio.to_thread(publish, publisher, "chat/once", {"n": 1}, "wp-k1")
            again = await asyncio.to_thread(publish, publisher, "chat/once", {"n": 1}, "wp-k1")
            assert first == (200, {"id": first[1]["id"]})
            assert again == (200, {"id": first[1]["id"], "duplicate": True})
            other = await asyncio.to_thread(publish, publisher, "chat/once", {"n": 2}, "wp-k2")
            # The subscriber saw the first publish once, then the next key's: no duplicate between.
            received = [(await peer.next(on("chat/once")))["data"] for _ in range(2)]
            assert received == [{"n": 1}, {"n": 2}]
            assert other[1]["id"] == first[1]["id"] + 1

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["", "a b", "é", "k" * 129, "a/b"])
def test_a_malformed_idempotency_key_is_refused(publisher: Server, key: str) -> None:
    status, answer = publish(publisher, "chat/bad", {"n": 1}, key)
    assert status == 400, answer
    assert "Idempotency-Key" in answer["text"]


def test_the_client_module_has_cors_for_allowed_origins_only(publisher: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", publisher.port, timeout=10)
    for origin, allowed in ((ORIGIN, True), ("https://evil.example", False)):
        conn.request("GET", "/static/ws-client.js", headers={"Origin": origin})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Access-Control-Allow-Origin") == (origin if allowed else None)
        assert "Origin" in (response.getheader("Vary") or "")
    conn.close()
