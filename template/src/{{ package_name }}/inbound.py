"""A raw client's connection after its handshake: frames charged, parsed, and answered in turn.

Once ``/_ws/``'s endpoint has accepted a handshake, the connection belongs to a
:class:`RawClient` (:mod:`.handover`): an asyncio protocol driven by callbacks, with no task, no
future and no aiohttp object while its client is idle. The hub writes its pre-encoded frames to
the transport, as to any client.

What the client sends passes, in order:

- a :class:`FrameCounter`, which reads only the frame headers (not the payloads) and, before
  anything is parsed, charges every frame (text, binary, continuation, ping, pong, close) to the
  connection's :class:`~.guards.Allowance`, bounds a fragmented message to ``MAX_FRAGMENTS``
  frames and ``MAX_FRAGMENT_SECONDS`` seconds, and refuses a frame the client did not mask
  (RFC 6455, section 5.1). Past any of these, nothing more of what the client sends is parsed:
  it is closed (``RATE_EXCEEDED``, 1008 or 1002). It also finds a close frame sent between the
  fragments of an unfinished message (section 5.4 allows control frames there): that message is
  dropped, and the close answered as any other;
- ``websockets``' sans-I/O codec (``websockets.protocol.Protocol``, conformance-tested, public
  API for this use), which parses the frames, answers pings, runs the closing handshake, and
  fails the connection with 1009 past ``MAX_MESSAGE_BYTES`` and 1002 on a protocol error; a
  text message that is not UTF-8 is failed with 1007 here;
- the client's :class:`~.session.Session`, one text message at a time: while the session
  answers one (a short task), reading pauses, so that requests are answered in order and a
  client cannot queue more than its allowance. Binary messages are ignored.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

from aiohttp import WSCloseCode
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side

from .guards import Allowance
from .hub import CLOSE_TIMEOUT
from .logs import CONNECTION
from .session import RATE_EXCEEDED, Session

logger = logging.getLogger(__name__)
#: The codec's own logger: it reports each connection it closes at INFO, which the app does not.
_CODEC_LOGGER = logging.getLogger(f"{__name__}.codec")
_CODEC_LOGGER.setLevel(logging.WARNING)

#: Most frames one fragmented message may take, its first and last included.
MAX_FRAGMENTS = 64
#: Most seconds between the first frame of a fragmented message and its last.
MAX_FRAGMENT_SECONDS = 10.0
#: How the codec's close frames begin (FIN and the close opcode): its other frames are pongs.
_CLOSE_FRAME_START = 0x80 | Opcode.CLOSE.value
#: An empty last frame of a message, masked as a client's: what ends, for the codec, a message a
#: close frame interrupted (the codec fails a close that leaves a message unfinished, with 1002).
_DROPPED_MESSAGE_END = Frame(Opcode.CONT, b"", fin=True).serialize(mask=True)
#: The sessions' tasks that tell the service a connection ended (their only strong reference).
_ENDING: set[asyncio.Task[None]] = set()


class FrameRefusal(NamedTuple):
    """Why a client's frames stopped being read: the close code and reason to send."""

    code: int
    reason: bytes


#: The client sent more frames or bytes than its allowance (closed as any flooder).
OVER_ALLOWANCE = FrameRefusal(RATE_EXCEEDED, b"too many messages")
#: The client did not finish a fragmented message within the bounds.
UNFINISHED = FrameRefusal(WSCloseCode.POLICY_VIOLATION, b"message not finished in time")
#: The client sent an unmasked frame.
UNMASKED = FrameRefusal(WSCloseCode.PROTOCOL_ERROR, b"frames must be masked")


class FrameCounter:
    """Reads the headers of a client's frames as they arrive, and charges each to ``allowance``;
    tells where a close frame interrupts an unfinished message.

    Args:
        allowance: What the client may send.
        loop: The event loop, whose clock the allowance counts in.
    """

    __slots__ = ("_allowance", "_fragments", "_head", "_loop", "_skip", "_started")

    def __init__(self, allowance: Allowance, loop: asyncio.AbstractEventLoop) -> None:
        self._allowance = allowance
        self._loop = loop
        self._head = b""  # the start of a frame header cut by the end of the last read
        self._skip = 0  # payload bytes of the current frame still to come
        self._started: float | None = None  # when the unfinished message began
        self._fragments = 0  # frames of the unfinished message

    def scan(self, data: bytes) -> tuple[int, FrameRefusal | None, int | None]:
        """Charge each frame that begins in ``data``.

        Returns:
            How many bytes of ``data`` may be parsed (all of them, or up to the first refused
            frame), why the frame there is refused (None if none is), and where in ``data`` a
            close frame begins that ends an unfinished message (None if none does): the
            message is over, dropped.
        """
        held = len(self._head)
        end, refusal, dropped = self._scan(self._head + data if held else data)
        return max(end - held, 0), refusal, None if dropped is None else dropped - held

    def _scan(self, data: bytes) -> tuple[int, FrameRefusal | None, int | None]:
        length = len(data)
        position = 0
        dropped = None
        self._head = b""
        while True:
            if self._skip:
                step = min(self._skip, length - position)
                self._skip -= step
                position += step
            if position >= length:
                return length, None, dropped
            first, second = data[position], data[position + 1] if position + 1 < length else 0
            # A close between the fragments of a message ends it: told by the read that brings
            # the first byte of the close's header (the opcode), before the codec has any of it.
            if first & 0x0F == Opcode.CLOSE.value and self._started is not None:
                self._started, dropped = None, position
            size = second & 0x7F
            header = 2 + (2 if size == 126 else 8 if size == 127 else 0) + 4 * (second >> 7)
            if length - position < header:
                self._head = data[position:]
                return length, None, dropped
            if size >= 126:
                extended = data[position + 2 : position + (4 if size == 126 else 10)]
                size = int.from_bytes(extended, "big")
            refusal = self._charge(first, second, size)
            if refusal is not None:
                return position, refusal, dropped
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


class RawClient(asyncio.Protocol):
    """One client of ``/_ws/`` once its handshake is answered, driven by callbacks.

    Made by the endpoint before the handover; :meth:`start` gives it its session, which it opens
    (the service's ``on_connect``), then answers the client's text messages in turn. The hub
    sees it as a :class:`~.hub.Client`: :attr:`closed`, and :meth:`close`.

    Args:
        allowance: What the client may send.
        max_message_bytes: The largest message the client may send (1009 past it).
        heard: Told each time the client sends something (the hub's ``heard``).
        about: The connection's id and client, set in the log context of what it logs.
    """

    __slots__ = (
        "_aborting",
        "_about",
        "_busy",
        "_closed_by_server_with",
        "_closing",
        "_codec",
        "_counter",
        "_fragments",
        "_heard",
        "_lost",
        "_session",
        "_text",
        "_waiting",
        "transport",
    )

    def __init__(
        self,
        allowance: Allowance,
        *,
        max_message_bytes: int,
        heard: Callable[[RawClient], None],
        about: dict[str, str],
    ) -> None:
        loop = asyncio.get_running_loop()
        self._counter: FrameCounter | None = FrameCounter(allowance, loop)
        self._codec = Protocol(Side.SERVER, max_size=max_message_bytes, logger=_CODEC_LOGGER)
        self._heard = heard
        self._about = about
        self.transport: asyncio.Transport | None = None
        self._session: Session | None = None
        #: The task answering a message (or opening the session); reading pauses meanwhile.
        self._busy: asyncio.Task[Any] | None = None
        #: Text messages parsed while a task was busy, answered in turn after it.
        self._waiting: collections.deque[str] | None = None
        #: The fragments of an unfinished message (None: none), and whether it is text.
        self._fragments: list[bytes | bytearray | memoryview] | None = None
        self._text = True
        self._closed_by_server_with: int | None = None
        #: Set when the server closes: done once the connection is lost.
        self._closing: asyncio.Future[None] | None = None
        #: Drops the connection if the peer does not finish the closing handshake in time.
        self._aborting: asyncio.TimerHandle | None = None
        self._lost = False

    # --- the hub's side (hub.Client) ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether a close frame was sent or received: no data frame may follow."""
        return self._codec.state is not OPEN

    @property
    def ending_code(self) -> int:
        """The close code the connection ended with: the server's if it closed first, else the
        client's; 1006 (abnormal closure) while open or after no close frame at all."""
        if self._closed_by_server_with is not None:
            return self._closed_by_server_with
        received = self._codec.close_rcvd
        return WSCloseCode.ABNORMAL_CLOSURE if received is None else received.code

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"") -> bool:
        """Close with ``code`` and ``message``: the close frame, then the end of what the server
        sends (TCP's FIN; the client may still send its close). Return once the connection is
        over: at the client's answer, or ``CLOSE_TIMEOUT`` later at most."""
        codec = self._codec
        if codec.state is OPEN:
            self._closed_by_server_with = code
            codec.send_close(code, message.decode(errors="replace"))
            self._write()
        if self._lost:
            return True
        self._finish()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closing)
        return True

    # --- the session's side ------------------------------------------------------------------

    def start(self, session: Session, received: bytes) -> None:
        """Open ``session`` (the service's ``on_connect``), then read the client: first
        ``received``, what it sent behind its handshake."""
        self._session = session
        # Refused or failed, on_connect closed the connection: nothing it sends is answered.
        opening = session.opening()
        if opening is not None:  # the client's messages wait for the service's on_connect
            self._run(opening)
        if received:
            self.data_received(received)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        codec, counter = self._codec, self._counter
        self._heard(self)
        if codec.state is not OPEN:  # after a close, what comes is discarded
            codec.receive_data(data)
            codec.events_received()
            self._write()
            return
        refusal = dropped = None
        if counter is not None:
            end, refusal, dropped = counter.scan(data)
            if refusal is not None:
                data = data[:end]
        if dropped is not None and dropped < len(data):  # a close (not refused) interrupts
            # a message: the codec gets an end of that message before the close, and what this
            # end completes is dropped.
            codec.receive_data(data[:dropped])
            messages = self._messages()
            self._fragments = None
            codec.receive_data(_DROPPED_MESSAGE_END)
            codec.receive_data(data[dropped:])
            messages += self._messages()
        else:
            codec.receive_data(data)
            messages = self._messages()
        if refusal is not None and codec.state is OPEN:
            self._refuse(refusal)
        self._answer(messages)

    def eof_received(self) -> bool:
        was_open = self._codec.state is OPEN
        self._codec.receive_eof()
        messages = self._messages()
        self._answer(messages if was_open else [])
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._aborting is not None:
            self._aborting.cancel()
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        if self._busy is None:
            self._end()

    # --- what the client sends ---------------------------------------------------------------

    def _messages(self) -> list[str | bytes]:
        """The messages the codec completed, in order: texts decoded, binaries as they are.

        A text that is not UTF-8 fails the connection (1007) and ends the list.
        """
        messages: list[str | bytes] = []
        for event in self._codec.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text, self._fragments = opcode is Opcode.TEXT, [event.data]
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(event.data)
            else:
                continue
            if event.fin:
                data, self._fragments = b"".join(self._fragments), None
                if not self._text:
                    messages.append(data)
                    continue
                try:
                    messages.append(data.decode())
                except UnicodeDecodeError:
                    self._codec.fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
                    break
        return messages

    def _answer(self, messages: list[str | bytes]) -> None:
        """Write the codec's pongs, then hand ``messages`` on, then write the codec's close, if
        any: in the order of the frames that asked for them (a close, the client's or a
        refusal, ends what was read)."""
        writes = self._codec.data_to_send()
        if messages:
            closing = [chunk for chunk in writes if not chunk or chunk[0] == _CLOSE_FRAME_START]
            self._send([chunk for chunk in writes if chunk and chunk[0] != _CLOSE_FRAME_START])
            for message in messages:
                if isinstance(message, str):
                    self.text_received(message)
                else:
                    self.binary_received(message)
            writes = closing
        self._send(writes)

    def text_received(self, text: str) -> None:
        """Hand one text message to the session, in turn."""
        if self._busy is not None:
            if self._waiting is None:
                self._waiting = collections.deque()
            self._waiting.append(text)
        elif self._session is not None:
            self._run(self._session.handle(text))

    def binary_received(self, data: bytes) -> None:
        """Ignore a binary message: every request is a JSON text."""

    def _refuse(self, refusal: FrameRefusal) -> None:
        """Close a client past its allowance, or that broke a rule of :class:`FrameCounter`."""
        self._counter = None
        code, reason = refusal
        with self._named():
            if refusal is OVER_ALLOWANCE:
                logger.warning("closing a client that sent too much (%d)", code)
            else:
                logger.warning("closing a client: %s (%d)", reason.decode(), code)
        self._closed_by_server_with = code
        self._codec.fail(code, reason.decode())

    # --- one task at a time ------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, object]) -> None:
        """Run ``work`` (the session's), reading paused until it is done."""
        with self._named():  # the task's log lines name the connection
            self._busy = asyncio.get_running_loop().create_task(work)
        self._busy.add_done_callback(self._done)
        transport = self.transport
        if transport is not None and not transport.is_closing() and self._codec.state is OPEN:
            transport.pause_reading()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._busy = None
        if not task.cancelled() and (error := task.exception()) is not None:
            with self._named():
                logger.error("answering a client failed", exc_info=error)
        if self._lost:
            self._end()
            return
        waiting = self._waiting
        if waiting and self._session is not None and self._codec.state is OPEN:
            self._run(self._session.handle(waiting.popleft()))
            return
        self._waiting = None
        if self.transport is not None and not self.transport.is_closing() and self._counter:
            self.transport.resume_reading()

    def _end(self) -> None:
        """The connection is over: out of the hub, and the service told (``on_disconnect``)."""
        session, self._session = self._session, None
        if session is None:
            return
        session.close()
        ending = session.ending(self.ending_code)
        if ending is None:
            return
        with self._named():
            task = asyncio.get_running_loop().create_task(ending)
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    # --- what goes to the client -------------------------------------------------------------

    def _write(self) -> None:
        """Write what the codec has to send."""
        self._send(self._codec.data_to_send())

    def _send(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` of the codec's; at its end (once it has sent its close), finish."""
        transport = self.transport
        if transport is None:
            return
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:
                self._finish()

    def _finish(self) -> None:
        """End what the server sends (a server closes the TCP connection first: RFC 6455,
        7.1.1), and drop the connection if the client has not closed its side within
        ``CLOSE_TIMEOUT``. Meanwhile what it sends is read (and discarded, but its close),
        unless it was refused: nothing more of what a refused client sends is read."""
        transport = self.transport
        if self._aborting is not None or transport is None or transport.is_closing():
            return
        transport.write_eof()
        if self._counter is None:
            transport.pause_reading()
        else:
            transport.resume_reading()
        self._aborting = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    @contextmanager
    def _named(self) -> Iterator[None]:
        """Name this connection in the log lines written meanwhile (and its tasks')."""
        token = CONNECTION.set(self._about)
        try:
            yield
        finally:
            CONNECTION.reset(token)
