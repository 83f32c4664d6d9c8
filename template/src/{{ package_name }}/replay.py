"""The replay log: recent broadcasts kept for clients that reconnect, without any I/O.

Each entry is a broadcast's id and its frame, ready to be written as it is. Ids follow one another
(``n``, ``n + 1``, ...); a broadcast that does not follow the newest one means the ones in between
were lost (the message broker restarted, say), and the log starts again from it, so that a replay
never jumps over a hole.

The gap rule: a client that saw ``last_id`` can be brought up to date from the log when
``oldest_id - 1 <= last_id <= newest_id``; anything older has fallen out of the log, anything newer
was never here.
"""

from __future__ import annotations

import itertools
from collections import deque


class ReplayLog:
    """The newest ``capacity`` broadcasts, each as ``(id, frame)``.

    Args:
        capacity: Number of broadcasts kept; 0 keeps none (no client can be brought up to date).
    """

    def __init__(self, capacity: int) -> None:
        self._entries: deque[tuple[int, bytes]] = deque(maxlen=capacity)
        self._newest_id: int | None = None

    @property
    def newest_id(self) -> int | None:
        """Id of the newest broadcast appended, kept or not; None before the first."""
        return self._newest_id

    @property
    def oldest_id(self) -> int | None:
        """Id of the oldest broadcast still kept; None when none is kept."""
        return self._entries[0][0] if self._entries else None

    def append(self, message_id: int, frame: bytes) -> bool:
        """Keep the broadcast ``message_id``, dropping the oldest one when the log is full.

        Returns:
            False when ``message_id`` does not follow the newest id (broadcasts were lost in
            between, or ids went back): the log then starts again from this broadcast.
        """
        follows = self._newest_id is None or message_id == self._newest_id + 1
        if not follows:
            self._entries.clear()
        self._entries.append((message_id, frame))
        self._newest_id = message_id
        return follows

    def covers(self, last_id: int) -> bool:
        """Whether a client that saw ``last_id`` can be brought up to date from this log."""
        if self._newest_id is None or last_id > self._newest_id:
            return False
        if last_id == self._newest_id:
            return True
        oldest_id = self.oldest_id
        return oldest_id is not None and last_id >= oldest_id - 1

    def frames_after(self, last_id: int, max_bytes: int) -> list[bytes]:
        """The frames of the broadcasts after ``last_id``, oldest first, at most ``max_bytes``.

        At least one frame is returned when there is one, whatever its size; an empty list means
        ``last_id`` is the newest. The caller checks :meth:`covers` first.

        Raises:
            ValueError: The log does not cover ``last_id``.
        """
        if not self.covers(last_id):
            raise ValueError(f"the replay log does not cover id {last_id}")
        oldest_id = self.oldest_id
        if oldest_id is None:
            return []
        frames: list[bytes] = []
        size = 0
        for _message_id, frame in itertools.islice(self._entries, last_id + 1 - oldest_id, None):
            size += len(frame)
            if frames and size > max_bytes:
                break
            frames.append(frame)
        return frames
