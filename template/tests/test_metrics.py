"""GET /metrics: Prometheus's text format, only with METRICS_TOKEN, reporting the real state."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
from typing import Any

import aiohttp

from conftest import Server

METRICS_TOKEN = "metrics-token-0123456789"  # noqa: S105 - a test token


def scrape(server: Server, token: str | None = METRICS_TOKEN) -> tuple[int, str, dict[str, float]]:
    """GET /metrics; return the status, the content type and the samples by name and labels."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        content_type = response.getheader("Content-Type", "")
    finally:
        conn.close()
    samples = {
        match[1]: float(match[2])
        for match in re.finditer(r"^(\S+) (\S+)$", text, re.MULTILINE)
        if not match[1].startswith("#")
    }
    return response.status, content_type, samples


def test_metrics_are_absent_without_a_token(server: Server) -> None:
    assert scrape(server)[0] == 404


def test_metrics_need_the_token_and_report_the_real_state(make_server: Any) -> None:
    server: Server = make_server(METRICS_TOKEN=METRICS_TOKEN)
    assert scrape(server, None)[0] == 401
    assert scrape(server, "wrong-token-0123456789")[0] == 401

    async def scenario() -> dict[str, float]:
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(f"{server.ws_base}/_ws/{n}") for n in range(2)]
            for ws in clients:
                while "id" not in json.loads(await ws.receive_str(timeout=10)):
                    pass
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                await session.ws_connect(
                    f"{server.ws_base}/_ws/", headers={"Origin": "https://evil.example"}
                )
            await asyncio.sleep(1.2)  # a loop-lag measure
            status, content_type, samples = await asyncio.to_thread(scrape, server)
            assert status == 200
            assert content_type.startswith("text/plain; version=")  # Prometheus's text format
            for ws in clients:
                await ws.close()
            return samples

    samples = asyncio.run(scenario())
    assert samples["websocket_connections"] == 2
    assert samples["websocket_joins_total"] == 2
    assert samples['refused_upgrades_total{reason="origin"}'] == 1
    assert samples["broadcasts_total"] >= 1
    assert samples["deliveries_total"] >= samples["broadcasts_total"]
    assert samples["sent_bytes_total"] > samples["deliveries_total"]
    assert samples["fan_out_seconds_count"] == samples["broadcasts_total"]
    assert "event_loop_lag_seconds" in samples
    assert samples["broker_connected"] == 1
