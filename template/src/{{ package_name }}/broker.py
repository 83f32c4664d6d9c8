"""The broker: where broadcasts get their ids, and how they reach the hub of every process.

The hub composes one broker, chosen in ``scaleout.py``. :class:`LocalBroker`, the default, keeps
everything in this process; a broker that several processes share (generated with the scale-out
answer) gives every process the same broadcasts, in the same order, with the same ids.

The default stream and every channel have ids of their own, each one more than the previous
broadcast of the same stream. A broker also keeps each channel's presence: who is subscribed to
it, in every process, each member once however many connections (tabs) it has.

Its :class:`Leases` keep producers unique: a producer (such as the integers demo) runs under a
lease that one process at a time holds, and counts with a counter that only the holder advances.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import ClassVar, NamedTuple, Protocol

#: Names a presence list holds at most: a subscriber of a larger channel is sent these only.
MAX_PRESENCE_LIST = 1000
#: Channels whose last id the in-process broker remembers at most (the least recently used go).
MAX_LOCAL_CHANNELS = 10_000
#: Idempotency keys the in-process broker remembers at most (the oldest go): about 25 MB at most.
MAX_SEEN_KEYS = 100_000


class Member(NamedTuple):
    """Who a subscription is, for presence: the client's identity, and its connection's id."""

    name: str
    connection: str


class BrokerUnavailable(RuntimeError):
    """A broadcast or a producer's step could not be made now (e.g. the message broker is down)."""


#: The name of 0.2.0, which a project's own ``integers.py`` (never updated) still imports.
HubUnavailable = BrokerUnavailable


class PublishInProgress(RuntimeError):
    """A publish with the same idempotency key is under way: ask again in a moment."""


class Receiver(Protocol):
    """What a broker delivers to: the hub of this process."""

    async def deliver(self, message_id: int, message: bytes, channel: str | None = None) -> None:
        """Take the broadcast ``message_id`` of ``channel`` (None: the default stream).

        Called in id order, once per broadcast.
        """

    async def deliver_presence(self, channel: str, name: str, present: bool) -> None:
        """Take a presence change of ``channel``: ``name`` came (``present``) or left."""

    def remember(self, messages: list[tuple[int, bytes]]) -> None:
        """Keep broadcasts made before the broker started, oldest first, to replay, not to send."""


class Leases(Protocol):
    """Named producer leases, each held by one process at a time, and a counter per name."""

    #: Seconds between two attempts to take a lease that another process holds.
    retry_seconds: float

    async def acquire(self, name: str) -> bool:
        """Try once to become the one producer ``name``; True when this process holds it."""

    def holds(self, name: str) -> bool:
        """Whether this process surely still holds the lease ``name`` (a lease can be lost)."""

    async def release(self, name: str) -> None:
        """Give up the lease ``name`` so that another process can take over at once."""

    async def next_count(self, name: str) -> int:
        """Advance the producer ``name``'s counter (1, 2, ...), only while holding its lease.

        Raises:
            BrokerUnavailable: The value cannot be had now, or this process lost the lease.
        """


class Broker(Protocol):
    """What the hub needs from a broker: broadcasts and presence. Its leases are the producers'."""

    #: Whether other processes share this broker: a client may then come from a process that
    #: has delivered broadcasts this one has not yet.
    shared: ClassVar[bool]

    @property
    def leases(self) -> Leases:
        """The producers' leases, shared as widely as the broadcasts; given up when it stops."""

    async def start(self, receiver: Receiver) -> None:
        """Begin delivering broadcasts to ``receiver``; never waits for a remote service."""

    async def stop(self) -> None:
        """Stop delivering, give up held leases, and close connections."""

    async def publish(self, data: str, channel: str | None = None) -> int:
        """Broadcast ``data`` (JSON text) on ``channel`` to every process and return its id.

        Raises:
            BrokerUnavailable: The broadcast could not be made.
        """

    async def publish_once(
        self, key: str, data: str, channel: str | None = None
    ) -> tuple[int, bool]:
        """Broadcast ``data`` as :meth:`publish` does, unless ``key`` was seen already.

        Returns:
            The broadcast's id and True; for a key seen already, the id its first publish
            returned and False, and nothing is broadcast.

        Raises:
            BrokerUnavailable: The broadcast could not be made (the key is not remembered then).
            PublishInProgress: Another publish with ``key`` has not finished yet.
        """

    async def history(
        self, last_id: int, count: int, channel: str | None = None
    ) -> list[tuple[int, bytes]] | None:
        """Up to ``count`` broadcasts after ``last_id``, for a client older than the replay log.

        Returns:
            The ``(id, message)`` pairs from ``last_id + 1`` on; empty when ``last_id`` is the
            newest, answered only once this process's receiver has been delivered everything
            up to it (a shared broker's deliveries here may lag behind its history: the client
            then goes live); None when the broker cannot tell what followed ``last_id``.
        """

    async def newest_id(self, channel: str) -> int | None:
        """The id of ``channel``'s newest message, None if none is known (or it cannot be had)."""

    async def enter(self, channel: str, member: Member) -> None:
        """Count ``member`` present on ``channel``; announce it if it was not there yet.

        Raises:
            BrokerUnavailable: The presence could not be recorded.
        """

    async def leave(self, channel: str, member: Member) -> None:
        """Count ``member`` gone from ``channel``; announce it if it has no connection left."""

    async def members(self, channel: str) -> list[str]:
        """The names present on ``channel``, each once, at most ``MAX_PRESENCE_LIST`` of them.

        Raises:
            BrokerUnavailable: The presence could not be read.
        """

    async def count_present(self, channel: str, here: int) -> int:
        """Record that ``here`` connections of this process subscribe to ``channel``; return
        how many do in every process (counted presence: no names).

        Raises:
            BrokerUnavailable: The count could not be had.
        """


def encode_message(message_id: int, data: str, channel: str | None = None) -> bytes:
    """The broadcast ``{"id": message_id, "data": data}`` as compact JSON, ``data`` being JSON.

    On a channel: ``{"channel": channel, "id": message_id, "data": data}``.
    """
    if channel is None:
        return b'{"id":%d,"data":%s}' % (message_id, data.encode())
    return b'{"channel":%s,"id":%d,"data":%s}' % (
        json.dumps(channel).encode(),
        message_id,
        data.encode(),
    )


def first_id() -> int:
    """The id of a stream's first broadcast: the time in microseconds since the epoch.

    So that ids keep increasing when a stream starts again (a restart of the process or of the
    message broker), as long as a stream makes fewer than a million broadcasts a second.
    """
    return time.time_ns() // 1000


class LocalLeases:
    """One process: it always holds every lease, and counts in memory."""

    retry_seconds: float = 0.0

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    async def acquire(self, name: str) -> bool:
        """One process: always the producer."""
        return True

    def holds(self, name: str) -> bool:
        """One process: always the producer."""
        return True

    async def release(self, name: str) -> None:
        """Nothing to give up."""

    async def next_count(self, name: str) -> int:
        """The counter of this process."""
        value = self._counters.get(name, 0) + 1
        self._counters[name] = value
        return value


class LocalBroker:
    """Everything in this process: ids, delivery and presence; its leases are :class:`LocalLeases`.

    Each stream's ids start at :func:`first_id` and grow by one per broadcast. The last ids of
    at most ``MAX_LOCAL_CHANNELS`` channels are remembered; a channel forgotten starts again.
    """

    shared: ClassVar[bool] = False

    def __init__(self) -> None:
        self.leases = LocalLeases()
        self._last_ids: dict[str | None, int] = {}
        self._receiver: Receiver | None = None
        self._present: dict[str, dict[str, set[str]]] = {}  # channel -> name -> connections
        self._seen: dict[str, int | None] = {}  # idempotency key -> id (None: under way)

    async def start(self, receiver: Receiver) -> None:
        """Deliver every later broadcast to ``receiver``."""
        self._receiver = receiver

    async def stop(self) -> None:
        """Stop delivering."""
        self._receiver = None

    async def publish(self, data: str, channel: str | None = None) -> int:
        """Deliver ``data`` to this process's hub under the next id of ``channel``."""
        if self._receiver is None:
            raise BrokerUnavailable("the broker is not started")
        last_ids = self._last_ids
        last_id = last_ids.pop(channel, None)  # popped and set again: the newest go last
        message_id = first_id() if last_id is None else last_id + 1
        last_ids[channel] = message_id
        if len(last_ids) > MAX_LOCAL_CHANNELS + 1:
            del last_ids[next(key for key in last_ids if key is not None)]
        await self._receiver.deliver(message_id, encode_message(message_id, data, channel), channel)
        return message_id

    async def publish_once(
        self, key: str, data: str, channel: str | None = None
    ) -> tuple[int, bool]:
        """Publish unless ``key`` is among the newest ``MAX_SEEN_KEYS`` keys seen."""
        seen = self._seen
        if key in seen:
            message_id = seen[key]
            if message_id is None:
                raise PublishInProgress(key)
            return message_id, False
        seen[key] = None
        try:
            message_id = await self.publish(data, channel)
        except BaseException:
            seen.pop(key, None)
            raise
        seen[key] = message_id
        if len(seen) > MAX_SEEN_KEYS:  # bounded memory: the oldest key goes
            del seen[next(iter(seen))]
        return message_id, True

    async def history(
        self, last_id: int, count: int, channel: str | None = None
    ) -> list[tuple[int, bytes]] | None:
        """Keeps none (always None): the hub's own replay logs are all there is."""
        return None

    async def newest_id(self, channel: str) -> int | None:
        """The id of ``channel``'s newest message, if this broker still remembers the channel."""
        return self._last_ids.get(channel)

    async def enter(self, channel: str, member: Member) -> None:
        """Count ``member`` present; announce its name to the hub if it is new on ``channel``."""
        names = self._present.setdefault(channel, {})
        connections = names.setdefault(member.name, set())
        connections.add(member.connection)
        if len(connections) == 1 and self._receiver is not None:
            await self._receiver.deliver_presence(channel, member.name, True)

    async def leave(self, channel: str, member: Member) -> None:
        """Count ``member`` gone; announce it to the hub when its name has no connection left."""
        names = self._present.get(channel, {})
        connections = names.get(member.name, set())
        if member.connection not in connections:
            return
        connections.remove(member.connection)
        if connections:
            return
        names.pop(member.name, None)
        if not names:
            self._present.pop(channel, None)
        if self._receiver is not None:
            await self._receiver.deliver_presence(channel, member.name, False)

    async def members(self, channel: str) -> list[str]:
        """The names present on ``channel`` in this process, the earliest first."""
        return list(itertools.islice(self._present.get(channel, ()), MAX_PRESENCE_LIST))

    async def count_present(self, channel: str, here: int) -> int:
        """One process: ``here``."""
        return here
