"""Bringing a reconnecting client up to date, planned without any I/O.

A :class:`CatchUp` knows where one client stands on one stream (the id of the last broadcast it
has) and says what to do next, one :data:`Step` at a time: write these frames, wait for the
client to read, wait for a delivery, ask the broker for history, tell it about a gap, or make it
live. Whoever executes the steps (the hub) reports back what it saw: the client's unsent bytes
and the time at each :meth:`CatchUp.next_step`, and what the broker answered
(:meth:`CatchUp.received`).

The rules it follows:

- The missed broadcasts come from the replay log, or from the broker's history when the client
  is older than the log, in chunks of at most ``limit`` unsent bytes, each once the client holds
  at most a quarter of ``limit`` and all the catch-ups of the process together leave room for a
  chunk under ``budget_bytes``.
- A client that the log overtakes while it reads its backlog is too slow for it: cut off
  (``backlog``). One that reads none of its catch-up for ``CATCH_UP_STALL_SECONDS`` is cut off
  too (``stalled``).
- A client ahead of the log (it saw broadcasts that this process has not delivered yet, or
  delivered before anyone here subscribed) asks a broker shared by other processes for what
  follows its cursor. The broker answers that it has nothing newer only once this process has
  been delivered everything up to the cursor: the client then goes live, from the log if
  broadcasts were delivered here meanwhile, and is never sent again, live, what it was sent
  from the broker's history (issue 24). Should the log still be behind the cursor then, the
  client waits for this process's deliveries to reach it, however long that takes. Broadcasts
  that can be found nowhere (a broker of this process alone, or one that lacks the cursor),
  and a hole in the ids (the log restarted), are told as a gap, after which the client goes
  live.

It does not write, sleep or ask anything itself, and it does not notice that a connection has
ended: the executor checks that before each step.
"""

from __future__ import annotations

from typing import NamedTuple

from . import frames
from .frames import Dialect
from .replay import ReplayLog

__all__ = [
    "CATCH_UP_SECONDS",
    "CATCH_UP_STALL_SECONDS",
    "HISTORY_PAGE",
    "LIVE",
    "AskHistory",
    "AwaitDelivery",
    "CatchUp",
    "CutOff",
    "Drain",
    "Gap",
    "Live",
    "Step",
    "Write",
]

#: Seconds of one wait for this process's deliveries (a client ahead of them, with a shared
#: broker): a delivery ends the wait sooner, and the catch-up looks again after each.
CATCH_UP_SECONDS = 2.0

#: Broadcasts asked from the broker at once for a client older than the replay log.
HISTORY_PAGE = 100

#: Seconds a catching-up client may read none of what it was sent before it is cut off with
#: 1013: a replay that makes no progress would hold its backlog for ever.
CATCH_UP_STALL_SECONDS = 10.0

#: First and longest pause, in seconds, between two looks at a catching-up client's unsent data.
DRAIN_POLL_MIN = 0.001
DRAIN_POLL_MAX = 0.1


class Write(NamedTuple):
    """Write ``data`` (whole frames) to the client, then ask for the next step."""

    data: bytes


class Drain(NamedTuple):
    """Wait ``seconds`` for room (the client reads, or other catch-ups free the budget)."""

    seconds: float


class AwaitDelivery(NamedTuple):
    """Wait at most ``seconds`` for the stream's next delivery, then ask for the next step."""

    seconds: float


class AskHistory(NamedTuple):
    """Ask the broker for at most ``most`` broadcasts after ``after``; report the answer to
    :meth:`~CatchUp.received`."""

    after: int
    most: int


class Gap(NamedTuple):
    """Write ``data`` (the gap notice's frame), then make the client live: it is done."""

    data: bytes


class Live(NamedTuple):
    """Make the client live: it has every broadcast the log has, and is done."""


class CutOff(NamedTuple):
    """Cut the client off with 1013 for ``reason`` (``backlog`` or ``stalled``): it is done."""

    reason: str


#: The one :class:`Live` step.
LIVE = Live()

#: What :class:`CatchUp` says to do next.
Step = Write | Drain | AwaitDelivery | AskHistory | Gap | Live | CutOff


class CatchUp:
    """The catch-up of one client on one stream, from ``last_id``, as a series of steps.

    Args:
        last_id: The id of the last broadcast the client has.
        log: The stream's replay log, read (never changed) at each step.
        restarts: Times the stream's log started again so far (a hole in the ids).
        channel: The stream's channel; None for the default stream.
        dialect: How the client is sent each message; None for the JSON objects themselves.
        limit: Unsent bytes the client may hold: the most a chunk brings it to.
        budget_bytes: Unsent bytes all the catching-up clients of the process may hold at once.
        shared: Whether the broker is shared with other processes, whose deliveries may come.
    """

    def __init__(
        self,
        last_id: int,
        log: ReplayLog,
        *,
        restarts: int,
        channel: str | None,
        dialect: Dialect | None,
        limit: int,
        budget_bytes: int,
        shared: bool,
    ) -> None:
        self._log = log
        self._restarts = restarts
        self._channel = channel
        self._kind = "broadcast" if channel is None else "channel"
        self._dialect = dialect
        self._limit = limit
        self._budget_bytes = budget_bytes
        self._shared = shared
        #: The id of the last broadcast the client has, once the steps so far are done.
        self.cursor = last_id
        self._from_log = False  # whether the log has served this client already
        # Whether the broker said it has nothing newer than the cursor, and so has delivered
        # everything up to it here: nothing older than the cursor is to come live any more.
        self._level = False
        self._room = 0  # bytes the next chunk may take, as of the last look
        self._draining = False  # whether the last step was a Drain
        self._pause = DRAIN_POLL_MIN
        self._unsent = 0  # the client's unsent bytes at the last look
        self._read_at = 0.0  # when it last read some of its catch-up

    def next_step(self, *, unsent: int, others_unsent: int, restarts: int, now: float) -> Step:
        """The next step, once the previous one is done.

        Args:
            unsent: The client's unsent bytes now.
            others_unsent: The unsent bytes of the process's other catch-ups now.
            restarts: Times the stream's log has started again so far.
            now: The time, in seconds (a monotonic clock).
        """
        if not self._draining:
            self._pause, self._read_at = DRAIN_POLL_MIN, now
        elif unsent < self._unsent or not unsent:  # it reads, or holds nothing while it waits
            self._read_at = now
        elif now - self._read_at > CATCH_UP_STALL_SECONDS:
            return CutOff("stalled")
        self._unsent = unsent
        log = self._log
        overtaken = self._from_log and not log.covers(self.cursor) and restarts == self._restarts
        if (
            unsent > self._limit // 4 or others_unsent + self._limit > self._budget_bytes
        ) and not overtaken:  # overtaken while it reads: no need to wait for it any longer
            self._draining = True
            pause, self._pause = self._pause, min(2 * self._pause, DRAIN_POLL_MAX)
            return Drain(pause)
        self._draining = False
        self._room = self._limit - unsent
        if restarts != self._restarts:
            return self._gap()  # a hole in the ids: the live clients were told, tell this one
        if log.covers(self.cursor):
            chunk = log.frames_after(self.cursor, self._room)
            if not chunk:
                return LIVE
            if self._dialect is not None:
                chunk = [self._frame(self._kind, frames.payload(frame)) for frame in chunk]
            self.cursor += len(chunk)
            self._from_log = True
            return Write(b"".join(chunk))
        if self._from_log:
            return CutOff("backlog")
        newest_id = log.newest_id
        if self._level and newest_id is None:
            return LIVE  # nothing delivered here since the stream was followed: all is to come
        if self._level and newest_id is not None and self.cursor > newest_id:
            # The log behind the cursor all the same (a broker that answered before its
            # deliveries here reached it): live now, the client would get again what it has.
            # The next delivery here ends the wait.
            return AwaitDelivery(CATCH_UP_SECONDS)
        if newest_id is not None and self.cursor > newest_id and not self._shared:
            return self._gap()  # ahead of a process alone: its broadcasts are nowhere
        # Older than the log, ahead of it (another process delivered more), or nothing
        # delivered here yet: ask the broker.
        return AskHistory(self.cursor, HISTORY_PAGE)

    def received(self, missed: list[tuple[int, bytes]] | None) -> Step | None:
        """The step after :class:`AskHistory`, given the broker's answer; None when it is the
        one :meth:`next_step` says (the broker has nothing newer).

        Args:
            missed: The broadcasts after the cursor, ``(id, message)`` oldest first, or none if
                the cursor is the broker's newest and this process has been delivered
                everything up to it; None when the broker keeps none that old.
        """
        if missed is None or (missed and missed[0][0] != self.cursor + 1):
            return self._gap()
        if not missed:  # nothing newer, and delivered here: live, from the log if need be
            self._level = True
            return None
        chunk: list[bytes] = []
        size = 0
        for _id, message in missed:
            frame = self._frame(self._kind, message)
            size += len(frame)
            if chunk and size > self._room:
                break
            chunk.append(frame)
        self.cursor += len(chunk)
        self._level = False
        return Write(b"".join(chunk))

    def _gap(self) -> Gap:
        notice = frames.gap(self.cursor, self._log.oldest_id, self._channel)
        return Gap(self._frame("gap", notice))

    def _frame(self, kind: str, message: bytes) -> bytes:
        dialect = self._dialect
        return frames.text_frame(message if dialect is None else dialect(kind, message))
