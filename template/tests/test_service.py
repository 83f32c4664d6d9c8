"""The demo service's channels, as your service.py opens them: rooms, recovery per channel,
presence, refusals. Yours, like service.py: generated with the project, never touched by updates;
change it with your service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from conftest import Server, start_server
from peers import SECRET, Frame, Peer, integer, joined, of_type, on, peers, publish, token
from test_publish import TOKEN


@pytest.fixture(scope="module")
def chat() -> Iterator[Server]:
    """The demo service with the backend's publishing on, two subscriptions per connection."""
    running = start_server(PUBLISH_TOKEN=TOKEN, MAX_SUBSCRIPTIONS="2", CHANNEL_REPLAY_SIZE="5")
    yield running
    running.stop()


def test_a_room_hears_its_own_messages_only_and_everyone_keeps_the_integers(chat: Server) -> None:
    async def scenario() -> None:
        async with peers(chat, 3) as (a, b, c):
            for peer, room in ((a, "chat/r1"), (b, "chat/r1"), (c, "chat/r2")):
                await peer.send(type="subscribe", channel=room)
                await peer.next(of_type("subscribed", room))
            await a.send(type="publish", channel="chat/r1", data={"name": "a", "text": "hi"})
            heard = [await peer.next(on("chat/r1")) for peer in (a, b)]
            assert heard[0] == heard[1]
            sender = heard[0]["data"]["sender"]
            assert sender.startswith("anonymous-")  # stamped by the service
            assert heard[0]["data"] == {"name": "a", "text": "hi", "sender": sender}
            await c.send(type="publish", channel="chat/r2", data={"name": "c", "text": "yo"})
            frames = await c.until(on("chat/r2"))
            assert not any(frame.get("channel") == "chat/r1" for frame in frames)
            assert frames[-1]["data"]["name"] == "c"
            assert frames[-1]["data"]["text"] == "yo"
            for peer in (a, b, c):  # the default stream goes on for everyone
                first = (await peer.next(integer))["data"]
                assert (await peer.next(integer))["data"] == first + 1

    asyncio.run(scenario())


def test_a_resubscribe_with_last_id_gets_what_it_missed_in_order_then_live(chat: Server) -> None:
    async def scenario() -> None:
        room = "chat/recovery"
        async with peers(chat, 1) as (reader,):
            await reader.send(type="subscribe", channel=room)
            await reader.next(of_type("subscribed", room))
            seen = publish(chat, room, {"n": 0})
            assert (await reader.next(on(room)))["id"] == seen
            await reader.send(type="unsubscribe", channel=room)
            missed = [publish(chat, room, {"n": n}) for n in range(1, 4)]
            assert missed == [seen + 1, seen + 2, seen + 3]  # ids follow one another per channel
            await reader.send(type="subscribe", channel=room, last_id=seen)
            live = asyncio.create_task(asyncio.to_thread(publish, chat, room, {"n": 4}))
            frames = await reader.until(lambda frame: on(room)(frame) and frame["data"]["n"] == 4)
            await live
        about_room = [frame for frame in frames if frame.get("channel") == room]
        assert about_room[0] == {"type": "subscribed", "channel": room, "last_id": seen + 3}
        assert [frame["data"]["n"] for frame in about_room if "id" in frame] == [1, 2, 3, 4]

    asyncio.run(scenario())


def test_a_resubscribe_older_than_the_channel_log_is_told_about_the_gap(chat: Server) -> None:
    async def scenario() -> list[Frame]:
        room = "chat/gap"
        async with peers(chat, 1) as (reader,):
            await reader.send(type="subscribe", channel=room)
            await reader.next(of_type("subscribed", room))
            first = publish(chat, room, {"n": 0})
            await reader.send(type="unsubscribe", channel=room)
            for n in range(1, 11):  # twice CHANNEL_REPLAY_SIZE
                publish(chat, room, {"n": n})
            await reader.send(type="subscribe", channel=room, last_id=first)
            gap = await reader.next(of_type("gap", room))
            assert gap["last_id"] == first
            publish(chat, room, {"n": 11})
            return await reader.until(on(room))

    frames = asyncio.run(scenario())
    assert frames[-1]["data"] == {"n": 11}  # and then live, without the lost ones
    assert [frame for frame in frames if on("chat/gap")(frame)] == frames[-1:]


def test_refused_requests_get_error_frames_and_the_connection_goes_on(chat: Server) -> None:
    cases: list[tuple[dict[str, object] | str, str]] = [
        ({"type": "subscribe", "channel": "news"}, "forbidden"),
        ({"type": "publish", "channel": "news", "data": 1}, "forbidden"),
        ({"type": "publish", "channel": "chat/x", "data": dict(text=1)}, '{"name": ..., '),
        ({"type": "publish", "channel": "chat/x", "data": dict(name="", text="t")}, "name"),
        ({"type": "publish", "channel": "chat/x"}, "needs data"),
        ({"type": "subscribe", "channel": "chat/ x"}, "channel must be"),
        ({"type": "subscribe", "channel": "c" * 129}, "channel must be"),
        ({"type": "subscribe", "channel": ["chat/x"]}, "channel must be"),
        ({"type": "subscribe", "channel": "chat/x", "last_id": "7"}, "last_id"),
        ({"type": "subscribe", "channel": "chat/x", "last_id": True}, "last_id"),
        ({"type": "dance"}, "unknown message type"),
        ({"no": "type"}, "not an object with a type"),
        ("[1, 2]", "not an object with a type"),
        ("{not json", "not JSON"),
        ('{"type": "publish", "channel": "chat/x", "data": NaN}', "not JSON"),
        ("[" * 40 + "]" * 40, "nests deeper"),
    ]

    async def scenario() -> list[Frame]:
        async with peers(chat, 1) as (peer,):
            errors = []
            for request, _reason in cases:
                await peer.ws.send_str(request if isinstance(request, str) else json.dumps(request))
                errors.append(await peer.next(lambda frame: frame.get("type") == "error"))
            await peer.send(type="whoami")
            reply = await peer.next(lambda frame: frame.get("type") == "message")
            assert reply["data"]["member"].startswith("anonymous-")
            for room in ("chat/1", "chat/2", "chat/3"):  # MAX_SUBSCRIPTIONS is 2 here
                await peer.send(type="subscribe", channel=room)
            errors.append(await peer.next(lambda frame: frame.get("type") == "error"))
            await peer.send(type="subscribe", channel="chat/1")
            errors.append(await peer.next(lambda frame: frame.get("type") == "error"))
            await peer.next(integer)  # still connected, still served
            return errors

    errors = asyncio.run(scenario())
    for error, (_request, reason) in zip(errors, cases, strict=False):
        assert reason in error["reason"], (error, reason)
    assert errors[0] == {
        "type": "error",
        "request": "subscribe",
        "channel": "news",
        "reason": "forbidden",
    }
    assert errors[-2] == {
        "type": "error",
        "request": "subscribe",
        "channel": "chat/3",
        "reason": "too many subscriptions (MAX_SUBSCRIPTIONS)",
    }
    assert errors[-1]["reason"] == "already subscribed"


def test_presence_announces_each_member_once_across_its_tabs() -> None:
    server = start_server(AUTH_SECRET=SECRET)
    room = "chat/presence"

    async def scenario() -> None:
        async with (
            peers(server, 2, token("alice")) as (alice, alice_tab),
            peers(server, 1, token("bob")) as (bob,),
        ):
            await alice.send(type="subscribe", channel=room)
            assert (await alice.next(of_type("presence", room)))["members"] == ["alice"]
            await bob.send(type="subscribe", channel=room)
            assert (await bob.next(of_type("presence", room)))["members"] == ["alice", "bob"]
            await alice.next(joined("bob"))
            await alice_tab.send(type="subscribe", channel=room)
            assert (await alice_tab.next(of_type("presence", room)))["members"] == ["alice", "bob"]
            await alice.send(type="unsubscribe", channel=room)  # alice is still here in a tab
            await asyncio.sleep(1)  # two presence periods
            await alice_tab.send(type="publish", channel=room, data={"name": "a", "text": "1"})
            frames = await bob.until(on(room))
            changes = [[*f.get("joined", ()), *f.get("left", ())] for f in frames]
            assert not [names for names in changes if "alice" in names]  # she came once, stays
            await alice_tab.ws.close()  # her last connection: she leaves
            assert await bob.next(of_type("presence", room)) == {
                "type": "presence",
                "channel": room,
                "joined": [],
                "left": ["alice"],
            }

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_the_demo_chat_stamps_the_sender_from_the_connection_not_the_client() -> None:
    server = start_server(AUTH_SECRET=SECRET)
    room = "chat/impostor"

    async def scenario() -> tuple[Frame, Frame]:
        async with (
            peers(server, 1, token("mallory")) as (mallory,),
            peers(server, 1, token("bob")) as (bob,),
        ):
            for peer in (mallory, bob):
                await peer.send(type="subscribe", channel=room)
                await peer.next(of_type("subscribed", room))
            forged = {"name": "bob", "text": "send money", "sender": "bob"}
            await mallory.send(type="publish", channel=room, data=forged)
            refused = await mallory.next(of_type("error", room))
            await mallory.send(type="publish", channel=room, data={"name": "bob", "text": "hi"})
            return refused, await bob.next(on(room))

    try:
        refused, heard = asyncio.run(scenario())
    finally:
        server.stop()
    assert refused["request"] == "publish"
    assert heard["data"] == {"name": "bob", "text": "hi", "sender": "mallory"}


def test_a_client_flooding_a_room_is_closed_and_the_room_goes_on(chat: Server) -> None:
    async def scenario() -> tuple[int | None, Frame]:
        room = "chat/flood"
        async with peers(chat, 2) as (flooder, listener):
            await listener.send(type="subscribe", channel=room)
            await listener.next(of_type("subscribed", room))
            data = {"name": "f", "text": "x"}
            message = json.dumps({"type": "publish", "channel": room, "data": data})
            for _ in range(200):  # ten times CLIENT_MESSAGES_PER_SECOND, at once
                if flooder.ws.closed:
                    break
                await flooder.ws.send_str(message)
            async with asyncio.timeout(10):
                while not flooder.ws.closed:
                    await flooder.ws.receive()
            later = publish(chat, room, {"name": "b", "text": "after"})
            frame = await listener.next(lambda frame: on(room)(frame) and frame["id"] == later)
            return flooder.ws.close_code, frame

    close_code, frame = asyncio.run(scenario())
    assert close_code == 4008
    assert frame["data"] == {"name": "b", "text": "after"}


def test_a_room_flooded_by_members_within_their_allowance_refuses_past_its_budget() -> None:
    # Each member stays within its own allowance (20 messages a second, bursts of 40).
    server = start_server(CHANNEL_PUBLISHES_PER_SECOND="5", PUBLISHES_PER_SECOND="8")

    async def flood(peer: Peer, room: str, count: int) -> tuple[int, list[str]]:
        for n in range(count):
            await peer.send(type="publish", channel=room, data={"name": "f", "text": str(n)})
        heard, reasons = 0, list[str]()
        while heard + len(reasons) < count:
            frame = await peer.next(lambda f: f.get("channel") == room)
            if frame.get("type") == "error":
                reasons.append(frame["reason"])
            elif "id" in frame:
                heard += 1
        return heard, reasons

    async def scenario() -> tuple[int, list[str], int, list[str], int]:
        async with peers(server, 3) as (a, b, listener):
            for peer, room in ((a, "chat/a"), (b, "chat/b"), (listener, "chat/a")):
                await peer.send(type="subscribe", channel=room)
                await peer.next(of_type("subscribed", room))
            heard_a, refused_a = await flood(a, "chat/a", 30)
            heard_b, refused_b = await flood(b, "chat/b", 30)
            # Once the budget has come back, a publish goes through again (never closed).
            after = {"name": "f", "text": "after"}
            while True:
                await a.send(type="publish", channel="chat/a", data=after)
                if "id" in await a.next(lambda f: on("chat/a")(f) or f.get("type") == "error"):
                    break
                await asyncio.sleep(0.2)
            frames = await listener.until(
                lambda f: on("chat/a")(f) and f["data"]["text"] == "after"
            )
            return heard_a, refused_a, heard_b, refused_b, sum(map(on("chat/a"), frames)) - 1

    try:
        heard_a, refused_a, heard_b, refused_b, listened = asyncio.run(scenario())
    finally:
        server.stop()
    assert 10 <= heard_a < 30  # the channel's burst (twice its rate), and a little more
    assert set(refused_a) == {
        "too many publishes on this channel, try again (CHANNEL_PUBLISHES_PER_SECOND)"
    }
    # chat/b has a budget of its own, but the process's (bursts of 16) is mostly spent already.
    assert heard_b < 16
    assert "too many publishes, try again (PUBLISHES_PER_SECOND)" in refused_b
    assert listened == heard_a
