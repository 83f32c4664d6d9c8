"""Connection tokens: HS256 JSON Web Tokens (RFC 7519) that a WordPress site can mint, standard
library only.

A token is ``<header>.<payload>.<signature>``, each part in unpadded base64url: the header
``{"alg":"HS256","typ":"JWT"}``, the claims as JSON, and the HMAC-SHA256 of the first two parts
under a secret. Claims read here:

- ``sub`` (required): who the client is, a non-empty string;
- ``exp`` (required): when the token expires, in seconds since the epoch, at most
  ``MAX_TOKEN_SECONDS`` ahead; a connection that outlives it is closed with 4001;
- ``nbf`` (optional): not valid before; ``iat`` (optional): when it was minted;
- ``channels`` and ``publish`` (optional): the channels the connection may subscribe to and
  publish on: exact names (``post:42``) or prefixes ending in ``*`` (``liveblog:*``).

Several secrets verify at once (``AUTH_SECRET="new old"``), so a site can rotate its secret
without dropping anyone: the first signs, every one verifies.

Minting is canonical, so that PHP's ``json_encode($claims, JSON_UNESCAPED_SLASHES)`` and Python
make the same token, byte for byte, for the same claims (``tests/token-vectors.json``): compact
JSON, keys in the order given, ``/`` unescaped, non-ASCII as ``\\uXXXX``.

Why not PyJWT: verification is 60 lines of ``hmac`` and ``json`` that refuse exactly what this app
means to refuse (one algorithm, a length cap before any work, non-ASCII, the claims above), with
the reason the test vectors name; PyJWT would need the same checks around it, and the tests check
both ways against its output (``tests/test_tokens.py``). Every character of a token is allowed in
``Sec-WebSocket-Protocol``, where a browser can send it, and in a cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from .guards import is_valid_channel, parse_json

#: Longest lifetime of a token accepted by default, in seconds (``MAX_TOKEN_SECONDS``).
MAX_TOKEN_SECONDS = 24 * 3600
#: Longest token read, in characters: a longer one is refused before any decoding or HMAC.
MAX_TOKEN_LENGTH = 4096
#: The one header this app mints; verification only requires its ``alg`` to be HS256.
HEADER = b'{"alg":"HS256","typ":"JWT"}'
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class InvalidToken(ValueError):
    """A token that must be refused.

    Args:
        reason: Why, in one word of ``tests/token-vectors.json``: ``oversized``, ``non_ascii``,
            ``malformed``, ``alg_none``, ``alg``, ``bad_signature``, ``missing_sub``,
            ``missing_exp``, ``expired``, ``exp_too_far``, ``not_yet_valid`` or ``claims``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grants:
    """Channels a token opens: exact names, and prefixes (a grant ``liveblog:*`` keeps
    ``liveblog:``). :data:`NO_GRANTS` opens none."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, grants: Iterable[object]) -> Grants:
        """The grants of a ``channels`` or ``publish`` claim.

        Raises:
            ValueError: An entry is not a channel name, or a prefix of one ending in ``*``.
        """
        names, prefixes = set(), []
        for grant in grants:
            if isinstance(grant, str) and grant.endswith("*"):
                prefix = grant[:-1]
                if prefix and not is_valid_channel(prefix):
                    raise ValueError(f"{grant!r} is not a channel prefix")
                prefixes.append(prefix)
            elif is_valid_channel(grant):
                names.add(grant)
            else:
                raise ValueError(f"{grant!r} is not a channel")
        return cls(frozenset(names), tuple(prefixes))

    def allows(self, channel: str) -> bool:
        """Whether ``channel`` is granted: named, or starting with a granted prefix."""
        return channel in self.names or channel.startswith(self.prefixes)


NO_GRANTS = Grants()


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says.

    Attributes:
        subject: ``sub``: who the client is.
        expires: ``exp``: when the token stops being valid, in seconds since the epoch.
        channels: ``channels``: what the connection may subscribe to (none without the claim).
        publish: ``publish``: what it may publish on (none without the claim).
        payload: Every claim, as decoded.
    """

    subject: str
    expires: float
    channels: Grants
    publish: Grants
    payload: Mapping[str, Any]


def mint_token(secret: str, claims: Mapping[str, Any]) -> str:
    """The canonical HS256 token of ``claims`` (a JSON object) signed with ``secret``.

    Does not check the claims: :func:`read_token` does, where they are used.
    """
    payload = json.dumps(claims, separators=(",", ":"), allow_nan=False).encode()
    signed = f"{_encode(HEADER)}.{_encode(payload)}"
    return f"{signed}.{_encode(_hmac(secret, signed))}"


def issue_token(
    secret: str,
    subject: str,
    seconds: int,
    now: float | None = None,
    *,
    channels: Sequence[str] | None = None,
    publish: Sequence[str] | None = None,
) -> str:
    """A token for ``subject`` valid ``seconds`` from ``now``, granting ``channels`` and
    ``publish`` when given: claims ``sub``, ``iat``, ``exp``, ``channels``, ``publish``, in
    that order.

    Raises:
        ValueError: ``seconds`` is not 1-``MAX_TOKEN_SECONDS``.
    """
    if not 0 < seconds <= MAX_TOKEN_SECONDS:
        raise ValueError(f"seconds must be 1-{MAX_TOKEN_SECONDS}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": subject, "iat": issued, "exp": issued + seconds}
    if channels is not None:
        claims["channels"] = list(channels)
    if publish is not None:
        claims["publish"] = list(publish)
    return mint_token(secret, claims)


def read_token(
    token: str,
    secrets: Sequence[str],
    *,
    max_seconds: float = MAX_TOKEN_SECONDS,
    now: float | None = None,
) -> Claims:
    """The claims of ``token`` if one of ``secrets`` signed it with HS256 and it is valid now.

    The length is checked before anything else, the signature (in constant time, against each
    secret) before the claims are parsed. Only HS256 is accepted, whatever the header says.

    Raises:
        InvalidToken: The token must be refused; its ``reason`` says why.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("oversized")
    if not token.isascii():  # a non-UTF-8 byte of a header arrives as a lone surrogate
        raise InvalidToken("non_ascii")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed")
    header = _object(_decode(parts[0]))
    algorithm = header.get("alg")
    if algorithm != "HS256":
        none = isinstance(algorithm, str) and algorithm.lower() == "none"
        raise InvalidToken("alg_none" if none else "alg")
    payload, signature = _decode(parts[1]), _decode(parts[2])
    signed = f"{parts[0]}.{parts[1]}"
    # Every secret is tried, so that the time taken does not tell which one matched.
    if not sum(hmac.compare_digest(signature, _hmac(secret, signed)) for secret in secrets):
        raise InvalidToken("bad_signature")
    return _claims(_object(payload), time.time() if now is None else now, max_seconds)


def verify_token(secret: str | Sequence[str], token: str, now: float | None = None) -> str | None:
    """The subject of ``token`` if it is valid under ``secret`` (one, or several separated by
    spaces, or a list), else None: :func:`read_token` for ``service.py`` files that call it."""
    secrets = secret.split() if isinstance(secret, str) else secret
    try:
        return read_token(token, secrets, now=now).subject
    except InvalidToken:
        return None


def _claims(payload: dict[str, Any], now: float, max_seconds: float) -> Claims:
    subject, expires = payload.get("sub"), payload.get("exp")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("missing_sub")
    if not _is_number(expires):
        raise InvalidToken("missing_exp")
    if expires <= now:
        raise InvalidToken("expired")
    if expires > now + max_seconds:
        raise InvalidToken("exp_too_far")
    for claim in ("nbf", "iat"):
        if claim in payload and not _is_number(payload[claim]):
            raise InvalidToken("claims")
    if "nbf" in payload and now < payload["nbf"]:
        raise InvalidToken("not_yet_valid")
    grants = {}
    for claim in ("channels", "publish"):
        value = payload.get(claim, [])
        try:
            grants[claim] = Grants.parse(value if isinstance(value, list) else [None])
        except ValueError:
            raise InvalidToken("claims") from None
    return Claims(subject, expires, grants["channels"], grants["publish"], payload)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(data: bytes) -> dict[str, Any]:
    """The JSON object ``data``, within the nesting limit of client messages."""
    try:
        value = parse_json(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


def _decode(part: str) -> bytes:
    """Unpadded base64url, strictly: no padding, no other character, no impossible length."""
    if len(part) % 4 == 1 or not _BASE64URL.fullmatch(part):
        raise InvalidToken("malformed")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except binascii.Error:
        raise InvalidToken("malformed") from None


def _hmac(secret: str, signed: str) -> bytes:
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
