"""Who may connect, and what a connection may do: the checks at the edge, without any I/O.

- :func:`is_websocket_path`: an upgrade is accepted only on a path that begins with a WebSocket
  prefix both as sent and as a normalising proxy would see it.
- :func:`origin_allowed`: a browser's upgrade is accepted only from the app's own origin or an
  allowed one (cross-site WebSocket hijacking).
- :class:`Allowance`: how many messages and bytes a connection may send per second, and
  :class:`TokenBucket`, the rate behind it and behind the admission of new connections.
- :func:`client_address`: the client's address behind the platform's proxies
  (``X-Forwarded-For``, as far as the trusted proxies vouch for it).
- :class:`Admission`: which new connections are let in, at a rate shared fairly between client
  addresses, with a margin kept for clients that come back, and how long the others should wait.
- :func:`is_valid_close_code`: which close codes a client may send (RFC 6455, section 7.4).
- :func:`parse_json`: what a client or the backend sends, as JSON any browser can read back,
  nested at most ``MAX_JSON_DEPTH`` levels.
- :func:`is_valid_channel`: which channel names a client may use.
- :class:`LoopShare`: the part of each event loop iteration that work which can wait (a
  reconnect wave's batched subscribes) may take, so that the rest of the loop never waits on it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import time
from collections import OrderedDict, deque
from typing import TypeGuard
from urllib.parse import unquote, urlsplit

#: Ports an origin or a ``Host`` may leave out.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Seconds of sending at full rate that a connection may save up and spend at once.
BURST_SECONDS = 2.0
_REPEATED_SLASHES = re.compile(r"/{2,}")
#: Deepest nesting of JSON a client or the backend may send.
MAX_JSON_DEPTH = 32
#: Channel names: 1-128 letters, digits and ``_.:@/-`` (``chat/room-1``, ``post:123``).
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")
#: Share of the admission rate one client address may take: a flood from one address leaves
#: three quarters to everyone else, and an office or a carrier's NAT (one address for hundreds of
#: clients) still gets back in within a second or two of a deploy.
ADDRESS_SHARE = 0.25
#: Share of the admission burst kept for clients that come back (with ``last_id`` or a token)
#: over first-time connections, as VIP's own real-time server keeps 10 % for connected clients.
RETURNING_SHARE = 0.1
#: Client addresses whose share is tracked at once; the oldest are forgotten past it.
MAX_TRACKED_ADDRESSES = 100_000
#: Longest wait, in seconds, that a refused connection is told (``Retry-After``).
MAX_RETRY_AFTER = 60.0


def proxy_path(raw_path: str) -> str:
    """The path of ``raw_path`` (a request target as sent) as a normalising proxy routes it.

    The query is dropped, percent-escapes are decoded once, repeated slashes become one, and
    ``.`` and ``..`` segments are resolved (RFC 3986, section 5.2.4), never above the root.
    """
    path = _REPEATED_SLASHES.sub("/", unquote(raw_path.partition("?")[0]))
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(segments) > 1:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    if path.endswith(("/.", "/..")):
        segments.append("")
    return "/".join(segments) or "/"


def is_websocket_path(raw_path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the path of ``raw_path`` begins with one of ``prefixes`` as sent and as routed.

    A path with a backslash, as sent or percent-encoded, is not one: some proxies read it as a
    slash (``/_ws/\\..\\admin``), others do not.
    """
    as_sent = raw_path.partition("?")[0]
    if "\\" in unquote(as_sent):
        return False
    return as_sent.startswith(prefixes) and proxy_path(raw_path).startswith(prefixes)


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if it is not one.

    ``null`` (the origin of sandboxed frames and local files) stays ``null``.
    """
    origin = origin.strip().lower()
    if origin == "null":
        return origin
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def origin_allowed(origin: str, host: str, allowed: frozenset[str]) -> bool:
    """Whether a browser page of ``origin`` may open a WebSocket to this app.

    Args:
        origin: The request's ``Origin`` header.
        host: The request's ``Host`` header. It makes the app's own origin (whatever the scheme:
            TLS ends at the proxy) only when it is an IP address or ``localhost``: a DNS name in
            ``Host`` is whatever a DNS-rebinding page makes it, so the app's public names come
            from ``OWN_ORIGINS`` instead. ``X-Forwarded-Host`` is never trusted, for the same
            reason.
        allowed: The app's own origins and further ones (``OWN_ORIGINS``, ``ALLOWED_ORIGINS``),
            normalised (:func:`normalize_origin`); ``*`` allows any.
    """
    if "*" in allowed:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    if normalized in allowed:
        return True
    if normalized == "null":
        return False
    own = _without_default_port(host.strip().lower())
    return is_address(own) and normalized.partition("://")[2] == own


def is_address(host: str) -> bool:
    """Whether ``host`` (``name[:port]``) is an IP address or ``localhost``, not a DNS name."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _without_default_port(host: str) -> str:
    for port in (":80", ":443"):
        if host.endswith(port):
            return host.removesuffix(port)
    return host


def is_valid_close_code(code: int | None) -> bool:
    """Whether a client may send close code ``code`` (None: a close frame without one)."""
    if code is None or code == 0:
        return True
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class TokenBucket:
    """A rate with bursts: ``rate`` tokens a second, saved up to ``BURST_SECONDS`` worth.

    Args:
        rate: Tokens added per second.
        now: The current time in seconds (the event loop's clock).
        capacity: The most tokens saved up, instead of ``BURST_SECONDS`` worth.
    """

    __slots__ = ("_last", "_rate", "_tokens", "capacity")

    def __init__(self, rate: float, now: float, capacity: float | None = None) -> None:
        self._rate = rate
        #: The most tokens it saves up (and has at first).
        self.capacity = rate * BURST_SECONDS if capacity is None else capacity
        self._tokens = self.capacity
        self._last = now

    def take(self, amount: float, now: float, keep: float = 0.0) -> bool:
        """Take ``amount`` tokens if ``keep`` more would be left; a refusal takes nothing.

        A refused request leaves no debt: the next request is judged on the tokens saved up,
        whatever was refused before it.
        """
        tokens = self.tokens(now)
        if tokens - amount < keep:
            return False
        self._tokens = tokens - amount
        return True

    def tokens(self, now: float) -> float:
        """The tokens saved up at ``now``, at most ``capacity``."""
        self._tokens = min(self._tokens + (now - self._last) * self._rate, self.capacity)
        self._last = now
        return self._tokens

    def wait(self, amount: float, now: float) -> float:
        """Seconds from ``now`` until ``amount`` tokens are saved up, if nobody takes any."""
        return max(0.0, amount - self.tokens(now)) / self._rate

    def full(self, now: float) -> bool:
        """Whether it has saved up all it can: forgetting it would change nothing."""
        return self._tokens + (now - self._last) * self._rate >= self.capacity


def client_address(remote: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The address of the client behind ``trusted_hops`` proxies, for fairness and logs.

    Each proxy appends to ``X-Forwarded-For`` the address it received the request from. Behind
    ``trusted_hops`` proxies, the app's peer (``remote``) is the nearest of them, and the last
    ``trusted_hops`` entries of the header were appended by them: the left-most of those is the
    address the outermost trusted proxy saw, the client. Entries further left were written by
    the client itself (or by proxies nobody vouches for) and are never used.

    Args:
        remote: The peer address of the connection (``request.remote``).
        forwarded_for: The ``X-Forwarded-For`` header, or None when there is none; several
            headers are joined with commas first.
        trusted_hops: Proxies in front of the app (``TRUSTED_PROXY_HOPS``); 0 ignores the header.

    A header with fewer entries than ``trusted_hops`` gives its left-most one. This does not
    authenticate anyone: the address is only as true as the proxies, and is for fair shares
    and logs, never for authorisation.
    """
    hops = [entry.strip() for entry in (forwarded_for or "").split(",")]
    hops = [entry for entry in hops if entry]
    if trusted_hops <= 0 or not hops:
        return remote or ""
    return hops[-min(trusted_hops, len(hops))]


class Admission:
    """Which new connections are let in: ``rate`` a second, shared fairly, without any debt.

    Three rules, each a token bucket whose refusals cost nothing:

    - the process takes ``rate`` new connections a second, with bursts of ``BURST_SECONDS``
      worth;
    - one client address takes at most ``ADDRESS_SHARE`` of that (and of the burst), so that a
      flood from one address leaves the rest for everyone else;
    - first-time connections leave ``RETURNING_SHARE`` of the burst to clients that come back
      (with a ``last_id`` or a token), so that a deploy's reconnects are served first.

    A refused connection is told when to come back: when a token will be there for it, each
    address refused promised the slot after the previous one's (``1 / rate`` apart), so that a
    wave that honours the answer comes back spread at the rate instead of as one spike. An
    address refused again before its slot is told the same slot, and refusals for an address's
    own share promise nothing: a flood, from one address or from a few hundred, pushes
    everybody's answer back by one slot per address at most, and leaves no debt once it ends.

    Args:
        rate: New connections per second (``MAX_CONNECTS_PER_SECOND``).
        now: The current time in seconds (a monotonic clock).
    """

    __slots__ = ("_addresses", "_bucket", "_next_slot", "_rate")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._bucket = TokenBucket(rate, now)
        self._addresses: OrderedDict[str, _Share] = OrderedDict()
        self._next_slot = now

    def admit(self, address: str, returning: bool, now: float) -> float:
        """Take a connection from ``address`` in; 0.0 if it is, else seconds it should wait.

        Args:
            address: The client's address (:func:`client_address`).
            returning: Whether the client comes back (a ``last_id`` or a token).
            now: The current time in seconds.
        """
        share = self._share(address, now)
        if share.bucket.tokens(now) < 1:
            return min(MAX_RETRY_AFTER, share.bucket.wait(1, now))
        keep = 0.0 if returning else RETURNING_SHARE * self._bucket.capacity
        if not self._bucket.take(1, now, keep):
            if share.slot <= now:  # not promised one yet, or its slot has come
                share.slot = max(self._next_slot, now + self._bucket.wait(1 + keep, now))
                self._next_slot = share.slot + 1 / self._rate
            return min(MAX_RETRY_AFTER, share.slot - now)
        share.bucket.take(1, now)
        return 0.0

    @property
    def tracked_addresses(self) -> int:
        """Client addresses whose share is being tracked."""
        return len(self._addresses)

    def _share(self, address: str, now: float) -> _Share:
        """The share of ``address``; forgets, oldest first, the ones that have nothing to keep."""
        addresses = self._addresses
        share = addresses.get(address)
        if share is None:
            rate = max(1.0, self._rate * ADDRESS_SHARE)
            share = addresses[address] = _Share(TokenBucket(rate, now))
        else:
            addresses.move_to_end(address)
        # Least recently used first: O(1) per address forgotten (an OrderedDict's first item is
        # found in O(1), however many were deleted before it), never a pass over all of them.
        while len(addresses) > 1:
            oldest = next(iter(addresses.values()))
            if len(addresses) <= MAX_TRACKED_ADDRESSES and (
                oldest.slot > now or not oldest.bucket.full(now)
            ):
                break
            addresses.popitem(last=False)
        return share


class _Share:
    """What admission keeps about one client address: its bucket and its promised slot."""

    __slots__ = ("bucket", "slot")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.slot = 0.0  # when it was told a token would be there for it


class Allowance:
    """What one connection may send: ``messages_per_second`` and ``bytes_per_second``.

    Two token buckets, so that a client may send a short burst but not keep up more than the
    rates. Checking a frame is a few arithmetic operations.

    Args:
        messages_per_second: Messages (pings and pongs included) per second.
        bytes_per_second: Bytes of message data per second.
        now: The current time in seconds (the event loop's clock).
    """

    __slots__ = ("_bytes", "_messages")

    def __init__(self, messages_per_second: float, bytes_per_second: float, now: float) -> None:
        self._messages = TokenBucket(messages_per_second, now)
        self._bytes = TokenBucket(bytes_per_second, now)

    def spend(self, size: int, now: float) -> bool:
        """Count one message of ``size`` bytes; False when the connection is over its allowance."""
        within_messages = self._messages.take(1, now)
        return self._bytes.take(size, now) and within_messages


def parse_json(text: str | bytes) -> object:
    """Parse ``text`` as JSON that every browser can read back once broadcast.

    Raises:
        ValueError: ``text`` is not JSON, holds ``NaN``, ``Infinity`` or a number too large for a
            float, or nests deeper than ``MAX_JSON_DEPTH`` levels; the message says which.
    """
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        data = None
    else:
        if _depth(data) <= MAX_JSON_DEPTH:
            return data
    raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels")


def is_valid_channel(name: object) -> TypeGuard[str]:
    """Whether ``name`` is a channel name: 1-128 letters, digits and ``_.:@/-``."""
    return isinstance(name, str) and CHANNEL_PATTERN.fullmatch(name) is not None


def _refuse_constant(name: str) -> object:
    """Refuse ``NaN`` and ``Infinity``: browsers could not parse the broadcast."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """Parse a JSON number, refusing one too large for a float (``1e999``)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _depth(data: object, level: int = 1) -> int:
    """How deeply ``data`` nests, counting up to one past ``MAX_JSON_DEPTH``.

    A value inside a container is a level (``[1]`` is 2 deep, ``[]`` 1); only containers are
    recursed into, so a flat message costs a pass over its values and no call per value.
    """
    if level > MAX_JSON_DEPTH or not data or not isinstance(data, dict | list):
        return level
    deepest = level + 1
    for child in data.values() if isinstance(data, dict) else data:
        if isinstance(child, dict | list) and (depth := _depth(child, level + 1)) > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                break
    return deepest


class LoopShare:
    """A share of each event loop iteration, ``seconds`` long, for work that can wait.

    Work done in short steps (a batched subscribe, a channel at a time) asks :meth:`spent`
    before each step and, once it is, waits (:meth:`wait`) for a later iteration: the rest of
    this one (the health check, other connections' frames, a fan-out's next clients) goes
    first. One share serves every task that asks it, however many: a deploy's wave of thousands
    of batches takes ``seconds`` of each iteration together, not a step each, and the tasks that
    wait cost nothing until their turn. They are woken in the order they came, at the start of
    an iteration, as many as the share took lately (twice as many while shares are left over,
    half as many once one is spent): the work goes on as fast as the share allows.

    The share counts from its first :meth:`spent` of an iteration (by ``time.perf_counter``:
    uvloop's clock stands still within an iteration), whatever runs in between. It cannot
    interrupt a step: each must be short. For one event loop.

    Args:
        seconds: The share of each iteration.
    """

    __slots__ = ("_renewing", "_seconds", "_spent", "_started", "_waiting", "_woken")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._started: float | None = None  # when this iteration's share began to be taken
        self._spent = False  # whether this iteration's share was used up
        self._renewing = False  # whether _renew is scheduled
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._woken = 1  # waiters woken at the start of an iteration

    def spent(self) -> bool:
        """Whether this iteration's share is used up: the caller waits before its next step."""
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            self._renew_soon()
            return False
        if not self._spent and now - self._started >= self._seconds:
            self._spent = True
        return self._spent

    async def wait(self) -> None:
        """Wait for a turn in a later iteration, after the tasks that waited first."""
        self._renew_soon()
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        await turn

    def _renew_soon(self) -> None:
        """Renew the share at the start of the next iteration (once)."""
        if not self._renewing:
            self._renewing = True
            asyncio.get_running_loop().call_soon(self._renew)

    def _renew(self) -> None:
        """The share is whole again; the next waiters are woken, to go next iteration."""
        self._renewing = False
        waiting = self._waiting
        if self._spent:
            self._woken = max(1, self._woken // 2)
        elif waiting:
            self._woken = min(2 * self._woken, len(waiting))
        self._spent, self._started = False, None
        if waiting:
            # Scheduled before the woken tasks, so that they find the share whole again.
            self._renew_soon()
        woken = 0
        while waiting and woken < self._woken:
            turn = waiting.popleft()
            if not turn.done():  # its task was cancelled meanwhile
                turn.set_result(None)
                woken += 1
