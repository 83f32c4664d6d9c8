"""The service's seams, tried with services that misbehave: ``on_connect`` that greets, hangs,
refuses or fails, ``on_disconnect`` that raises, ``setup`` with a middleware that never answers,
``on_message`` that broadcasts, a setting of the service's own. A real process each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

from conftest import NO_DOTENV, PACKAGE, Server, start_server_with_service, with_service
from peers import Frame, Peer, of_type, on

#: A service whose every hook misbehaves on a path of its own.
MISBEHAVING = """
import asyncio
import logging

from aiohttp import web

from {package}.hooks import PUBLISHER_KEY, Connection, Hooks, Refusal
from {package}.settings import Settings, read_int

logger = logging.getLogger("service_under_test")


class Service(Hooks):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.room_size = read_int(settings.environ, "ROOM_SIZE", 50, 2, 500)

    async def on_connect(self, connection: Connection) -> None:
        path = connection.request.path
        if path.endswith("/hang"):
            await asyncio.sleep(3600)
        if path.endswith("/refuse"):
            raise Refusal("no entry here")
        if path.endswith("/fail"):
            raise RuntimeError("on_connect broke")
        if path.endswith("/slow"):
            await asyncio.sleep(0.5)
        connection.send({"hello": connection.member, "room_size": self.room_size})

    async def on_disconnect(self, connection: Connection, code: int) -> None:
        if connection.request.path.endswith("/raise"):
            raise RuntimeError("on_disconnect broke")
        logger.warning("left: %s %d", connection.request.path, code)

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        return True

    async def on_message(self, connection: Connection, message: dict) -> None:
        if message["type"] == "echo":
            connection.send({"echo": message.get("text")})
        elif message["type"] == "shout":
            shout = {"text": message.get("text"), "by": connection.member}
            await connection.broadcast("shouts", shout)
        else:
            raise Refusal("unknown message type")

    def setup(self, app: web.Application) -> None:
        @web.middleware
        async def never_answers(request, handler):
            if request.path.startswith(("/hooks/", "/_ws/")):
                return await handler(request)
            await asyncio.sleep(3600)

        async def webhook(request: web.Request) -> web.Response:
            data = await request.json()
            channel = request.match_info["name"]
            message_id = await request.app[PUBLISHER_KEY].broadcast(data, channel)
            return web.json_response({"id": message_id})

        app.middlewares.insert(0, never_answers)  # as first as a service can put it
        app.router.add_post("/hooks/{name}", webhook)
""".replace("{package}", PACKAGE)


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[Server]:
    running = start_server_with_service(MISBEHAVING, CHANNEL_PUBLISHES_PER_SECOND="1")
    yield running
    running.stop()


def logged(server: Server, text: str) -> None:
    """Wait until a line of the server's log holds ``text``."""
    deadline = time.monotonic() + 10
    while not any(text in line for line in server.log):
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)


def greeting(frame: Frame) -> bool:
    data = frame.get("data")
    return frame.get("type") == "message" and isinstance(data, dict) and "hello" in data


async def close_of(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The close frame the server sends ``ws``, past any frames before it."""
    async with asyncio.timeout(15):
        while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            pass
    return message


def test_on_connect_greets_each_connection_before_its_first_message_is_read(
    misbehaving: Server,
) -> None:
    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{misbehaving.ws_base}/_ws/slow") as ws,
        ):
            peer = Peer(ws)
            await peer.send(type="echo", text="first")  # sent before on_connect is over
            frames = await peer.until(lambda f: f.get("type") == "message" and "echo" in f["data"])
            greetings = [i for i, frame in enumerate(frames) if greeting(frame)]
            assert greetings
            assert greetings[0] < len(frames) - 1
            assert frames[greetings[0]]["data"]["hello"].startswith("anonymous-")
            assert frames[greetings[0]]["data"]["room_size"] == 50

    asyncio.run(scenario())


def test_on_connect_that_hangs_is_cut_at_hook_timeout_and_holds_no_one_else(
    misbehaving: Server,
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hanging = await session.ws_connect(f"{misbehaving.ws_base}/_ws/hang")
            # Meanwhile others are greeted and answered.
            async with session.ws_connect(f"{misbehaving.ws_base}/_ws/other") as other:
                peer = Peer(other)
                await peer.next(greeting)
                await peer.send(type="echo", text="hi")
                assert (await peer.next(lambda f: f.get("type") == "message"))["data"] == {
                    "echo": "hi"
                }
            closed = await close_of(hanging)
            assert (closed.data, closed.extra) == (1011, "the service did not answer")

    asyncio.run(scenario())
    logged(misbehaving, "on_connect took longer than 5 s: closing (1011)")


@pytest.mark.parametrize(
    ("path", "code", "reason", "log_line"),
    [
        ("refuse", 1008, "no entry here", "on_connect refused the connection: no entry here"),
        ("fail", 1011, "the service failed", "RuntimeError: on_connect broke"),
    ],
)
def test_on_connect_that_refuses_or_fails_closes_that_connection_alone(
    misbehaving: Server, path: str, code: int, reason: str, log_line: str
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{misbehaving.ws_base}/_ws/{path}") as ws:
                closed = await close_of(ws)
            assert (closed.data, closed.extra) == (code, reason)
            async with session.ws_connect(f"{misbehaving.ws_base}/_ws/other") as other:
                await Peer(other).next(greeting)

    asyncio.run(scenario())
    logged(misbehaving, log_line)
    logged(misbehaving, f"left: /_ws/{path} {code}")  # on_disconnect follows, with the code


def test_on_disconnect_gets_the_close_code_and_what_it_raises_is_logged(
    misbehaving: Server,
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            for path in ("raise", "polite"):
                async with session.ws_connect(f"{misbehaving.ws_base}/_ws/{path}") as ws:
                    await Peer(ws).next(greeting)
                    await ws.close(code=4321)
            async with session.ws_connect(f"{misbehaving.ws_base}/_ws/other") as other:
                await Peer(other).next(greeting)  # the server goes on

    asyncio.run(scenario())
    logged(misbehaving, "left: /_ws/polite 4321")
    logged(misbehaving, "on_disconnect failed")
    logged(misbehaving, "RuntimeError: on_disconnect broke")


def test_a_middleware_of_setup_never_holds_the_health_check(misbehaving: Server) -> None:
    """The service's middleware, put first, never answers but on its own paths and WebSockets'; the
    health check is answered anyway (start_server waited for it), and the service's route is
    served."""
    assert misbehaving.get("/cache-healthcheck?")[0] == 200
    assert misbehaving.get("/cache-healthcheck", method="HEAD")[0] == 200

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TimeoutError):  # the middleware is there, before the page
                async with asyncio.timeout(1):
                    await session.get(f"{misbehaving.base}/")
            async with session.ws_connect(f"{misbehaving.ws_base}/_ws/reader") as ws:
                reader = Peer(ws)
                await reader.send(type="subscribe", channel="orders")
                await reader.next(of_type("subscribed", "orders"))
                order = {"n": 1}
                posted = await session.post(f"{misbehaving.base}/hooks/orders", json=order)
                assert posted.status == 200
                message_id = (await posted.json())["id"]
                frame = await reader.next(on("orders"))
                assert frame == {"channel": "orders", "id": message_id, "data": order}

    asyncio.run(scenario())


def test_on_message_broadcasts_within_the_channels_publish_budget(misbehaving: Server) -> None:
    """CHANNEL_PUBLISHES_PER_SECOND=1: bursts of 2, then an error frame naming the budget."""

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{misbehaving.ws_base}/_ws/listener") as listening,
            session.ws_connect(f"{misbehaving.ws_base}/_ws/shouter") as shouting,
        ):
            listener, shouter = Peer(listening), Peer(shouting)
            await listener.send(type="subscribe", channel="shouts")
            await listener.next(of_type("subscribed", "shouts"))
            for n in range(5):
                await shouter.send(type="shout", text=str(n))
            refused = await shouter.next(of_type("error"))
            assert refused["request"] == "shout"
            assert "CHANNEL_PUBLISHES_PER_SECOND" in refused["reason"]
            heard = await listener.next(on("shouts"))
            assert heard["data"]["text"] == "0"
            assert heard["data"]["by"].startswith("anonymous-")

    asyncio.run(scenario())


def test_a_bad_setting_of_the_service_stops_start_up_with_one_line() -> None:
    command, env = with_service(MISBEHAVING)
    done = subprocess.run(
        [sys.executable, *command],
        env={**os.environ, **env, "ROOM_SIZE": "1"},
        cwd=NO_DOTENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "error: ROOM_SIZE=1 is out of range (2-500)\n"
    assert done.stdout == ""
