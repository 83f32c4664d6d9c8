"""The demo service, "integers as a service", as in VIP's Node.js skeleton.

One counter for everyone: it ticks only while at least one client is connected, every client
receives the same integers, and it pauses when the last client leaves. When several processes share
their broadcasts (scale-out), only one of them produces at a time; another takes over if it
dies.
Replace this module with your own service; keep the shape: one producer that publishes through the
publisher while it holds the producer role.
"""

from __future__ import annotations

import asyncio
import logging

from .broker import BrokerUnavailable
from .publisher import Publisher

logger = logging.getLogger(__name__)

#: Name of this producer's lease and counter.
PRODUCER = "integers"


class IntegerTicker:
    """Broadcasts the next integer every ``interval`` seconds while anyone is connected.

    Args:
        publisher: What the app gives its producers.
        interval: Seconds between two integers.
    """

    def __init__(self, publisher: Publisher, interval: float) -> None:
        self._publisher = publisher
        self._interval = interval
        #: The last integer sent.
        self.value = 0

    async def run(self) -> None:
        """Tick until cancelled, pausing whenever nobody is connected."""
        while True:
            await self._publisher.occupied.wait()
            if not await self._publisher.acquire_producer(PRODUCER):
                continue  # the last client left before this process became the producer
            logger.info("integers: producing after %d", self.value)
            try:
                await self._tick()
            except BrokerUnavailable as error:
                logger.warning("integers: paused, %s", error)
                await asyncio.sleep(self._interval)  # no busy loop while the broker is away
            finally:
                await self._publisher.release_producer(PRODUCER)
            logger.info("integers: paused at %d", self.value)

    async def _tick(self) -> None:
        """Broadcast on a drift-free schedule while there are clients and this is the producer."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if not self._publisher.client_count or not self._publisher.is_producer(PRODUCER):
                return
            self.value = await self._publisher.next_count(PRODUCER)
            await self._publisher.broadcast(self.value)
            next_tick += self._interval
