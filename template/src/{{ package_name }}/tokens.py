"""Signed, short-lived connection tokens: HMAC-SHA256 with a secret, standard library only.

A token is ``<subject>.<expires>.<signature>``: the subject (a user id, say) in unpadded base64url,
the expiry in seconds since the epoch, and the HMAC-SHA256 of the first two parts under the
secret, in unpadded base64url. Every character is allowed in ``Sec-WebSocket-Protocol``, where a
browser can send it (``new WebSocket(url, ["bearer", token])``), and in a cookie. Any backend
that knows the secret can issue one: the README shows it in PHP, for a WordPress site.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

#: Longest lifetime of a token accepted, in seconds, whatever its expiry says.
MAX_TOKEN_SECONDS = 24 * 3600


def issue_token(secret: str, subject: str, seconds: int, now: float | None = None) -> str:
    """A token for ``subject`` valid for ``seconds`` (at most ``MAX_TOKEN_SECONDS``)."""
    if not 0 < seconds <= MAX_TOKEN_SECONDS:
        raise ValueError(f"seconds must be 1-{MAX_TOKEN_SECONDS}")
    expires = int(time.time() if now is None else now) + seconds
    payload = f"{_encode(subject.encode())}.{expires}"
    return f"{payload}.{_signature(secret, payload)}"


def verify_token(secret: str, token: str, now: float | None = None) -> str | None:
    """The subject of ``token`` if it is signed with ``secret`` and not expired, else None."""
    subject, _, rest = token.partition(".")
    expires, _, signature = rest.partition(".")
    payload = f"{subject}.{expires}"
    if not hmac.compare_digest(signature.encode(), _signature(secret, payload).encode()):
        return None
    current = time.time() if now is None else now
    if not expires.isdigit() or not current < int(expires) <= current + MAX_TOKEN_SECONDS:
        return None
    try:
        return base64.urlsafe_b64decode(subject + "=" * (-len(subject) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _encode(digest)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
