"""A client's frames, charged as they arrive: the one place where the app reaches into aiohttp.

aiohttp assembles a fragmented message before the app sees any of it: a client that sends a text
frame without FIN, then empty continuation frames for ever, would have every frame parsed and
none charged. :class:`ClientWebSocket` is aiohttp's ``WebSocketResponse`` whose incoming bytes
first pass through a :class:`FrameMeter`, which reads only the frame headers (not the payloads)
and, before aiohttp parses the frame:

- charges every frame (text, binary, continuation, ping, pong, close) to the connection's
  :class:`~.guards.Allowance`, one message and its payload's bytes;
- bounds a fragmented message to ``MAX_FRAGMENTS`` frames and ``MAX_FRAGMENT_SECONDS`` seconds;
- refuses a frame the client did not mask (RFC 6455, section 5.1: 1002).

Once a client is past any of these, nothing more of what it sends is parsed, nor even read: the
frames before the offending one go to aiohttp's parser, reading stops, and the connection's
reader gets a :class:`FrameRefusal` after them (``message.type`` ``ERROR``), on which
:func:`~.protocol.next_message` closes the connection. Payload bytes are never copied or looked
at here.

The touch-point with aiohttp's internals, tested with aiohttp 3.14 (pinned ``<3.15``): the
override of ``WebSocketResponse._post_start``, which puts the meter in front of the parser that
aiohttp installs in the connection's ``RequestHandler`` (its ``_payload_parser`` slot, fed the
bytes that came with the handshake from ``_message_tail``). ``tests/test_inbound.py`` fails if
they change.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

from .guards import Allowance
from .hooks import BEARER_PROTOCOL
from .hub import CLOSE_TIMEOUT

#: Most frames one fragmented message may take, its first and last included.
MAX_FRAGMENTS = 64
#: Most seconds between the first frame of a fragmented message and its last.
MAX_FRAGMENT_SECONDS = 10.0


class FrameRefusal(NamedTuple):
    """Why a client's frames stopped being read: the close code and reason to send."""

    code: int
    reason: bytes


#: The client sent more frames or bytes than its allowance (closed as any flooder).
OVER_ALLOWANCE = FrameRefusal(WSCloseCode.POLICY_VIOLATION, b"too many messages")
#: The client did not finish a fragmented message within the bounds.
UNFINISHED = FrameRefusal(WSCloseCode.POLICY_VIOLATION, b"message not finished in time")
#: The client sent an unmasked frame.
UNMASKED = FrameRefusal(WSCloseCode.PROTOCOL_ERROR, b"frames must be masked")


class FrameMeter:
    """Reads the headers of a client's frames ahead of aiohttp's parser, and charges them.

    Args:
        parser: aiohttp's parser of the connection (``feed_data``, ``feed_eof``).
        queue: The queue the connection's reader reads messages from.
        allowance: What the client may send.
        transport: The client's transport, no longer read once the client is refused.
    """

    __slots__ = (
        "_allowance",
        "_fragments",
        "_head",
        "_loop",
        "_parser",
        "_queue",
        "_refused",
        "_skip",
        "_started",
        "_transport",
    )

    def __init__(
        self, parser: Any, queue: Any, allowance: Allowance, transport: asyncio.Transport
    ) -> None:
        self._parser = parser
        self._queue = queue
        self._allowance = allowance
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._head = b""  # the start of a frame header cut by the end of the last read
        self._skip = 0  # payload bytes of the current frame still to come
        self._started: float | None = None  # when the unfinished message began
        self._fragments = 0  # frames of the unfinished message
        self._refused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Charge the frames that begin in ``data``; pass them on to aiohttp's parser."""
        if self._refused:
            self._transport.pause_reading()  # in case aiohttp resumed it
            return False, b""
        held = len(self._head)
        end, refusal = self._scan(self._head + data if held else data)
        if refusal is None:
            result: tuple[bool, bytes] = self._parser.feed_data(data)
            return result
        self._refused = True
        if end > held:
            self._parser.feed_data(data[: end - held])
        self._transport.pause_reading()
        # After the messages parsed so far; the reader closes the connection on it.
        self._queue.feed_data(WSMessage(WSMsgType.ERROR, refusal, None), 0)
        return False, b""

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _scan(self, data: bytes) -> tuple[int, FrameRefusal | None]:
        """Charge each frame header of ``data``; where the first refused frame starts, and why."""
        length = len(data)
        position = 0
        self._head = b""
        while True:
            if self._skip:
                step = min(self._skip, length - position)
                self._skip -= step
                position += step
            if position >= length:
                return length, None
            first, second = data[position], data[position + 1] if position + 1 < length else 0
            size = second & 0x7F
            header = 2 + (2 if size == 126 else 8 if size == 127 else 0) + 4 * (second >> 7)
            if length - position < header:
                self._head = data[position:]
                return length, None
            if size >= 126:
                extended = data[position + 2 : position + (4 if size == 126 else 10)]
                size = int.from_bytes(extended, "big")
            refusal = self._charge(first, second, size)
            if refusal is not None:
                return position, refusal
            position += header
            self._skip = size

    def _charge(self, first: int, second: int, size: int) -> FrameRefusal | None:
        """Charge one frame: ``first`` and ``second`` bytes of its header, ``size`` of payload."""
        if not second & 0x80:
            return UNMASKED
        now = self._loop.time()
        if not self._allowance.spend(size, now):
            return OVER_ALLOWANCE
        opcode, final = first & 0x0F, first & 0x80
        if opcode < 8:  # a data frame, not a control frame
            if opcode and not final:
                self._started, self._fragments = now, 0
            if final:
                self._started = None
            self._fragments += 1
        started = self._started
        if started is not None and (
            self._fragments > MAX_FRAGMENTS or now - started > MAX_FRAGMENT_SECONDS
        ):
            return UNFINISHED
        return None


class ClientWebSocket(web.WebSocketResponse):
    """A client's WebSocket as both endpoints make it: every frame charged to ``allowance``.

    No compression, pings and closes left to the reader (where they are charged), the bearer
    subprotocol echoed, and messages of up to ``max_message_bytes`` bytes accepted (1009 past it).
    """

    def __init__(self, allowance: Allowance, *, max_message_bytes: int) -> None:
        super().__init__(
            # aiohttp refuses a message of exactly max_msg_size; the documented limit is inclusive.
            max_msg_size=max_message_bytes + 1,
            compress=False,
            timeout=CLOSE_TIMEOUT,
            # Pings and closes are answered by the reader, where they count against the allowance.
            autoping=False,
            autoclose=False,
            # Echoed when a browser offers ["bearer", token]: it fails a handshake that echoes none.
            protocols=(BEARER_PROTOCOL,),
        )
        self._allowance = allowance

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        # The touch-point (see the module's docstring): what came with the handshake is held
        # back from aiohttp's parser until the meter stands in front of it.
        handler = request.protocol
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        transport = request.transport
        assert transport is not None  # set during the handshake
        meter = FrameMeter(handler._payload_parser, self._reader, self._allowance, transport)
        handler._payload_parser = meter
        if tail:
            meter.feed_data(tail)
