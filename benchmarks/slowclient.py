"""A WebSocket client that completes the handshake and then stops reading.

Its receive buffer is 4 KiB, so the server soon holds everything sent to it. When its standard
input closes (or after SECONDS), it reads what is left (for up to 2 s) and prints JSON: the bytes it
received, whether the server ended the connection, and the close code it sent if that arrived (a
server that cuts off a slow client may reset the connection before its close frame gets through).
Usage: ``slowclient.py PORT SECONDS``
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import sys
import time

DRAIN_SECONDS = 2.0


def close_code(stream: bytes) -> int | None:
    """Return the status code of the first close frame in a server-to-client frame stream."""
    offset = 0
    while len(stream) - offset >= 2:
        opcode, length, head = stream[offset] & 0x0F, stream[offset + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(stream[offset + 2 : offset + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(stream[offset + 2 : offset + 10], "big"), 10
        if opcode == 8 and length >= 2:
            return int.from_bytes(stream[offset + head : offset + head + 2], "big")
        offset += head + length
    return None


def main() -> None:
    """Connect, stall, then drain and report."""
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_ws/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # the handshake answer only, byte by byte
    print(json.dumps({"status": head.split(b"\r\n")[0].decode()}), flush=True)
    select.select([sys.stdin], [], [], seconds)  # stall until stdin closes or time is up
    stream = b""
    sock.settimeout(DRAIN_SECONDS)
    end = time.monotonic() + DRAIN_SECONDS
    ended = False
    try:
        while time.monotonic() < end:
            chunk = sock.recv(1 << 20)
            if not chunk:
                ended = True
                break
            stream += chunk
    except TimeoutError:
        pass
    except ConnectionError:
        ended = True
    sock.close()
    report = {"received_bytes": len(stream), "closed_by_server": ended}
    print(json.dumps({**report, "close_code": close_code(stream)}), flush=True)


if __name__ == "__main__":
    main()
