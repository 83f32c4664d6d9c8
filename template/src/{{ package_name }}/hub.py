"""The one WebSocket hub of the process, shared by every connection.

Every connection receives the default stream (the demo's integers), and the channels it
subscribes to: each stream, the default one and every channel, has ids of its own, a replay log
of its own, and its own subscribers (presence too, on the channels the service asks it for).

Every broadcast goes through the broker (which gives it its id and brings it to the hub of every
process), is framed once, kept in the replay log for clients that reconnect, and written directly
to each client's transport: no task and no queue per delivery. A client that stops reading is cut
off once its unsent data passes a limit, so it can neither stall the others nor make memory grow
without bound.

A reconnecting client is brought up to date by a task of its own, paced by that client alone:
chunks of the replay log written whole, each once the previous one has drained, through the same
unsent-bytes limit as live frames, and never under anything that others wait on. Only then does it
receive live broadcasts, so it gets every missed broadcast, then the live ones, in order, once.

The hub writes frames to the transport itself and relies on two things of every
:class:`Client`: its connection never compresses, so a frame is written whole in one go with no
await in between; and ``close()`` marks it ``closed`` before it writes the close frame, so
checking ``closed`` right before a write keeps any data frame from following a close frame.

Every message is a JSON object; a client joined with a :data:`~.frames.Dialect` gets each one as
that dialect rewrites it, rewritten once per fan-out for all the clients of the dialect. Frames are
made in :mod:`.frames`; a reconnecting client's catch-up is planned by :mod:`.catchup`, and the hub
only carries its steps out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import NamedTuple, Protocol

from aiohttp import WSCloseCode

from .broker import Broker, HubUnavailable, Member
from .catchup import (
    CATCH_UP_STALL_SECONDS,
    AskHistory,
    AwaitDelivery,
    CatchUp,
    CutOff,
    Drain,
    Gap,
    Live,
    Step,
    Write,
)
from .frames import HEARTBEAT, PING_FRAME, Dialect, event, gap, subscribed, text_frame
from .guards import LoopShare, TokenBucket
from .metrics import Metrics
from .replay import ReplayLog

# HubUnavailable too: a 0.2.0 project's own integers.py imports it from here (never updated).
__all__ = ["CLOSE_TIMEOUT", "Client", "Hub", "HubUnavailable", "Member"]

logger = logging.getLogger(__name__)

#: Clients served between two yields to the event loop during a fan-out, so that the health check
#: and new connections are answered within milliseconds even while thousands of clients are served.
YIELD_EVERY = 256

#: Seconds of each event loop iteration that subscribes of batches may take, all connections
#: together (``LoopShare``): a deploy's wave of thousands of batched subscribes never holds the
#: loop longer than that before the health check, the fan-outs and new connections go on.
SUBSCRIBE_SHARE_SECONDS = 0.005

#: Seconds a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 3.0

#: Fewest clients closed at once by a drain, and shortest pause between two batches (seconds).
DRAIN_BATCH = 50
DRAIN_STEP = 0.1

#: Seconds a channel nobody here subscribes to any more keeps its replay log, for the clients
#: that come back (a deploy's reconnects), and the most such channels kept at once.
IDLE_CHANNEL_SECONDS = 60.0
MAX_IDLE_CHANNELS = 1000

#: Seconds over which the presence changes of a channel are gathered into one frame, so that a
#: wave of N subscribers costs N frames per subscriber of the channel at most once per period.
PRESENCE_PERIOD = 0.5

#: Seconds between two counts of a counted channel's subscribers in every process, and the
#: shortest interval between two counts told to its subscribers (only when it changed): a change
#: reaches every subscriber within about two periods plus one interval.
COUNT_PERIOD = 0.5
COUNT_INTERVAL = 1.0

#: Unsent bytes that all the catching-up clients of the process may hold at once: past it, the
#: next chunk of each waits for room.
CATCH_UP_BUDGET_BYTES = 64 * 1024 * 1024

#: Why a client is cut off (the ``reason`` of the ``cut_offs`` metric), in words for the log.
CUT_OFF_REASONS = {
    "slow": "stopped reading",
    "backlog": "fell behind its own backlog",
    "error": "could not be brought up to date",
    "silent": "answered no ping",
    "stalled": f"read none of its catch-up for {CATCH_UP_STALL_SECONDS:.0f} s",
}


class Client(Protocol):
    """A client's WebSocket as the hub sees it; the hub writes to its transport itself.

    A raw client (:class:`~.inbound.RawClient`) is one, and so is aiohttp's
    ``WebSocketResponse`` (Socket.IO's clients).
    """

    @property
    def closed(self) -> bool:
        """Whether a close frame was sent or received: no data frame may follow."""

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool:
        """Close with ``code`` and ``message``; return once the closing handshake is over."""


class _CatchUp(NamedTuple):
    """A client being brought up to date on a stream."""

    transport: asyncio.Transport
    task: asyncio.Task[None]


class _Stream:
    """The default stream (``channel`` None) or one channel: its log and its subscribers."""

    def __init__(self, channel: str | None, replay_size: int) -> None:
        self.channel = channel
        self.log = ReplayLog(replay_size)
        self.restarts = 0  # times a hole in the ids made the replay log start again
        self.clients: dict[Client, asyncio.Transport] = {}
        self.catching_up: dict[Client, _CatchUp] = {}
        self.delivered = asyncio.Event()  # set, and replaced, at each delivery
        self.publishes: TokenBucket | None = None  # clients' publishes it takes, once it has any

    @property
    def subscriber_count(self) -> int:
        return len(self.clients) + len(self.catching_up)

    def subscribers(self) -> list[tuple[Client, asyncio.Transport]]:
        """Every subscriber with its transport: the live ones, then the catching-up ones."""
        return [*self.clients.items()] + [
            (ws, catching_up.transport) for ws, catching_up in self.catching_up.items()
        ]

    def transport(self, ws: Client) -> asyncio.Transport | None:
        """The transport of the subscriber ``ws``, live or catching up; None if it is not one."""
        transport = self.clients.get(ws)
        if transport is None and (catching_up := self.catching_up.get(ws)) is not None:
            transport = catching_up.transport
        return transport

    @property
    def kind(self) -> str:
        """What a message of this stream is to a dialect: ``broadcast`` or ``channel``."""
        return "broadcast" if self.channel is None else "channel"


class Hub:
    """Fans broadcasts out to every connected WebSocket client, and channels to subscribers.

    Args:
        broker: Gives broadcasts their ids and delivers them to this hub (and to the others).
        replay_size: Number of recent broadcasts kept for reconnecting clients (0 keeps none).
        channel_replay_size: Number of recent messages kept per channel for resubscribing clients.
        max_client_buffer_bytes: Unsent bytes one client may hold before it is closed with 1013.
        publishes_per_second: Clients' publishes the process takes per second (bursts of twice).
        channel_publishes_per_second: Clients' publishes a channel takes per second here.
        metrics: Where the hub counts what it does.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        replay_size: int,
        channel_replay_size: int,
        max_client_buffer_bytes: int,
        publishes_per_second: float,
        channel_publishes_per_second: float,
        metrics: Metrics,
    ) -> None:
        self._broker = broker
        self._publishes = TokenBucket(publishes_per_second, time.monotonic())
        self._channel_publishes_per_second = channel_publishes_per_second
        self._metrics = metrics
        metrics.connections.set_function(lambda: self.client_count)
        metrics.channels.set_function(lambda: len(self._channels))
        self._default = _Stream(None, replay_size)
        self._channel_replay_size = channel_replay_size
        self._channels: dict[str, _Stream] = {}
        # Channels nobody here subscribes to any more, kept a while for clients that come back
        # (a deploy's reconnects): channel -> loop time it became idle, oldest first. Ordered
        # so that the oldest is found and forgotten in O(1), however many there are.
        self._idle_channels: OrderedDict[str, float] = OrderedDict()
        self._subscriptions: dict[Client, dict[str, Member | None]] = {}
        self._dialects: dict[Client, Dialect] = {}  # clients of another dialect
        # Frames for one client alone (subscribes' answers) that wait for flush(), in order.
        self._unwritten: dict[Client, list[bytes]] = {}
        self._max_client_buffer_bytes = max_client_buffer_bytes
        self._catch_up_unsent = 0  # bytes written by catch-ups, not yet sent (CATCH_UP_BUDGET)
        # One fan-out at a time, so every client receives frames in id order. Whoever holds it
        # only writes to transports and yields: it never waits for a client.
        self._fan_out_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._presence_changes: dict[str, dict[str, bool]] = {}  # channel -> name -> present
        # Counted channels with subscribers here: channel -> the task that counts them.
        self._counting: dict[str, asyncio.Task[None]] = {}
        self._counts: dict[str, int] = {}  # counted channel -> the count its subscribers have
        # Clients pinged by the last heartbeat that have sent nothing since, not even the pong.
        self._unheard: set[Client] = set()
        #: Set while at least one client is connected.
        self.occupied = asyncio.Event()
        #: Whether the process is shutting down: no new client is taken.
        self.draining = False
        #: The part of each event loop iteration that batched subscribes may take.
        self.subscribe_share = LoopShare(SUBSCRIBE_SHARE_SECONDS)

    @property
    def metrics(self) -> Metrics:
        """Where the hub, and the sessions of its clients, count what they do."""
        return self._metrics

    @property
    def client_count(self) -> int:
        """Number of connected clients, catching up or live."""
        return self._default.subscriber_count

    async def start(self) -> None:
        """Start receiving broadcasts from the broker; never waits for a remote service."""
        if not self._broker.shared:
            self._metrics.broker_connected.set(1)  # in-process: always there
        await self._broker.start(self)

    async def stop(self) -> None:
        """Stop counting, then the broker (after the producers, so that their leases are given
        up)."""
        counting = [*self._counting.values()]
        for task in counting:
            task.cancel()
        await asyncio.gather(*counting, return_exceptions=True)
        await self._broker.stop()

    def join(
        self,
        ws: Client,
        transport: asyncio.Transport,
        last_id: int | None,
        dialect: Dialect | None = None,
    ) -> None:
        """Add a prepared WebSocket; with ``last_id``, first bring it up to date in the background.

        Args:
            ws: The client's prepared WebSocket response.
            transport: The client's transport, watched to cut off a client that stops reading.
            last_id: The last broadcast id the client saw before it reconnected, if any.
            dialect: How the client is sent each message; None for the JSON objects themselves.
        """
        limit = self._max_client_buffer_bytes
        # Raise the high-water mark above the cut-off limit: the fan-out never waits for a drain.
        transport.set_write_buffer_limits(high=2 * limit)
        # Cap the kernel's send buffer too, so that a stalled client holds a bounded amount.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)
        self._subscriptions[ws] = {}
        if dialect is not None:
            self._dialects[ws] = dialect
        self._add(self._default, ws, transport, last_id)
        self.occupied.set()
        self._metrics.joins.inc()
        logger.debug("client joined (%d connected)", self.client_count)

    def leave(self, ws: Client) -> None:
        """Forget a client whose connection has ended, and every channel it subscribed to."""
        self._unheard.discard(ws)
        for channel in [*self._subscriptions.get(ws, ())]:
            self.unsubscribe(ws, channel)
        self._subscriptions.pop(ws, None)
        self._dialects.pop(ws, None)
        self._unwritten.pop(ws, None)
        if self._remove(self._default, ws):
            self._metrics.leaves.inc()
            logger.debug("client left (%d connected)", self.client_count)
        if not self.client_count:
            self.occupied.clear()

    def subscriptions(self, ws: Client) -> int:
        """Number of channels ``ws`` subscribes to."""
        return len(self._subscriptions.get(ws, ()))

    async def subscribe(
        self,
        ws: Client,
        transport: asyncio.Transport,
        channel: str,
        last_id: int | None,
        member: Member | None,
        *,
        counted: bool = False,
    ) -> None:
        """Send ``channel``'s messages to ``ws`` too; with ``last_id``, the missed ones first.

        Answers ``{"type": "subscribed", "channel": ..., "last_id": ...}`` before any message of
        the channel: ``last_id`` is the id of its newest message so far (None if it has none),
        from which a client that resubscribes later recovers what it missed. The answer is not
        written at once: it waits for :meth:`flush`, with ``ws``'s other answers (a batch's
        in one write), and the caller flushes before it next yields to the event loop. Any
        fan-out writes them first, so no message of the channel ever overtakes its answer.
        With ``member`` (who the client is, on a channel with presence), the client is first
        announced to the channel's subscribers in every process, then told who is here with
        ``{"type": "presence", "channel": ..., "members": [...]}`` right after ``subscribed``.
        On a ``counted`` channel, the client is told how many subscribe to it in every process,
        ``{"type": "presence", "channel": ..., "count": N}``, right after ``subscribed`` (the
        latest count, which may be a second old), then at most every ``COUNT_PERIOD`` when the
        count changes; never who they are.

        Raises:
            HubUnavailable: The broker could not record the presence: the client is not
                subscribed.
        """
        subscriptions = self._subscriptions.get(ws)
        if subscriptions is None or channel in subscriptions or _ended(ws, transport):
            return
        presence = None
        known = self._channels.get(channel)
        # Where the channel stands, for a client without a last id: from this process's log if
        # it has the channel, else from the broker (the last message another process delivered).
        newest_id = None
        if last_id is None and (known is None or known.log.newest_id is None):
            newest_id = await self._broker.newest_id(channel)
        if member is not None:
            try:
                await self._broker.enter(channel, member)
                members = await self._broker.members(channel)
            except HubUnavailable:
                self._in_background(self._broker.leave(channel, member))  # whatever was done
                raise
            presence = event(type="presence", channel=channel, members=members)
        if self._subscriptions.get(ws) is not subscriptions or _ended(ws, transport):
            if member is not None:
                self._in_background(self._broker.leave(channel, member))  # it left meanwhile
            return
        stream = self._channels.get(channel)
        if stream is None:
            stream = self._channels[channel] = _Stream(channel, self._channel_replay_size)
        self._idle_channels.pop(channel, None)
        subscriptions[channel] = member
        if stream.log.newest_id is not None:
            newest_id = stream.log.newest_id  # delivered here meanwhile, or known already
        answer = subscribed(channel, newest_id)
        if counted:
            count = self._counts.get(channel, stream.subscriber_count + 1)
            presence = event(type="presence", channel=channel, count=count)
            if channel not in self._counting:
                self._counting[channel] = asyncio.create_task(self._count_presence(stream))
        unwritten = self._unwritten.setdefault(ws, [])
        unwritten.append(self._frame(ws, "subscribed", answer))
        if presence is not None:
            unwritten.append(self._frame(ws, "presence", presence))
        if last_id is None and self._broker.shared:
            # The client has what its answer says. A shared broker's newest id may be that of a
            # message this process has not delivered yet, or delivered to nobody here while the
            # broker was asked: the client catches up from it (issue 24).
            last_id = newest_id
        self._add(stream, ws, transport, last_id)

    def unsubscribe(self, ws: Client, channel: str) -> None:
        """Stop sending ``channel``'s messages to ``ws``, announcing it leaves if it was present."""
        subscriptions = self._subscriptions.get(ws)
        if subscriptions is None or channel not in subscriptions:
            return
        member = subscriptions.pop(channel)
        stream = self._channels[channel]
        self._remove(stream, ws)
        if not stream.subscriber_count:
            self._idle_channels[channel] = asyncio.get_running_loop().time()
            if len(self._idle_channels) > MAX_IDLE_CHANNELS:  # the cap holds at all times
                del self._channels[self._idle_channels.popitem(last=False)[0]]
        if member is not None:
            self._in_background(self._broker.leave(channel, member))

    def has_channel(self, channel: str) -> bool:
        """Whether ``channel`` exists in this process (subscribed to, or idle and kept)."""
        return channel in self._channels

    def is_subscribed(self, ws: Client, channel: str) -> bool:
        """Whether ``ws`` subscribes to ``channel``."""
        return channel in self._subscriptions.get(ws, ())

    def send(self, ws: Client, message: dict[str, object]) -> bool:
        """Send ``message`` (JSON-serialisable, with a ``type``) to ``ws`` alone.

        Written after ``ws``'s answers that wait for :meth:`flush`, with them.

        Returns:
            False if ``ws`` is gone or was just cut off.
        """
        transport = self._default.transport(ws)
        if transport is None:
            return False
        payload = json.dumps(message, separators=(",", ":")).encode()
        frame = self._frame(ws, str(message["type"]), payload)
        if (unwritten := self._unwritten.get(ws)) is not None:
            unwritten.append(frame)
            return not _ended(ws, transport)
        return self._write(ws, transport, frame)

    def flush(self, ws: Client) -> None:
        """Write ``ws``'s answers that wait (of :meth:`subscribe` and :meth:`send`), in one write.

        Its subscribes' answers wait for this, so that a batch of them costs one write; whoever
        subscribes calls it before it next yields to the event loop (other tasks write to
        ``ws``: a channel's messages must not go before their channel's answer).
        """
        unwritten = self._unwritten.pop(ws, None)
        if unwritten is not None and (transport := self._default.transport(ws)) is not None:
            self._write(ws, transport, b"".join(unwritten))

    async def broadcast(self, data: object, channel: str | None = None) -> int:
        """Send ``data`` to every client of every process, or to ``channel``'s subscribers.

        Clients get ``{"id": ..., "data": ...}``, or ``{"channel": ..., "id": ..., "data": ...}``.

        Returns:
            The id of this broadcast in its stream (each channel has ids of its own).

        Raises:
            HubUnavailable: The broker could not take the broadcast.
            ValueError: ``data`` holds a number JSON cannot carry (NaN or infinity).
        """
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        return await self._broker.publish(text, channel)

    def take_publish(self, channel: str) -> str | None:
        """Count one client's publish on ``channel`` against the process's budgets.

        A channel that nobody here subscribes to costs this process no fan-out: only the
        process's budget applies to it. Each process has budgets of its own.

        Returns:
            None within both budgets; else the one that is spent, ``channel`` or ``process``
            (and the publish takes nothing from either).
        """
        now = time.monotonic()
        spent = None
        budget = None
        if (stream := self._channels.get(channel)) is not None:
            if stream.publishes is None:
                stream.publishes = TokenBucket(self._channel_publishes_per_second, now)
            budget = stream.publishes
            if not budget.take(1, now):
                spent = "channel"
        if spent is None and not self._publishes.take(1, now):
            spent = "process"
            if budget is not None:
                budget.take(-1, now)  # given back: the process's budget refused it
        if spent is not None:
            self._metrics.refused_publishes.labels(spent).inc()
        return spent

    async def broadcast_once(
        self, key: str, data: object, channel: str | None = None
    ) -> tuple[int, bool]:
        """Broadcast as :meth:`broadcast` does, once per idempotency ``key``.

        Returns:
            The broadcast's id and True; for a ``key`` seen already, the id of its first
            broadcast and False, and nothing is sent again.

        Raises:
            HubUnavailable: The broker could not take the broadcast.
            PublishInProgress: A broadcast with ``key`` is under way.
            ValueError: ``data`` holds a number JSON cannot carry (NaN or infinity).
        """
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        return await self._broker.publish_once(key, text, channel)

    def heard(self, ws: Client) -> None:
        """Note that ``ws`` sent a frame (a pong or anything else): its peer is still there."""
        self._unheard.discard(ws)

    async def send_heartbeat(self) -> None:
        """Drop the clients that stayed silent since the last heartbeat, then ping every client.

        Each client gets a WebSocket ping and a heartbeat frame, so that either end can tell a dead
        connection. A client that has sent nothing since the previous ping, not even its pong, is
        gone without a FIN (a NAT or a proxy forgot it, a laptop slept): its connection is
        aborted. One pass for every client, instead of a timer per connection. Also forgets the
        channels nobody has subscribed to for ``IDLE_CHANNEL_SECONDS``.
        """
        silent, self._unheard = self._unheard, set()
        for ws in silent:
            if (transport := self._default.transport(ws)) is not None:
                self._drop_silent(ws, transport)
        # Taken before the pings go out, so that a pong arriving during the fan-out counts.
        # Clients of a dialect are pinged by their own protocol, which drops the silent ones
        # itself.
        self._unheard = {*self._default.clients, *self._default.catching_up}.difference(
            self._dialects
        )
        async with self._fan_out_lock:
            await self._fan_out(
                self._default,
                "heartbeat",
                HEARTBEAT,
                PING_FRAME + text_frame(HEARTBEAT),
            )
        await self._forget_idle_channels(asyncio.get_running_loop().time() - IDLE_CHANNEL_SECONDS)

    async def drain(self, seconds: float) -> None:
        """Refuse new clients, and close the connected ones with 1012 over ``seconds``.

        The clients are closed in batches of at least ``DRAIN_BATCH``, at most one batch every
        ``DRAIN_STEP`` seconds, the first at once and the last ``seconds`` later at the latest, so
        that their reconnects reach the other containers spread out instead of in one wave.
        Returns once every closing handshake is done (or dropped after ``CLOSE_TIMEOUT``).
        """
        self.draining = True
        clients = self._default.subscribers()
        if not clients:
            return
        batches = max(1, min(math.ceil(len(clients) / DRAIN_BATCH), int(seconds / DRAIN_STEP)))
        size = math.ceil(len(clients) / batches)
        logger.info("draining %d WebSocket connections over %.1f s", len(clients), seconds)
        closing: list[asyncio.Task[None]] = []
        for start in range(0, len(clients), size):
            if start:
                await asyncio.sleep(seconds / batches)
            closing += [
                asyncio.create_task(_close(ws, transport, WSCloseCode.SERVICE_RESTART, b"restart"))
                for ws, transport in clients[start : start + size]
            ]
        await asyncio.gather(*closing)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every connection with ``code`` (default 1001), within ``CLOSE_TIMEOUT``."""
        clients = self._default.subscribers()
        for ws, _transport in clients:
            self.leave(ws)
        if clients:  # none when the app stops before it ever listened (a port in use)
            logger.info("closing %d WebSocket connections with %d", len(clients), code)
        await asyncio.gather(*(_close(ws, tr, code, b"server shutdown") for ws, tr in clients))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- delivery ----------------------------------------------------------------------------

    def remember(self, messages: list[tuple[int, bytes]]) -> None:
        """Called by the broker: keep broadcasts made elsewhere before it started, for replay."""
        for message_id, message in messages:
            self._default.log.append(message_id, text_frame(message))

    async def deliver(self, message_id: int, message: bytes, channel: str | None = None) -> None:
        """Called by the broker: fan one broadcast out to the live clients, in id order.

        A channel's message reaches this process's subscribers of the channel; one of a channel
        nobody here subscribes to (or has, lately) is dropped.
        """
        stream = self._default if channel is None else self._channels.get(channel)
        if stream is None:
            return
        frame = text_frame(message)
        metrics = self._metrics
        async with self._fan_out_lock:
            started = time.perf_counter()
            newest_id = stream.log.newest_id
            if not stream.log.append(message_id, frame) and newest_id is not None:
                # Broadcasts were lost to this process (the broker restarted, or it was away
                # longer than the broker keeps them): tell the clients, never replay across it.
                stream.restarts += 1
                await self._fan_out(stream, "gap", gap(newest_id, message_id, channel))
            written = await self._fan_out(stream, stream.kind, message, frame)
            metrics.fan_out_seconds.observe(time.perf_counter() - started)
        metrics.broadcasts.inc()
        metrics.deliveries.inc(written)
        metrics.sent_bytes.inc(written * len(frame))
        stream.delivered.set()
        stream.delivered = asyncio.Event()

    async def deliver_presence(self, channel: str, name: str, present: bool) -> None:
        """Called by the broker: ``name`` came to ``channel`` (``present``), or left it.

        This process's subscribers of the channel are told within ``PRESENCE_PERIOD``, with the
        other changes of that period: ``{"type": "presence", "channel": ..., "joined": [...],
        "left": [...]}``.
        """
        if channel not in self._channels:
            return
        changes = self._presence_changes.get(channel)
        if changes is None:
            changes = self._presence_changes[channel] = {}
            self._in_background(self._announce_presence(channel))
        changes.pop(name, None)  # the latest change of a name counts, and goes last
        changes[name] = present

    # --- internals ---------------------------------------------------------------------------

    async def _announce_presence(self, channel: str) -> None:
        """After ``PRESENCE_PERIOD``, tell the channel's subscribers what changed meanwhile."""
        await asyncio.sleep(PRESENCE_PERIOD)
        changes = self._presence_changes.pop(channel, {})
        stream = self._channels.get(channel)
        if stream is None or not changes:
            return
        joined = [name for name, present in changes.items() if present]
        left = [name for name, present in changes.items() if not present]
        presence = event(type="presence", channel=channel, joined=joined, left=left)
        async with self._fan_out_lock:
            await self._fan_out(stream, "presence", presence, catching_up=True)

    async def _count_presence(self, stream: _Stream) -> None:
        """Every ``COUNT_PERIOD``, count the subscribers of the counted channel of ``stream`` in
        every process, and tell this process's subscribers when the count changed, at most every
        ``COUNT_INTERVAL``; once none is left here, say so to the broker and stop.
        """
        channel = stream.channel
        assert channel is not None
        loop = asyncio.get_running_loop()
        told = -COUNT_INTERVAL  # when the subscribers were last told
        try:
            while True:
                here = stream.subscriber_count
                try:
                    count = await self._broker.count_present(channel, here)
                except HubUnavailable as error:
                    logger.warning("could not count the subscribers of %s: %s", channel, error)
                    count = None
                if not here:
                    if not stream.subscriber_count:
                        return
                    continue  # one came back meanwhile: count again at once
                if (
                    count is not None
                    and count != self._counts.get(channel)
                    and loop.time() - told >= COUNT_INTERVAL
                ):
                    told = loop.time()
                    self._counts[channel] = count
                    presence = event(type="presence", channel=channel, count=count)
                    async with self._fan_out_lock:
                        await self._fan_out(stream, "presence", presence, catching_up=True)
                await asyncio.sleep(COUNT_PERIOD)
        finally:
            # Forgotten at once, not by a callback later: a subscriber that comes next starts a
            # new count.
            self._counts.pop(channel, None)
            if self._counting.get(channel) is asyncio.current_task():
                del self._counting[channel]

    def _add(
        self,
        stream: _Stream,
        ws: Client,
        transport: asyncio.Transport,
        last_id: int | None,
    ) -> None:
        """Make ``ws`` a subscriber of ``stream``: live, or after catching up from ``last_id``."""
        if last_id is None or last_id == stream.log.newest_id:
            stream.clients[ws] = transport
            return
        task = asyncio.create_task(self._catch_up(stream, ws, transport, last_id))
        stream.catching_up[ws] = _CatchUp(transport, task)
        task.add_done_callback(lambda _task: stream.catching_up.pop(ws, None))

    def _remove(self, stream: _Stream, ws: Client) -> bool:
        """Forget ``ws`` as a subscriber of ``stream``; whether it was one."""
        catching_up = stream.catching_up.pop(ws, None)
        if catching_up is not None and catching_up.task is not asyncio.current_task():
            catching_up.task.cancel()
        return stream.clients.pop(ws, None) is not None or catching_up is not None

    async def _forget_idle_channels(self, idle_since: float) -> None:
        """Forget the channels idle since before ``idle_since``, oldest first, O(1) each.

        Yields to the event loop every ``YIELD_EVERY`` channels, so that however many expire at
        once nobody else waits for it. (The cap on idle channels is kept by ``unsubscribe``.)
        """
        idle = self._idle_channels
        forgotten = 0
        # An OrderedDict's first item is found in O(1), even after many deletions at the front.
        while idle and next(iter(idle.values())) < idle_since:
            del self._channels[idle.popitem(last=False)[0]]
            forgotten += 1
            if forgotten % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _in_background(self, work: Coroutine[object, None, None]) -> None:
        """Run ``work`` (the broker's bookkeeping for a client that left) without waiting."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _write(self, ws: Client, transport: asyncio.Transport, frame: bytes) -> bool:
        """Write ``frame`` to one client, within its unsent-bytes limit."""
        if _ended(ws, transport):
            return False
        if transport.get_write_buffer_size() > self._max_client_buffer_bytes:
            self._cut_off(ws, transport, "slow")
            return False
        transport.write(frame)
        return True

    def _frame(self, ws: Client, kind: str, payload: bytes) -> bytes:
        """The frame of the message ``payload`` (a ``kind`` of :data:`~.frames.Dialect`) for
        ``ws``."""
        dialect = self._dialects.get(ws)
        return text_frame(payload if dialect is None else dialect(kind, payload))

    async def _fan_out(
        self,
        stream: _Stream,
        kind: str,
        payload: bytes,
        frame: bytes | None = None,
        *,
        catching_up: bool = False,
    ) -> int:
        """Write ``payload`` to every live subscriber of ``stream`` (and the catching-up ones).

        ``frame`` is what a client without a dialect gets, when it is at hand already (by
        default, ``payload``'s text frame). The clients found closing or too slow are reported
        to :meth:`_drop` after each batch: the loop writes, and never changes who subscribes.

        Returns:
            The number of clients written to.
        """
        while self._unwritten:  # answers before messages: a hook that broadcast, asked about one
            self.flush(next(iter(self._unwritten)))
        # Framed once for every client (and once per dialect): a delivery is one transport.write,
        # with no coroutine. This bypasses aiohttp's per-send path (two coroutines and a copy),
        # which cost 20-30 % of the fan-out's throughput (vip-skeleton's fan-out benchmark).
        data = text_frame(payload) if frame is None else frame
        dialects = self._dialects
        in_dialect: dict[Dialect, bytes] = {}
        limit = self._max_client_buffer_bytes
        # Two flat lists, not a tuple per client: a fan-out allocates nothing per client that the
        # garbage collector tracks, so it sets off no collection (a full one paused the event
        # loop for 137 ms at 5,000 clients, when each fan-out made 5,000 tuples).
        sockets, transports = [*stream.clients], [*stream.clients.values()]
        if catching_up:
            sockets += stream.catching_up
            transports += [catching_up.transport for catching_up in stream.catching_up.values()]
        closing: list[Client] = []
        slow: list[tuple[Client, asyncio.Transport]] = []
        dropped = 0
        for start in range(0, len(sockets), YIELD_EVERY):
            if start:
                dropped += self._drop(closing, slow)
                await asyncio.sleep(0)  # keep the health check fast during a large fan-out
            end = start + YIELD_EVERY
            for ws, transport in zip(sockets[start:end], transports[start:end], strict=True):
                if ws.closed or transport.is_closing():
                    closing.append(ws)  # no data frame may follow a close frame
                elif transport.get_write_buffer_size() > limit:
                    slow.append((ws, transport))
                # Looked up only with clients of a dialect: hashing a WebSocketResponse calls
                # Python code (about 0.1 µs a client).
                elif not dialects or (dialect := dialects.get(ws)) is None:
                    transport.write(data)
                else:
                    framed = in_dialect.get(dialect)
                    if framed is None:
                        framed = in_dialect[dialect] = text_frame(dialect(kind, payload))
                    transport.write(framed)
        return len(sockets) - dropped - self._drop(closing, slow)

    def _drop(
        self,
        closing: list[Client],
        slow: list[tuple[Client, asyncio.Transport]],
    ) -> int:
        """Forget the ``closing`` clients, cut the ``slow`` ones off, and empty both lists.

        Returns:
            How many clients were dropped.
        """
        dropped = len(closing) + len(slow)
        for ws in closing:
            self.leave(ws)
        for ws, transport in slow:
            self._cut_off(ws, transport, "slow")
        closing.clear()
        slow.clear()
        return dropped

    async def _catch_up(
        self,
        stream: _Stream,
        ws: Client,
        transport: asyncio.Transport,
        last_id: int,
    ) -> None:
        """Bring a client from ``last_id`` of ``stream`` up to date, then make it live there.

        What it missed is written as a :class:`~.catchup.CatchUp` plans it: from the replay log
        or the broker's history, chunk by chunk, paced by the client; a gap notice for what can
        be found nowhere; a cut-off (1013) for a client too slow for its backlog.
        """
        try:
            outcome = await self._bring_up_to_date(stream, ws, transport, last_id)
        except Exception:  # a broker failing in an unforeseen way must not strand the client
            logger.exception("could not bring a reconnecting client up to date")
            self._cut_off(ws, transport, "error")
            return
        if outcome is not None:
            self._metrics.replays.labels(outcome).inc()
        if outcome is not None and not _ended(ws, transport):
            # Up to date: live from the next broadcast on (no await since the last look at the
            # log, so no broadcast can fall between the replay and the live ones).
            stream.catching_up.pop(ws, None)
            stream.clients[ws] = transport

    async def _bring_up_to_date(
        self,
        stream: _Stream,
        ws: Client,
        transport: asyncio.Transport,
        last_id: int,
    ) -> str | None:
        """Carry out the catch-up's steps; ``replayed`` or ``gap``, or None if it ended meanwhile
        or was cut off.

        The client's unsent bytes count against the process's ``CATCH_UP_BUDGET_BYTES`` until
        it is done.
        """
        loop = asyncio.get_running_loop()
        plan = CatchUp(
            last_id,
            stream.log,
            restarts=stream.restarts,
            channel=stream.channel,
            dialect=self._dialects.get(ws),
            limit=self._max_client_buffer_bytes,
            budget_bytes=CATCH_UP_BUDGET_BYTES,
            shared=self._broker.shared,
        )
        held = 0  # this client's part of the process's unsent catch-up bytes
        step: Step | None = None  # the step to carry out; None: ask the plan for the next one
        try:
            while not _ended(ws, transport):
                if step is None:
                    unsent = transport.get_write_buffer_size()
                    self._catch_up_unsent += unsent - held
                    held = unsent
                    step = plan.next_step(
                        unsent=unsent,
                        others_unsent=self._catch_up_unsent - unsent,
                        restarts=stream.restarts,
                        now=loop.time(),
                    )
                match step:
                    case Write(data):
                        transport.write(data)
                        step = None
                    case Drain(seconds):
                        await asyncio.sleep(seconds)
                        step = None
                    case AwaitDelivery(seconds):
                        await _wait(stream.delivered, seconds)
                        step = None
                    case AskHistory(after, most):
                        missed = await self._broker.history(after, most, stream.channel)
                        step = plan.received(missed)
                    case Gap(data):
                        transport.write(data)
                        return "gap"
                    case Live():
                        return "replayed"
                    case CutOff(reason):
                        self._cut_off(ws, transport, reason)
                        return None
            return None
        finally:
            self._catch_up_unsent -= held

    def _cut_off(self, ws: Client, transport: asyncio.Transport, reason: str) -> None:
        """Close a client with 1013 for ``reason``: a key of ``CUT_OFF_REASONS``."""
        self.leave(ws)
        self._metrics.cut_offs.labels(reason).inc()
        logger.warning(
            "closing a client that %s (%d bytes unsent) with 1013",
            CUT_OFF_REASONS[reason],
            transport.get_write_buffer_size(),
        )
        self._in_background(_close(ws, transport, WSCloseCode.TRY_AGAIN_LATER, b"too slow"))

    def _drop_silent(self, ws: Client, transport: asyncio.Transport) -> None:
        """Abort the connection of a client that answered no ping: its peer is gone."""
        self.leave(ws)
        self._metrics.cut_offs.labels("silent").inc()
        logger.info("dropping a client that %s", CUT_OFF_REASONS["silent"])
        transport.abort()


def _ended(ws: Client, transport: asyncio.Transport) -> bool:
    """Whether the connection is closing: no data frame may be written to it any more."""
    return ws.closed or transport.is_closing()


async def _wait(delivered: asyncio.Event, seconds: float) -> None:
    """Wait for ``delivered`` to be set, at most ``seconds``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await delivered.wait()


async def _close(ws: Client, transport: asyncio.Transport, code: int, reason: bytes) -> None:
    """Close ``ws`` with ``code``; drop the connection if the peer does not finish in time."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason)
    except TimeoutError:
        transport.abort()
