"""A WebSocket client that reconnects by itself and recovers what it missed.

Deploys and autoscaling drop connections without warning, so the client treats every drop as
temporary: it waits a random delay that grows after each failed attempt (capped exponential backoff
with full jitter, so that thousands of clients do not all come back at once), reconnects with the
last id it saw, and the server replays what it missed. The policy matches ``static/ws-client.js``.

Use it as an async iterator::

    async with ReconnectingClient("ws://127.0.0.1:3000/_ws/integers") as client:
        async for message in client:
            print(message.id, message.data)

Channels ride on the same connection, and are subscribed to again after every reconnect, with
the last id seen on each; subscribes go out in batched frames paced within the server's
allowance, however many channels there are::

    async with ReconnectingClient(url, on_event=print) as client:
        await client.subscribe("chat/lobby")
        async for message in client:
            if message.channel == "chat/lobby":
                await client.publish("chat/lobby", {"name": "bot", "text": "heard you"})

With tokens (``AUTH_SECRET`` on the server), give a provider: a function that returns a fresh
token (from a WordPress REST route, say), called before every connection and sent as
``["bearer", token]``. A connection closed with 4001 (its token expired) comes back at once with a
new token; a handshake refused with 401 gets one more token and one more try, then the client
reports ``{"type": "unauthorized"}`` and raises :class:`HandshakeRefused`::

    async with ReconnectingClient(url, token_provider=fetch_token) as client: ...

or from a shell: ``python -m <package>.client URL`` prints every message, one JSON per line.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)

#: Close code of a connection whose token expired: come back with a new token.
TOKEN_EXPIRED = 4001
#: Close code of a client that sent more than its allowance: reconnect later, send more slowly.
RATE_EXCEEDED = 4008
#: Close codes after which reconnecting would only repeat the refusal (1008, and 4000-4999 but
#: the ones in the taxonomy that say "try again" or "renew": docs/protocol.md).
POLICY_CODES = frozenset({1008, *range(4000, 5000)} - {TOKEN_EXPIRED, RATE_EXCEEDED})
#: Backoff base after 4001, in seconds: a new token is at hand, so the client comes back soon.
RENEW_BASE = 1.0
#: The backoff's exponent stops growing here, as in the browser client.
MAX_ATTEMPT = 30
#: Channels per batched subscribe frame, and most bytes of JSON in one (the server takes 100).
SUBSCRIBE_BATCH = 100
SUBSCRIBE_BATCH_BYTES = 8192
#: Batched subscribe frames sent at once (after a reconnect, say), then one every
#: ``SUBSCRIBE_INTERVAL`` seconds: a quarter of the default allowance's burst (40 messages and
#: 128 KiB), then under half its rate (20 messages and 64 KiB a second), however many channels.
SUBSCRIBE_BURST = 4
SUBSCRIBE_INTERVAL = 0.25
#: How much slower, at most, a client subscribes after being closed for sending too much.
MAX_SLOWDOWN = 8


@dataclass(frozen=True, slots=True)
class Message:
    """One broadcast: its id, increasing by one per broadcast of its stream, and its data.

    ``channel`` is None for the default stream (every connection gets it), else the channel.
    """

    id: int
    data: Any
    channel: str | None = None


def close_policy(code: int | None) -> str:
    """What to do after the connection closed with ``code`` (None: it dropped without one).

    ``stop`` (1000): do not reconnect; ``refused`` (1008, 4000-4999 but 4001 and 4008): do not
    reconnect, raise; ``renew`` (4001): get a new token and reconnect soon; ``later`` (1013,
    busy): reconnect after a longer backoff; ``slow`` (4008, too much too soon): reconnect after
    the longer backoff and resubscribe more slowly; ``retry`` (1001, 1006, 1012...): reconnect
    after the backoff. The browser client's ``closePolicy``, to the letter
    (tests/reconnect-policy.json, docs/protocol.md).
    """
    if code == 1000:
        return "stop"
    if code == TOKEN_EXPIRED:
        return "renew"
    if code == RATE_EXCEEDED:
        return "slow"
    if code in POLICY_CODES:
        return "refused"
    if code == 1013:
        return "later"
    return "retry"


class ConnectionRefusedByPolicy(Exception):
    """The server closed with 1008 or a final 4xxx code: reconnecting would not help."""

    def __init__(self, code: int) -> None:
        super().__init__(f"server refused the connection with close code {code}")
        self.code = code


class HandshakeRefused(Exception):
    """The server answered the handshake with a 4xx status (not 429): retrying would not help."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"{url} answered the WebSocket handshake with HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    Attempt ``n`` (from 0) waits a random time in ``[0, min(cap, base * 2**n))``; a server that
    asks to try again later (1013) or says the client sent too much (4008) gets at least ``base``
    seconds in a window four times as wide, still capped; after 4001 the base is ``RENEW_BASE``:
    the browser client's policy, to the
    letter.
    """

    base: float = 5.0
    cap: float = 30.0
    random: Callable[[], float] = random.random

    def delay(self, attempt: int, close_code: int | None = None) -> float:
        """Return the delay before reconnect attempt ``attempt``."""
        low, base = 0.0, self.base
        if close_policy(close_code) in ("later", "slow"):  # try again later: back off longer
            attempt, low = attempt + 2, self.base
        elif close_policy(close_code) == "renew":  # with a new token: soon
            base = RENEW_BASE
        window = min(self.cap, base * 2.0 ** min(attempt, MAX_ATTEMPT))
        low = min(low, window)
        return low + self.random() * (window - low)


class _SilenceWatch:
    """A connection's silence timeout: one timer for all its frames, not one per frame.

    A task that has waited ``seconds`` in a row for a frame, between :meth:`start_wait` and
    :meth:`end_wait`, is cancelled; where it catches the cancellation, :meth:`expired` tells
    whether it was this watch's (then the task's count of cancellations is restored, as
    ``asyncio.timeout`` does). A timeout around each receive would arm and cancel a timer per
    frame, a large share of the client's CPU when frames come by the thousand; this timer is
    armed again only when it fires, for the end of the wait in progress.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Task[Any] | None = None  # the task waiting for a frame, if any
        self._since = 0.0  # when it started waiting
        self._cancelling = 0  # the waiter's count of cancellations before this watch's
        self._fired = False
        self._timer = self._loop.call_later(seconds, self._check)

    def start_wait(self) -> None:
        """The current task starts waiting for a frame."""
        self._waiter = asyncio.current_task()
        self._since = self._loop.time()

    def end_wait(self) -> None:
        """The frame came."""
        self._waiter = None

    def expired(self) -> bool:
        """Whether the cancellation the waiting task is handling is this watch's doing."""
        waiter, self._waiter = self._waiter, None
        return self._fired and waiter is not None and waiter.uncancel() <= self._cancelling

    def stop(self) -> None:
        """Disarm the watch: the connection is over."""
        self._timer.cancel()

    def _check(self) -> None:
        """The timer fired: cancel a task that waited too long, else check again in time."""
        waiter, now = self._waiter, self._loop.time()
        if waiter is None:  # a wait to come ends a full timeout from now at the earliest
            self._timer = self._loop.call_at(now + self._seconds, self._check)
        elif now - self._since < self._seconds:
            self._timer = self._loop.call_at(self._since + self._seconds, self._check)
        else:
            self._fired, self._cancelling = True, waiter.cancelling()
            waiter.cancel()


class ReconnectingClient:
    """Receives broadcasts from one WebSocket URL across any number of reconnects.

    Args:
        url: A ``ws://`` or ``wss://`` URL on a ``/_ws/`` path.
        backoff: Delays between attempts.
        stable_after: Seconds a connection must last before the attempt counter resets.
        silence_timeout: Seconds without any frame after which the connection counts as dead; the
            server sends a heartbeat every 25 s by default.
        on_gap: Called with ``(last_id, oldest_id)`` when the server could not replay everything
            that was missed; the data in between is lost.
        protocols: WebSocket subprotocols to offer, or a function that returns them, called at
            every connection: ``lambda: ["bearer", fresh_token()]`` sends a new token each time.
        on_event: Called with every other frame of the protocol, as a dict: ``subscribed``,
            ``presence``, ``error`` (a refused request) and ``message`` (sent to this client
            alone). Presence is also kept in :attr:`presence`, counts in :attr:`counts`. Also
            ``{"type": "unauthorized"}`` when the server refuses the token twice in a row.
        token_provider: Returns a fresh token (or None for none), awaitable or not; called
            before every connection, the token sent after ``bearer`` in the subprotocols.
        headers: Headers added to every handshake (a server-side client's ``Cookie``, say).
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff | None = None,
        stable_after: float = 30.0,
        silence_timeout: float = 60.0,
        on_gap: Callable[[int, int | None], None] | None = None,
        protocols: Sequence[str] | Callable[[], Sequence[str]] = (),
        on_event: Callable[[dict[str, Any]], None] | None = None,
        token_provider: Callable[[], Awaitable[str | None] | str | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = URL(url)
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self._silence_timeout = silence_timeout
        self._on_gap = on_gap
        self._protocols = protocols
        self._on_event = on_event
        self._token_provider = token_provider
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        #: The channels subscribed to: channel -> id of the last message seen on it, or None.
        self.channels: dict[str, int | None] = {}
        #: Who is on each channel with presence: channel -> member names.
        self.presence: dict[str, set[str]] = {}
        #: How many are on each channel with counted presence: channel -> count.
        self.counts: dict[str, int] = {}
        #: Id of the last broadcast received, sent to the server on reconnect.
        self.last_id: int | None = None
        #: Number of times the client connected again after its first connection.
        self.reconnects = 0
        #: Set while a connection is open, cleared when it drops: ``await
        #: client.connected.wait()`` before sending, ``is_set()`` to show the state.
        self.connected = asyncio.Event()
        # Subscribes refused for now ("unavailable, try again"): channel -> (attempt, timer).
        self._retries: dict[str, tuple[int, asyncio.TimerHandle | None]] = {}
        self._slowdown = 1  # doubled after each 4008, back to 1 once a connection is stable
        # Channels whose subscribe is yet to be sent on this connection, in order.
        self._unsent: dict[str, None] = {}
        self._unsent_added = asyncio.Event()

    async def __aenter__(self) -> ReconnectingClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for channel in [*self._retries]:
            self._cancel_retry(channel)
        if self._session is not None:
            await self._session.close()

    async def send(self, message: object) -> bool:
        """Send ``message`` (JSON-serialisable) if connected; False, and nothing queued, if not."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        await ws.send_str(json.dumps(message))
        return True

    async def subscribe(self, channel: str, last_id: int | None = None) -> None:
        """Receive ``channel``'s messages from now on (after ``last_id``), across reconnects.

        The subscribe is sent with others in batched frames, paced within the server's
        allowance: subscribing to hundreds of channels at once is fine.
        """
        if channel not in self.channels:
            self.channels[channel] = last_id
            self._queue_subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``'s messages."""
        if self.channels.pop(channel, False) is not False:
            self.presence.pop(channel, None)
            self.counts.pop(channel, None)
            self._cancel_retry(channel)
            self._unsent.pop(channel, None)
            await self.send({"type": "unsubscribe", "channel": channel})

    async def publish(self, channel: str, data: object) -> bool:
        """Publish ``data`` to ``channel``'s subscribers if the service allows it; see send."""
        return await self.send({"type": "publish", "channel": channel, "data": data})

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()

    async def messages(self) -> AsyncIterator[Message]:
        """Yield every broadcast, reconnecting after drops, until the server closes with 1000.

        A handshake refused with 503 or 429 and ``Retry-After: S`` is tried again ``S`` seconds
        later, plus up to one second of jitter (the server spreads its answers over the wave).

        Raises:
            ConnectionRefusedByPolicy: The server closed with 1008 or a final 4xxx code.
            HandshakeRefused: The handshake got a 4xx answer other than 429 (a wrong path, no
                valid token, another origin): the same request would get it again. A 401 with a
                token provider is retried once, at once, with a new token first.
        """
        if self._session is None:
            raise RuntimeError("use 'async with ReconnectingClient(...)' first")
        attempt = 0
        connected_before = False
        renewed = False  # a 401 was answered with a new token: the next one is final
        loop = asyncio.get_running_loop()
        while True:
            close_code: int | None = None
            url = self._url
            if self.last_id is not None:
                url = url.update_query(last_id=self.last_id)
            try:
                protocols = self._protocols() if callable(self._protocols) else self._protocols
                token = await self._fresh_token()
                if token is not None:
                    protocols = ["bearer", token, *protocols]
                async with self._session.ws_connect(
                    url, heartbeat=None, autoping=True, protocols=protocols, headers=self._headers
                ) as ws:
                    if connected_before:
                        self.reconnects += 1
                    connected_before = True
                    renewed = False
                    opened = loop.time()
                    logger.info("connected to %s", url)
                    self._ws = ws
                    self.connected.set()
                    # Every channel again, each with its last id, within the allowance.
                    self._unsent = dict.fromkeys(self.channels)
                    subscribing = asyncio.create_task(self._send_subscribes(ws))
                    silence = _SilenceWatch(self._silence_timeout)
                    try:
                        async for message in self._receive(ws, silence):
                            yield message
                    finally:
                        subscribing.cancel()
                        silence.stop()
                    self._ws = None
                    self.connected.clear()
                    close_code = ws.close_code
                    if loop.time() - opened >= self._stable_after:
                        attempt, self._slowdown = 0, 1
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                self._ws = None
                self.connected.clear()
                status = error.status if isinstance(error, aiohttp.WSServerHandshakeError) else 0
                if status == 401 and self._token_provider is not None and not renewed:
                    renewed = True
                    logger.info("token refused (401): trying once more with a new one")
                    continue
                if status == 401 and self._on_event is not None:
                    self._on_event({"type": "unauthorized"})
                if _final(status):
                    raise HandshakeRefused(status, str(self._url)) from None
                logger.warning("connection to %s failed: %s", self._url, error or type(error))
                retry_after = _retry_after(error)
            else:
                retry_after = 0.0
            policy = close_policy(close_code)
            if policy == "stop":
                return
            if policy == "refused":
                assert close_code is not None
                raise ConnectionRefusedByPolicy(close_code)
            if policy == "slow":  # closed for sending too much: resubscribe more slowly
                self._slowdown = min(2 * self._slowdown, MAX_SLOWDOWN)
            delay = self._backoff.delay(attempt, close_code)
            if retry_after:
                # The server said when a place will be there: then, spread over a second (its
                # answers are whole seconds), not later (the backoff would only add to the wave).
                delay = retry_after + self._backoff.random()
            attempt += 1
            logger.info("reconnecting in %.1f s (close code %s)", delay, close_code)
            await asyncio.sleep(delay)

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, silence: _SilenceWatch
    ) -> AsyncIterator[Message]:
        while True:
            silence.start_wait()
            try:
                frame = await ws.receive()
            except asyncio.CancelledError:
                if not silence.expired():
                    raise
                await ws.close()
                raise TimeoutError(f"no frame for {self._silence_timeout:.0f} s") from None
            silence.end_wait()
            if frame.type is not aiohttp.WSMsgType.TEXT:
                return  # closed, closing or an error: the caller decides what follows
            try:
                payload = json.loads(frame.data)
                kind = payload.get("type")
            except (ValueError, AttributeError):
                logger.warning("skipped a frame that is not a JSON object: %.80r", frame.data)
                continue
            channel = payload.get("channel")
            if kind == "gap":
                logger.warning("missed broadcasts after %s could not be replayed", self.last_id)
                if self._on_gap is not None:
                    self._on_gap(payload["last_id"], payload["oldest_id"])
            elif kind is None and channel is None:
                self.last_id = payload["id"]
                yield Message(payload["id"], payload["data"])
            elif kind is None:
                if channel not in self.channels:
                    continue  # unsubscribed meanwhile
                seen = self.channels[channel]
                if seen is None or payload["id"] > seen:
                    self.channels[channel] = payload["id"]
                    yield Message(payload["id"], payload["data"], channel)
            elif kind != "heartbeat":
                self._take_event(payload)

    async def _fresh_token(self) -> str | None:
        """A token from the provider, awaited if need be; None without a provider."""
        if self._token_provider is None:
            return None
        token = self._token_provider()
        return await token if inspect.isawaitable(token) else token

    def _take_event(self, event: dict[str, Any]) -> None:
        """Keep what a protocol frame says (presence, refused subscribes), then pass it on."""
        channel = event.get("channel")
        if event["type"] == "subscribed" and channel in self.channels:
            self._cancel_retry(channel)
            # Where the channel stood: recovery after a drop starts there, even before a message.
            if self.channels[channel] is None and isinstance(event.get("last_id"), int):
                self.channels[channel] = event["last_id"]
        elif event["type"] == "presence" and channel in self.channels and "count" in event:
            self.counts[channel] = event["count"]
        elif event["type"] == "presence" and channel in self.channels:
            members = set(event.get("members", self.presence.get(channel, ())))
            self.presence[channel] = (members | set(event.get("joined", ()))) - set(
                event.get("left", ())
            )
        elif event["type"] == "error" and event.get("request") == "subscribe" and channel:
            retry_after = event.get("retry_after")
            if isinstance(retry_after, int | float) and channel in self.channels:
                self._retry_subscribe(channel, float(retry_after))  # refused for now only
            else:
                self.channels.pop(channel, None)  # refused: not subscribed again after a reconnect
        if self._on_event is not None:
            self._on_event(event)

    def _retry_subscribe(self, channel: str, retry_after: float) -> None:
        """Subscribe to ``channel`` again after ``retry_after`` seconds, doubled at each refusal.

        The delay is in ``[wait, 2 * wait)`` with ``wait = min(cap, retry_after * 2**attempt)``;
        a reconnect meanwhile subscribes to the channel anyway (it is kept in ``channels``).
        """
        attempt, timer = self._retries.get(channel, (0, None))
        if timer is not None:
            timer.cancel()
        wait = min(self._backoff.cap, retry_after * 2.0 ** min(attempt, MAX_ATTEMPT))
        delay = wait * (1 + self._backoff.random())
        logger.info("subscribing to %s again in %.1f s", channel, delay)
        timer = asyncio.get_running_loop().call_later(delay, self._queue_subscribe, channel)
        self._retries[channel] = (attempt + 1, timer)

    def _cancel_retry(self, channel: str) -> None:
        """Forget the pending retry of ``channel``'s subscribe, if any."""
        _attempt, timer = self._retries.pop(channel, (0, None))
        if timer is not None:
            timer.cancel()

    def _queue_subscribe(self, channel: str) -> None:
        """Have ``channel``'s subscribe sent with the next batch (if it is still wanted)."""
        if channel in self.channels:
            self._unsent[channel] = None
            self._unsent_added.set()

    async def _send_subscribes(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send the queued subscribes on ``ws`` while it is open, within the allowance.

        Batched frames of at most ``SUBSCRIBE_BATCH`` channels and about
        ``SUBSCRIBE_BATCH_BYTES``, each with its last id: ``SUBSCRIBE_BURST`` frames at once,
        then one per ``SUBSCRIBE_INTERVAL`` (times the slowdown after a 4008).
        """
        loop = asyncio.get_running_loop()
        frames, last = float(SUBSCRIBE_BURST), loop.time()
        while not ws.closed:
            if not self._unsent:
                self._unsent_added.clear()
                await self._unsent_added.wait()
                continue
            interval = SUBSCRIBE_INTERVAL * self._slowdown
            now = loop.time()
            frames, last = min(SUBSCRIBE_BURST, frames + (now - last) / interval), now
            if frames < 1:
                await asyncio.sleep((1 - frames) * interval)
                continue
            frames -= 1
            await ws.send_str(json.dumps({"type": "subscribe", "channels": self._next_batch()}))

    def _next_batch(self) -> list[dict[str, object]]:
        """Take the next batch of queued subscribes: ``{"channel": C, "last_id": N}`` each.

        The first ``SUBSCRIBE_BATCH`` queued, or as many of them as fit in
        ``SUBSCRIBE_BATCH_BYTES`` of JSON (one at least). The batch is measured whole first, as
        it nearly always fits: one encoding, not one per channel.
        """
        channels = [*itertools.islice(self._unsent, SUBSCRIBE_BATCH)]
        batch: list[dict[str, object]] = []
        for channel in channels:
            entry: dict[str, object] = {"channel": channel}
            if (last_id := self.channels.get(channel)) is not None:
                entry["last_id"] = last_id
            batch.append(entry)
        if len(json.dumps(batch)) > SUBSCRIBE_BATCH_BYTES:
            size = 2  # the list's brackets, then each entry and the ", " before it
            for count, entry in enumerate(batch):
                size += len(json.dumps(entry)) + (2 if count else 0)
                if count and size > SUBSCRIBE_BATCH_BYTES:
                    del batch[count:]
                    break
        for channel in channels[: len(batch)]:
            del self._unsent[channel]
        return batch


def _final(status: int) -> bool:
    """Whether a handshake answered with ``status`` would be answered the same way again."""
    return 400 <= status < 500 and status != 429


def _retry_after(error: BaseException) -> float:
    """Seconds a refused handshake (429 or 503) asked to wait with ``Retry-After``, else 0."""
    if not isinstance(error, aiohttp.WSServerHandshakeError) or error.status not in (429, 503):
        return 0.0
    value = error.headers.get("Retry-After", "") if error.headers is not None else ""
    return min(float(value), 300.0) if value.isdigit() else 0.0


async def _print_messages(url: str) -> None:
    async with ReconnectingClient(url) as client:
        async for message in client:
            print(json.dumps({"id": message.id, "data": message.data}), flush=True)


def main() -> None:
    """``python -m <package>.client URL``: print each broadcast as one JSON line on stdout."""
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("ws://", "wss://")):
        sys.exit(f"usage: python -m {__package__}.client ws://HOST:PORT/_ws/PATH")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_print_messages(sys.argv[1]))
    except KeyboardInterrupt:
        pass
    except (ConnectionRefusedByPolicy, HandshakeRefused) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
