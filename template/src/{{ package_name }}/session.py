"""A client's session: its requests answered in turn, once its frames are read.

A :class:`Session` answers the client's requests through the hub's role :class:`SessionHub`, from
:meth:`Session.join` to :meth:`Session.close`, and closes its connection when its token expires.
The frames are read before, and charged to the client's allowance: by :class:`~.inbound.RawClient`
on ``/_ws/``, through aiohttp's WebSocket for Socket.IO's clients.

Every frame a client sends is a JSON object with a ``type``:

- ``{"type": "subscribe", "channel": C}``, with ``"last_id": N`` to first receive what was missed
  on ``C`` after ``N``: answered with ``{"type": "subscribed", "channel": C}``, then the channel's
  messages ``{"channel": C, "id": N, "data": D}``; on a channel with presence, also
  ``{"type": "presence", "channel": C, "members": [...]}`` and then, at most twice a second,
  ``{"type": "presence", "channel": C, "joined": [...], "left": [...]}``; on a channel with
  counted presence, ``{"type": "presence", "channel": C, "count": N}``, then at most once a
  second when ``N`` changes;
- ``{"type": "subscribe", "channels": [{"channel": C, "last_id": N}, ...]}``: up to
  ``SUBSCRIBE_BATCH`` subscribes in one frame (``last_id`` optional), answered per channel as
  if each had come alone: how a client resubscribes after a reconnect within its allowance;
- ``{"type": "unsubscribe", "channel": C}``;
- ``{"type": "publish", "channel": C, "data": D}``: ``D`` to every subscriber of ``C``;
- any other ``type``: the service's ``on_message``.

A refused or malformed one is answered with ``{"type": "error", "request": T, "reason": R}``
(and ``"channel": C`` when it names one); the connection stays open. Each request is handled in
turn, within ``HOOK_TIMEOUT`` seconds for each answer of the service's hooks (counted from the
hook's first wait: one that answers without waiting is not timed at all), and counts against
the client's allowance of messages and bytes like any frame. A refusal that may not hold a while
later (the broker is away, too many new channels) carries ``"retry_after": S``, seconds after
which the same request may succeed: clients send it again then, with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

from aiohttp import WSCloseCode

from .frames import Dialect
from .guards import LoopShare, TokenBucket, is_valid_channel, parse_json
from .hooks import Connection, Hooks, Refusal
from .hub import Client, HubUnavailable, Member
from .metrics import Metrics

logger = logging.getLogger(__name__)

#: Seconds a hook of the service may take to answer one request, from its first wait (a hook
#: that answers without waiting, as the defaults do, costs no timer).
HOOK_TIMEOUT = 5.0
#: Close code of a client past its allowance: too much, too soon. Not 1008, which clients take
#: as final: this one they retry, after a longer backoff, and send more slowly (docs/protocol.md).
RATE_EXCEEDED = 4008
#: Most subscribes in one batched ``subscribe`` frame.
SUBSCRIBE_BATCH = 100
#: Seconds after which a subscribe refused as unavailable (the broker is away) may be retried.
UNAVAILABLE_RETRY_AFTER = 1.0
#: What a publish past a budget of the process is refused with, by budget.
PUBLISH_BUDGETS = {
    "channel": "too many publishes on this channel, try again (CHANNEL_PUBLISHES_PER_SECOND)",
    "process": "too many publishes, try again (PUBLISHES_PER_SECOND)",
}
#: What :meth:`Session._answer` returns for a hook that refused or failed.
_REFUSED = object()
#: Close code of a connection whose token expired (or that lived ``MAX_CONNECTION_SECONDS``):
#: its client comes back at once with a fresh token.
TOKEN_EXPIRED = 4001
#: Seconds a connection outlives its token's ``exp``, for clocks a little apart.
EXPIRY_GRACE_SECONDS = 2.0
#: Part of ``MAX_CONNECTION_SECONDS`` over which the connections opened together are closed, so
#: that a deploy's wave of connections does not come back as one wave hours later.
LIFETIME_SPREAD = 0.1
#: Longest close reason in a close frame, in bytes (RFC 6455: 125 less the code's two).
MAX_CLOSE_REASON = 123
#: The 4001 closes under way (a task's only strong reference).
_CLOSING: set[asyncio.Future[bool]] = set()


def close_when_expired(
    ws: Client, connection: Connection, max_seconds: float
) -> asyncio.TimerHandle:
    """Close ``ws`` with 4001 when its token expires, or after about ``max_seconds`` at most.

    A timer, not a task: nothing runs for the connection until then.
    """
    seconds = max_seconds * (1 - LIFETIME_SPREAD * random.random())  # noqa: S311 - spread only
    reason = b"connection lifetime over"
    if connection.token is not None:
        left = connection.token.expires - time.time() + EXPIRY_GRACE_SECONDS
        if left < seconds:
            seconds, reason = left, b"token expired"

    def close() -> None:
        # A client that outlived its token comes back with a new one, or not at all.
        task = asyncio.ensure_future(ws.close(code=TOKEN_EXPIRED, message=reason))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    return asyncio.get_running_loop().call_later(max(seconds, 0.0), close)


class SessionHub(Protocol):
    """What a session needs of the hub: its client's place in it, channels, sends and publishes.

    :class:`~.hub.Hub` is one; a session never sees the rest of it (producers, drain, brokers).
    """

    #: The part of each event loop iteration that every session's batched subscribes share.
    subscribe_share: LoopShare

    @property
    def metrics(self) -> Metrics: ...

    def join(
        self,
        ws: Client,
        transport: asyncio.Transport,
        last_id: int | None,
        dialect: Dialect | None = None,
    ) -> None: ...

    def leave(self, ws: Client) -> None: ...

    def send(self, ws: Client, message: dict[str, object]) -> bool: ...

    def flush(self, ws: Client) -> None: ...

    def subscriptions(self, ws: Client) -> int: ...

    def is_subscribed(self, ws: Client, channel: str) -> bool: ...

    def has_channel(self, channel: str) -> bool: ...

    async def subscribe(
        self,
        ws: Client,
        transport: asyncio.Transport,
        channel: str,
        last_id: int | None,
        member: Member | None,
        *,
        counted: bool = False,
    ) -> None: ...

    def unsubscribe(self, ws: Client, channel: str) -> None: ...

    def take_publish(self, channel: str) -> str | None: ...

    async def broadcast(self, data: object, channel: str | None = None) -> int: ...


async def call_on_connect(service: Hooks, connection: Connection, ws: Client) -> bool:
    """Ask the service's ``on_connect`` about ``connection``, which joined the hub; return
    whether its messages may be read.

    Within ``HOOK_TIMEOUT``: a :class:`Refusal` closes ``ws`` with 1008 and its reason; a
    timeout or an error closes it with 1011, logged. Only this connection waits for it.
    """
    try:
        await eagerly(service.on_connect(connection), within=HOOK_TIMEOUT)
    except Refusal as refusal:
        logger.info("on_connect refused the connection: %s (1008)", refusal.reason)
        reason = refusal.reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())
        return False
    except TimeoutError:
        logger.warning("on_connect took longer than %.0f s: closing (1011)", HOOK_TIMEOUT)
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"the service did not answer")
        return False
    except Exception:
        logger.exception("on_connect failed: closing (1011)")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"the service failed")
        return False
    return True


async def call_on_disconnect(service: Hooks, connection: Connection, code: int) -> None:
    """Tell the service's ``on_disconnect`` that ``connection`` left the hub, closed with
    ``code``; within ``HOOK_TIMEOUT``, whatever it raises logged."""
    try:
        await eagerly(service.on_disconnect(connection, code), within=HOOK_TIMEOUT)
    except TimeoutError:
        logger.warning("on_disconnect took longer than %.0f s", HOOK_TIMEOUT)
    except Exception:
        logger.exception("on_disconnect failed")


async def broadcast_within_budget(hub: SessionHub, channel: str, data: object) -> int:
    """Broadcast ``data`` on ``channel`` for a client, charged to the process's budgets of
    clients' publishes; return its id.

    Raises:
        Refusal: A budget is spent, or the broker is unavailable (logged).
        ValueError: ``data`` holds a number JSON cannot carry.
    """
    spent = hub.take_publish(channel)
    if spent is not None:  # its members, each within its allowance, flood a room together
        raise Refusal(PUBLISH_BUDGETS[spent])
    try:
        return await hub.broadcast(data, channel)
    except HubUnavailable as error:
        logger.warning("publish on %s failed: %s", channel, error)
        raise Refusal("unavailable, try again") from None


async def eagerly(
    awaitable: Awaitable[Any],
    suspending: Callable[[], None] | None = None,
    within: float | None = None,
) -> Any:
    """Await ``awaitable``, its first step at once; if it waits, call ``suspending`` first.

    ``suspending`` runs before the event loop runs anything else (it flushes what a session
    gathered for one write), and ``within`` (seconds, then ``TimeoutError``) counts from that
    first wait: an awaitable that completes without waiting costs no timer at all.
    """
    steps = awaitable.__await__()
    try:
        first = steps.send(None)
    except StopIteration as done:
        return done.value
    if suspending is not None:
        suspending()
    if within is None:
        return await _resumed(steps, first)
    async with asyncio.timeout(within):
        return await _resumed(steps, first)


def _defines(service: Hooks, hook: str) -> bool:
    """Whether ``service`` has a ``hook`` of its own, rather than :class:`~.hooks.Hooks`'."""
    return getattr(type(service), hook) is not getattr(Hooks, hook)


@types.coroutine
def _resumed(steps: Generator[Any, None, Any], yielded: object) -> Generator[Any, Any, Any]:
    """The rest of ``steps``, an awaitable's steps whose first yielded ``yielded`` already."""
    while True:
        try:
            sent = yield yielded
        except BaseException as error:  # a cancellation (a timeout), or the coroutine closed
            try:
                yielded = steps.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = steps.send(sent)
            except StopIteration as done:
                return done.value


class Session:
    """One connection's requests, answered in turn, from :meth:`join` to :meth:`close`.

    Made as soon as the client's WebSocket is prepared: from then on, the connection is closed
    with 4001 when its token expires or ``max_connection_seconds`` are over
    (:func:`close_when_expired`), until :meth:`close`.

    The answers to a request go out in one write at its end (:meth:`Hub.flush`), or earlier
    if it waits (a hook that waits, a shared broker), and always before the session yields to
    the event loop: a batched subscribe's answers are one write, not one per channel, and no
    message of a channel, written by other tasks, overtakes its ``subscribed``.

    Args:
        hub: The process's hub.
        service: The project's hooks.
        ws: The client's WebSocket.
        transport: Its transport.
        connection: The connection, as the hooks see it.
        max_subscriptions: Channels the connection may subscribe to at once.
        max_new_channels_per_minute: Channels new to the process the connection may open per
            minute, with bursts of ``max_subscriptions`` (a reconnect to a new process).
        max_connection_seconds: Longest life of the connection, whatever its token says.
    """

    def __init__(
        self,
        hub: SessionHub,
        service: Hooks,
        ws: Client,
        transport: asyncio.Transport,
        connection: Connection,
        *,
        max_subscriptions: int,
        max_new_channels_per_minute: float,
        max_connection_seconds: float,
    ) -> None:
        self._hub = hub
        self._ws = ws
        self._transport = transport
        self._service = service
        self._connection = connection
        self._max_subscriptions = max_subscriptions
        self._new_channels = TokenBucket(
            max_new_channels_per_minute / 60,
            asyncio.get_running_loop().time(),
            capacity=max(max_subscriptions, max_new_channels_per_minute / 60),
        )
        self._expiry = close_when_expired(ws, connection, max_connection_seconds)

    def opening(self) -> Coroutine[Any, Any, bool] | None:
        """:meth:`open`, to await; None if the service has no ``on_connect`` of its own (the
        default does nothing: the connection costs no task for it)."""
        return self.open() if _defines(self._service, "on_connect") else None

    def ending(self, code: int) -> Coroutine[Any, Any, None] | None:
        """:meth:`ended`, to await; None if the service has no ``on_disconnect`` of its own."""
        return self.ended(code) if _defines(self._service, "on_disconnect") else None

    def join(self, last_id: int | None, dialect: Dialect | None = None) -> None:
        """Take the client into the hub: broadcasts from ``last_id`` on, in ``dialect`` if any."""
        self._hub.join(self._ws, self._transport, last_id, dialect)

    async def open(self) -> bool:
        """Ask the service's ``on_connect`` once joined; whether the client's messages may be
        read (:func:`call_on_connect`: else the connection is closed already)."""
        return await call_on_connect(self._service, self._connection, self._ws)

    def close(self) -> None:
        """End the session once its connection is over: out of the hub, no expiry pending."""
        self._expiry.cancel()
        self._hub.leave(self._ws)

    async def ended(self, code: int) -> None:
        """Tell the service's ``on_disconnect`` that the connection ended with ``code``, once
        :meth:`open` was asked."""
        await call_on_disconnect(self._service, self._connection, code)

    async def handle(self, text: str) -> None:
        """Answer one text frame of the client."""
        try:
            message = parse_json(text)
        except ValueError as error:
            self._refuse(None, None, f"not JSON: {error}")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._refuse(None, None, "not an object with a type")
            return
        await self.handle_message(message)

    async def handle_message(self, message: dict[str, Any]) -> None:
        """Answer one request of the client, parsed already: an object whose ``type`` is a str."""
        try:
            await self._handle_message(message)
        finally:
            self._flush()

    async def _handle_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("subscribe", "unsubscribe", "publish"):
            await self._ask(kind, None, self._service.on_message(self._connection, message))
            return
        if kind == "subscribe" and "channels" in message:
            await self._subscribe_batch(message["channels"])
            return
        channel = message.get("channel")
        if not is_valid_channel(channel):
            self._refuse(kind, None, "the channel must be 1-128 letters, digits or _.:@/-")
        elif kind == "subscribe":
            await self._subscribe(channel, message.get("last_id"))
        elif kind == "unsubscribe":
            self._hub.unsubscribe(self._ws, channel)
        elif "data" not in message:
            self._refuse(kind, channel, "a publish needs data")
        else:
            await self._publish(channel, message["data"])

    async def _subscribe_batch(self, entries: object) -> None:
        """Answer each ``{"channel": C, "last_id": N}`` of a batched subscribe, in turn.

        Within the hub's ``subscribe_share`` of each event loop iteration, with every other
        connection's batches: a deploy's wave never holds up the health check or the fan-outs.
        """
        if (
            not isinstance(entries, list)
            or not 0 < len(entries) <= SUBSCRIBE_BATCH
            or not all(isinstance(entry, dict) for entry in entries)
        ):
            self._refuse("subscribe", None, f"channels must be 1-{SUBSCRIBE_BATCH} objects")
            return
        share = self._hub.subscribe_share
        for entry in entries:
            if share.spent():  # this iteration's share is used: the rest of it goes first
                self._flush()
                await share.wait()
            channel = entry.get("channel")
            if not is_valid_channel(channel):
                self._refuse("subscribe", None, "a channel must be 1-128 letters, digits or _.:@/-")
            else:
                await self._subscribe(channel, entry.get("last_id"))

    async def _subscribe(self, channel: str, last_id: object) -> None:
        hub, connection, ws = self._hub, self._connection, self._ws
        if last_id is not None and (type(last_id) is not int or last_id < 0):
            self._refuse("subscribe", channel, "last_id must be a whole number")
        elif hub.is_subscribed(ws, channel):
            self._refuse("subscribe", channel, "already subscribed")
        elif hub.subscriptions(ws) >= self._max_subscriptions:
            self._refuse("subscribe", channel, "too many subscriptions (MAX_SUBSCRIPTIONS)")
        elif await self._ask(
            "subscribe", channel, self._service.authorize_subscribe(connection, channel)
        ) and self._may_open(channel):
            presence = self._service.has_presence(channel)
            member = Member(connection.member, connection.id) if presence else None
            counted = self._service.counts_presence(channel)
            try:
                await eagerly(
                    hub.subscribe(ws, self._transport, channel, last_id, member, counted=counted),
                    self._flush,
                )
            except HubUnavailable as error:
                logger.warning("presence on %s failed: %s", channel, error)
                self._refuse(
                    "subscribe",
                    channel,
                    "unavailable, try again",
                    retry_after=UNAVAILABLE_RETRY_AFTER,
                )

    def _may_open(self, channel: str) -> bool:
        """Whether ``channel`` exists here or the connection may open a new channel now.

        Every channel new to the process costs a replay log and bookkeeping: a connection opens
        at most ``max_new_channels_per_minute`` of them (bursts of ``max_subscriptions``); past
        it, the client is told when it may try again.
        """
        now = asyncio.get_running_loop().time()
        if self._hub.has_channel(channel) or self._new_channels.take(1, now):
            return True
        self._hub.metrics.refused_channels.inc()
        self._refuse(
            "subscribe",
            channel,
            "too many new channels (MAX_NEW_CHANNELS_PER_MINUTE), try again",
            retry_after=self._new_channels.wait(1, now),
        )
        return False

    async def _publish(self, channel: str, data: object) -> None:
        prepared = await self._answer(
            "publish", channel, self._service.prepare_publish(self._connection, channel, data)
        )
        if prepared is _REFUSED:
            return
        try:
            await broadcast_within_budget(self._hub, channel, prepared)
        except Refusal as refusal:
            self._refuse("publish", channel, refusal.reason)

    async def _ask(self, kind: str, channel: str | None, answer: Any) -> bool:
        """Await a hook's ``answer``: True if it allows; else the client has been told why."""
        allowed = await self._answer(kind, channel, answer)
        if allowed is _REFUSED:
            return False
        if allowed is False:
            self._refuse(kind, channel, "forbidden")
            return False
        return True

    async def _answer(self, kind: str, channel: str | None, answer: Any) -> object:
        """Await a hook's ``answer``; ``_REFUSED`` if it refused or failed (the client was told).

        ``HOOK_TIMEOUT`` counts from the hook's first wait (:func:`eagerly`).
        """
        try:
            result: object = await eagerly(answer, self._flush, HOOK_TIMEOUT)
        except Refusal as refusal:
            self._refuse(kind, channel, refusal.reason)
            return _REFUSED
        except TimeoutError:
            logger.warning("the service took longer than %.0f s to answer a %s", HOOK_TIMEOUT, kind)
            self._refuse(kind, channel, "the service did not answer in time")
            return _REFUSED
        except Exception:
            logger.exception("the service failed to answer a %s", kind)
            self._refuse(kind, channel, "the service failed")
            return _REFUSED
        return result

    def _flush(self) -> None:
        """Write the answers gathered so far, in one write."""
        self._hub.flush(self._ws)

    def _refuse(
        self,
        kind: str | None,
        channel: str | None,
        reason: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Tell the client ``kind`` was refused; ``retry_after``: seconds until it may succeed."""
        error: dict[str, object] = {"type": "error", "request": kind, "reason": reason}
        if channel is not None:
            error["channel"] = channel
        if retry_after is not None:
            error["retry_after"] = round(retry_after, 3)
        self._hub.send(self._ws, error)
