"""The frames the hub sends, encoded without any I/O: RFC 6455 framing and the hub's own messages.

Every frame here is final, unmasked (a server's frames are never masked) and uncompressed (the
app's connections never negotiate compression), so it can be written to a transport as it is.
Close frames are not made here: the hub closes a connection through aiohttp's
``WebSocketResponse.close()``, which writes the close frame and waits for the peer's.

A message is the payload of a text frame, as compact JSON: what :func:`text_frame` frames and a
:data:`Dialect` rewrites.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

__all__ = [
    "HEARTBEAT",
    "PING_FRAME",
    "Dialect",
    "event",
    "gap",
    "payload",
    "subscribed",
    "text_frame",
]

#: How a client of another dialect is sent a message: ``(kind, message)`` to the text of its
#: frame. ``kind`` is ``broadcast`` (the default stream), ``channel`` (a channel's message), or
#: the ``type`` of one of the hub's own messages (``heartbeat``, ``subscribed``, ``presence``,
#: ``gap``, ``error``, ``message``); ``message`` is the message as compact JSON.
Dialect = Callable[[str, bytes], bytes]

#: A WebSocket ping (RFC 6455: final frame, opcode 9, no payload).
PING_FRAME = b"\x89\x00"

#: The heartbeat message, sent to every client with a ping.
HEARTBEAT = b'{"type":"heartbeat"}'


def text_frame(message: bytes) -> bytes:
    """Frame ``message`` as one final, unmasked, uncompressed text frame (RFC 6455, 5.2).

    ``message`` must be UTF-8: it is framed as it is, never checked.
    """
    length = len(message)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + message
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + message
    return struct.pack("!BBQ", 0x81, 127, length) + message


def payload(frame: bytes) -> bytes:
    """The message framed by :func:`text_frame` in ``frame``."""
    length = frame[1]
    return frame[2 if length < 126 else 4 if length == 126 else 10 :]


def event(**fields: object) -> bytes:
    """One of the hub's own messages (``type`` first, by convention), as compact JSON."""
    return json.dumps(fields, separators=(",", ":")).encode()


def gap(last_id: int, oldest_id: int | None, channel: str | None = None) -> bytes:
    """The notice for a client that missed broadcasts after ``last_id`` that cannot be replayed.

    ``oldest_id`` is the oldest id it can still be sent (None if none); ``channel`` is the
    channel the broadcasts were missed on, None for the default stream.
    """
    if channel is None:
        return event(type="gap", last_id=last_id, oldest_id=oldest_id)
    return event(type="gap", last_id=last_id, oldest_id=oldest_id, channel=channel)


def subscribed(channel: str, last_id: int | None) -> bytes:
    """The answer to a subscribe, as :func:`event` makes it, faster.

    A deploy's wave answers every one of its subscribes with one: a format is several times
    faster than a JSON encoder (``json.dumps`` with ``separators`` makes one a call).
    """
    last = b"null" if last_id is None else b"%d" % last_id
    return b'{"type":"subscribed","channel":%b,"last_id":%b}' % (json.dumps(channel).encode(), last)
