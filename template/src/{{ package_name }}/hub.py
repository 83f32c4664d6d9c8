"""The one WebSocket hub of the process, shared by every connection.

Every broadcast is encoded once, kept in a bounded replay buffer for clients that reconnect, and
written directly to each client's transport: no task and no queue per delivery. A client that stops
reading is cut off once its unsent data passes a limit, so it can neither stall the others nor make
memory grow without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable

from aiohttp import WSCloseCode, WSMsgType, web

logger = logging.getLogger(__name__)

#: Clients served between two yields to the event loop during a fan-out, so that the health check
#: and new connections are answered within milliseconds even while thousands of clients are served.
YIELD_EVERY = 256

#: Seconds a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 3.0

HEARTBEAT_FRAME = b'{"type":"heartbeat"}'


class HubUnavailable(RuntimeError):
    """A broadcast or a producer's step could not be made now (e.g. the message broker is down)."""


class Hub:
    """Fans broadcasts out to every connected WebSocket client.

    Message ids increase by one per broadcast and start at the hub's creation time in microseconds
    since the epoch, so they keep increasing across restarts of the process. A client that
    reconnects with the last id it saw gets every broadcast it missed, in order, before any live
    one, as long as the replay buffer still holds them; otherwise it is told about the gap.

    Args:
        replay_size: Number of recent broadcasts kept for reconnecting clients (0 keeps none).
        max_client_buffer_bytes: Unsent bytes one client may hold before it is closed with 1013.
    """

    def __init__(self, *, replay_size: int, max_client_buffer_bytes: int) -> None:
        self._clients: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self._history: deque[tuple[int, bytes]] = deque(maxlen=replay_size)
        self._last_id = time.time_ns() // 1000
        self._counters: dict[str, int] = {}
        self._max_client_buffer_bytes = max_client_buffer_bytes
        # One fan-out at a time, so every client receives frames in id order.
        self._fan_out_lock = asyncio.Lock()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        #: Set while at least one client is connected.
        self.occupied = asyncio.Event()

    @property
    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    @property
    def last_id(self) -> int:
        """Id of the latest broadcast (the start id when there was none)."""
        return self._last_id

    async def join(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, last_id: int | None
    ) -> None:
        """Add a prepared WebSocket, first replaying what it missed since ``last_id``.

        Args:
            ws: The client's prepared WebSocket response.
            transport: The client's transport, watched to cut off a client that stops reading.
            last_id: The last broadcast id the client saw before it reconnected, if any.
        """
        limit = self._max_client_buffer_bytes
        # Raise the high-water mark above the cut-off limit: the fan-out never waits for a drain.
        transport.set_write_buffer_limits(high=2 * limit)
        # Cap the kernel's send buffer too, so that a stalled client holds a bounded amount.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)
        async with self._fan_out_lock:
            if last_id is not None:
                for frame in await self._replay(last_id):
                    await ws.send_frame(frame, WSMsgType.TEXT)
            self._clients[ws] = transport
        self.occupied.set()
        logger.debug("client joined (%d connected)", len(self._clients))

    def leave(self, ws: web.WebSocketResponse) -> None:
        """Forget a client whose connection has ended."""
        if self._clients.pop(ws, None) is not None:
            logger.debug("client left (%d connected)", len(self._clients))
        if not self._clients:
            self.occupied.clear()

    async def broadcast(self, data: object) -> int:
        """Send ``data`` as ``{"id": ..., "data": ...}`` to every client.

        Returns:
            The id of this broadcast.
        """
        async with self._fan_out_lock:
            self._last_id += 1
            frame = json.dumps({"id": self._last_id, "data": data}, separators=(",", ":")).encode()
            self._history.append((self._last_id, frame))
            await self._fan_out(frame)
            return self._last_id

    async def acquire_producer(self, name: str) -> bool:
        """Wait until this process may run the producer ``name`` for every client.

        A producer (such as the integers demo) runs only in one place at a time. With one process
        that is here, at once; a hub shared by several processes waits for a cluster-wide lease.

        Returns:
            True once this process is the producer; False if its last client left first.
        """
        return self.client_count > 0

    def is_producer(self, name: str) -> bool:
        """Whether this process still holds the producer ``name`` (a lease may be lost)."""
        return True

    async def release_producer(self, name: str) -> None:
        """Give up the producer ``name`` so that another process can take it over."""

    async def next_count(self, name: str) -> int:
        """Return the next value (1, 2, ...) of the producer ``name``'s counter.

        The counter is shared by every process that may become the producer, so that a takeover
        goes on where the previous producer stopped and never makes a value twice.

        Raises:
            HubUnavailable: The value cannot be had now, or this process lost the producer.
        """
        value = self._counters.get(name, 0) + 1
        self._counters[name] = value
        return value

    async def send_heartbeat(self) -> None:
        """Send a heartbeat frame to every client, so clients can tell a dead connection."""
        async with self._fan_out_lock:
            await self._fan_out(HEARTBEAT_FRAME)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every connection with ``code`` (default 1001), within ``CLOSE_TIMEOUT``."""
        clients = list(self._clients.items())
        self._clients.clear()
        self.occupied.clear()
        logger.info("closing %d WebSocket connections with %d", len(clients), code)
        await asyncio.gather(*(_close(ws, tr, code, b"server shutdown") for ws, tr in clients))
        if self._closing_tasks:
            await asyncio.gather(*self._closing_tasks)

    async def _replay(self, last_id: int) -> Iterable[bytes]:
        """Frames a client that saw ``last_id`` missed (called under the fan-out lock)."""
        return self._frames_after(last_id)

    def _frames_after(self, last_id: int) -> Iterable[bytes]:
        if last_id == self._last_id:
            return ()
        oldest_id = self._history[0][0] if self._history else None
        if last_id > self._last_id or oldest_id is None or last_id < oldest_id - 1:
            return (gap_frame(last_id, oldest_id),)
        return [frame for message_id, frame in self._history if message_id > last_id]

    async def _fan_out(self, frame: bytes) -> None:
        # Framed once for every client: a delivery is one transport.write, with no coroutine. This
        # bypasses aiohttp's per-send path (two coroutines and a copy), which cost 20-30 % of the
        # fan-out's throughput (docs/performance.md of vip-skeleton); the frame is RFC 6455's
        # simplest: final, unmasked, uncompressed text (the hub's connections never compress).
        data = _text_frame(frame)
        limit = self._max_client_buffer_bytes
        clients = tuple(self._clients.items())
        for start in range(0, len(clients), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)  # keep the health check fast during a large fan-out
            for ws, transport in clients[start : start + YIELD_EVERY]:
                if ws.closed or transport.is_closing():
                    self.leave(ws)  # closing: no data frame may follow a close frame
                elif transport.get_write_buffer_size() > limit:
                    self._cut_off(ws, transport)
                else:
                    transport.write(data)

    def _cut_off(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.leave(ws)
        logger.warning(
            "closing a client that stopped reading (%d bytes unsent) with 1013",
            transport.get_write_buffer_size(),
        )
        task = asyncio.create_task(_close(ws, transport, WSCloseCode.TRY_AGAIN_LATER, b"too slow"))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)


def gap_frame(last_id: int, oldest_id: int | None) -> bytes:
    """The notice for a client that missed broadcasts after ``last_id`` that cannot be replayed."""
    gap = {"type": "gap", "last_id": last_id, "oldest_id": oldest_id}
    return json.dumps(gap, separators=(",", ":")).encode()


def _text_frame(payload: bytes) -> bytes:
    """Frame ``payload`` as one final, unmasked WebSocket text frame (server to client)."""
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


async def _close(
    ws: web.WebSocketResponse, transport: asyncio.Transport, code: int, reason: bytes
) -> None:
    """Close ``ws`` with ``code``; drop the connection if the peer does not finish in time."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason)
    except TimeoutError:
        transport.abort()
