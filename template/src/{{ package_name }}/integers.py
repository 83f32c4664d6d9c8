"""The demo service, "integers as a service", as in VIP's Node.js skeleton.

One counter for everyone: it ticks only while at least one client is connected, every client
receives the same integers, and it pauses when the last client leaves. When several processes share
their broadcasts (a scale-out hub), only one of them produces at a time; another takes over if it
dies.
Replace this module with your own service; keep the shape: one producer that publishes through the
hub while it holds the producer role.
"""

from __future__ import annotations

import asyncio
import logging

from .hub import Hub, HubUnavailable

logger = logging.getLogger(__name__)

#: Name of this producer's role and counter in the hub.
PRODUCER = "integers"


class IntegerTicker:
    """Broadcasts the next integer every ``interval`` seconds while the hub has clients.

    Args:
        hub: The process's shared hub.
        interval: Seconds between two integers.
    """

    def __init__(self, hub: Hub, interval: float) -> None:
        self._hub = hub
        self._interval = interval
        #: The last integer sent.
        self.value = 0

    async def run(self) -> None:
        """Tick until cancelled, pausing whenever nobody is connected."""
        while True:
            await self._hub.occupied.wait()
            if not await self._hub.acquire_producer(PRODUCER):
                continue  # the last client left before this process became the producer
            logger.info("integers: producing after %d", self.value)
            try:
                await self._tick()
            except HubUnavailable as error:
                logger.warning("integers: paused, %s", error)
                await asyncio.sleep(self._interval)  # no busy loop while the broker is away
            finally:
                await self._hub.release_producer(PRODUCER)
            logger.info("integers: paused at %d", self.value)

    async def _tick(self) -> None:
        """Broadcast on a drift-free schedule while there are clients and this is the producer."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if not self._hub.client_count or not self._hub.is_producer(PRODUCER):
                return
            self.value = await self._hub.next_count(PRODUCER)
            await self._hub.broadcast(self.value)
            next_tick += self._interval
