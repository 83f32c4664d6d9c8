"""The demo service, "integers as a service", as in VIP's Node.js skeleton.

One counter for the whole process: it ticks only while at least one client is connected, every
client receives the same integers, and it pauses when the last client leaves. Replace this module
with your own service; keep the shape: one shared producer that publishes through the hub.
"""

from __future__ import annotations

import asyncio
import logging

from .hub import Hub

logger = logging.getLogger(__name__)


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
        loop = asyncio.get_running_loop()
        while True:
            await self._hub.occupied.wait()
            logger.info("integers: started at %d", self.value + 1)
            next_tick = loop.time() + self._interval
            while True:
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
                if not self._hub.client_count:
                    break
                self.value += 1
                await self._hub.broadcast(self.value)
                next_tick += self._interval  # drift-free schedule
            logger.info("integers: paused at %d, no clients", self.value)
