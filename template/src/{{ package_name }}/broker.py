"""The broker: where broadcasts get their ids, and how they reach the hub of every process.

The hub composes one broker, chosen in ``scaleout.py``. :class:`LocalBroker`, the default, keeps
everything in this process; a broker that several processes share (generated with the scale-out
answer) gives every process the same broadcasts, in the same order, with the same ids.

A broker also keeps producers unique: a producer (such as the integers demo) runs under a lease
that one process at a time holds, and counts with a counter that only the holder advances.
"""

from __future__ import annotations

import time
from typing import ClassVar, Protocol


class HubUnavailable(RuntimeError):
    """A broadcast or a producer's step could not be made now (e.g. the message broker is down)."""


class Receiver(Protocol):
    """What a broker delivers to: the hub of this process."""

    async def deliver(self, message_id: int, message: bytes) -> None:
        """Take the broadcast ``message_id``; called in id order, once per broadcast."""

    def remember(self, messages: list[tuple[int, bytes]]) -> None:
        """Keep broadcasts made before the broker started, oldest first, to replay, not to send."""


class Broker(Protocol):
    """What the hub needs from a broker."""

    #: Whether other processes share this broker: a client may then come from a process that
    #: has delivered broadcasts this one has not yet.
    shared: ClassVar[bool]
    #: Seconds between two attempts to take a producer lease that another process holds.
    lease_retry_seconds: float

    async def start(self, receiver: Receiver) -> None:
        """Begin delivering broadcasts to ``receiver``; never waits for a remote service."""

    async def stop(self) -> None:
        """Stop delivering, give up held leases, and close connections."""

    async def publish(self, data: str) -> int:
        """Broadcast ``data`` (JSON text) to every process and return its id.

        Raises:
            HubUnavailable: The broadcast could not be made.
        """

    async def history(self, last_id: int, count: int) -> list[tuple[int, bytes]] | None:
        """Up to ``count`` broadcasts after ``last_id``, for a client older than the replay log.

        Returns:
            The ``(id, message)`` pairs from ``last_id + 1`` on (empty when ``last_id`` is the
            newest), or None when the broker cannot tell what followed ``last_id``.
        """

    async def acquire_lease(self, name: str) -> bool:
        """Try once to become the one producer ``name``; True when this process holds it."""

    def holds_lease(self, name: str) -> bool:
        """Whether this process surely still holds the lease ``name`` (a lease can be lost)."""

    async def release_lease(self, name: str) -> None:
        """Give up the lease ``name`` so that another process can take over at once."""

    async def next_count(self, name: str) -> int:
        """Advance the producer ``name``'s counter (1, 2, ...), only while holding its lease.

        Raises:
            HubUnavailable: The value cannot be had now, or this process lost the lease.
        """


def encode_message(message_id: int, data: str) -> bytes:
    """The broadcast ``{"id": message_id, "data": data}`` as compact JSON, ``data`` being JSON."""
    return b'{"id":%d,"data":%s}' % (message_id, data.encode())


class LocalBroker:
    """Everything in this process: ids, delivery, leases and counters.

    Ids start at the time of creation in microseconds since the epoch and grow by one per
    broadcast, so that they keep increasing across restarts of the process.
    """

    shared: ClassVar[bool] = False
    lease_retry_seconds: float = 0.0

    def __init__(self) -> None:
        self._last_id = time.time_ns() // 1000
        self._receiver: Receiver | None = None
        self._counters: dict[str, int] = {}

    async def start(self, receiver: Receiver) -> None:
        """Deliver every later broadcast to ``receiver``."""
        self._receiver = receiver

    async def stop(self) -> None:
        """Stop delivering."""
        self._receiver = None

    async def publish(self, data: str) -> int:
        """Deliver ``data`` to this process's hub under the next id."""
        if self._receiver is None:
            raise HubUnavailable("the broker is not started")
        self._last_id += 1
        message_id = self._last_id
        await self._receiver.deliver(message_id, encode_message(message_id, data))
        return message_id

    async def history(self, last_id: int, count: int) -> None:
        """Keeps none: the hub's own replay log is all there is."""
        return None

    async def acquire_lease(self, name: str) -> bool:
        """One process: always the producer."""
        return True

    def holds_lease(self, name: str) -> bool:
        """One process: always the producer."""
        return True

    async def release_lease(self, name: str) -> None:
        """Nothing to give up."""

    async def next_count(self, name: str) -> int:
        """The counter of this process."""
        value = self._counters.get(name, 0) + 1
        self._counters[name] = value
        return value
