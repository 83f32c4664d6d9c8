"""What a producer is given: broadcasts, whether anyone is connected, and a named lease.

A producer is a coroutine of the service's ``producers(publisher)`` that runs for the app's
lifetime and broadcasts on its own initiative (the integers demo, a feed it follows). It gets a
:class:`Publisher`, never the hub: it can broadcast and wait for clients, not close or drop them.

When several processes share their broadcasts, a producer that must run once in the cluster (a
counter, a poller) holds a lease of its name: one process at a time holds it, and another takes
over within the lease's lifetime if that one dies. Its shape, as in ``integers.py``::

    while True:
        await publisher.occupied.wait()
        if not await publisher.acquire_producer(NAME):
            continue  # the last client left first
        try:
            while publisher.client_count and publisher.is_producer(NAME):
                await publisher.broadcast(await publisher.next_count(NAME))
                ...
        finally:
            await publisher.release_producer(NAME)

These names are a 0.2.0 project's too: its ``integers.py`` received the hub and called them on it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine
from typing import Any

from .broker import Leases
from .guards import TokenBucket
from .hub import Hub

logger = logging.getLogger(__name__)


class Publisher:
    """The hub, as producers see it: broadcasts, clients' presence, and the broker's leases.

    Each producer (each task that broadcasts) has a budget of its own: ``broadcasts_per_second``
    broadcasts a second, with bursts of twice that. Past it, :meth:`broadcast` waits for its
    turn instead of failing, and every broadcast yields to the event loop: a producer in a hurry
    slows itself down, never the clients or the other producers.

    Args:
        hub: The process's hub.
        leases: The broker's producer leases.
        broadcasts_per_second: The budget of each producer (``PUBLISHES_PER_SECOND``).
    """

    def __init__(self, hub: Hub, leases: Leases, broadcasts_per_second: float) -> None:
        self._hub = hub
        self._leases = leases
        self._rate = broadcasts_per_second
        self._budgets: weakref.WeakKeyDictionary[asyncio.Task[Any], TokenBucket] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def occupied(self) -> asyncio.Event:
        """Set while at least one client is connected to this process."""
        return self._hub.occupied

    @property
    def client_count(self) -> int:
        """Number of clients connected to this process."""
        return self._hub.client_count

    async def broadcast(self, data: object, channel: str | None = None) -> int:
        """Send ``data`` to every client of every process, or to ``channel``'s subscribers.

        Clients get ``{"id": ..., "data": ...}``, or ``{"channel": ..., "id": ..., "data": ...}``.
        Waits first while this producer's budget is spent.

        Returns:
            The id of this broadcast in its stream (each channel has ids of its own).

        Raises:
            BrokerUnavailable: The broker could not take the broadcast.
            ValueError: ``data`` holds a number JSON cannot carry (NaN or infinity).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # a coroutine of a running loop is in a task
        budget = self._budgets.get(task)
        if budget is None:
            budget = self._budgets[task] = TokenBucket(self._rate, loop.time())
        while not budget.take(1, loop.time()):  # noqa: ASYNC110 - paced by the clock alone
            await asyncio.sleep(budget.wait(1, loop.time()))
        await asyncio.sleep(0)  # a broadcast may make no other pause: let the loop run others
        return await self._hub.broadcast(data, channel)

    async def acquire_producer(self, name: str) -> bool:
        """Wait until this process holds the lease ``name``, trying while it has clients.

        With the in-process broker that is at once.

        Returns:
            True once this process is the producer; False if its last client left first.
        """
        while self._hub.client_count:
            if await self._leases.acquire(name):
                return True
            await asyncio.sleep(self._leases.retry_seconds)
        return False

    def is_producer(self, name: str) -> bool:
        """Whether this process surely still holds the lease ``name`` (a lease can be lost)."""
        return self._leases.holds(name)

    async def release_producer(self, name: str) -> None:
        """Give up the lease ``name`` so that another process can take over at once."""
        await self._leases.release(name)

    async def next_count(self, name: str) -> int:
        """Return the next value (1, 2, ...) of the producer ``name``'s counter.

        The counter is shared by every process that may hold the lease, so that a takeover goes
        on where the previous producer stopped and never makes a value twice.

        Raises:
            BrokerUnavailable: The value cannot be had now, or this process lost the lease.
        """
        return await self._leases.next_count(name)


async def run_producer(producer: Coroutine[Any, Any, None]) -> None:
    """Run ``producer`` until it returns or is cancelled; log the exception it fails with.

    One producer's failure is its own: the app and the other producers go on.
    """
    try:
        await producer
    except Exception:
        logger.exception("producer %s failed", getattr(producer, "__qualname__", producer))
