"""Health-check prober: ``GET /cache-healthcheck?`` on a new TCP connection every 20 ms.

Like a load balancer's probe. Runs until SIGINT (or 150 s), then writes the latency percentiles
(ms) and error counts as JSON. Usage: ``prober.py PORT OUT.json``
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path

INTERVAL = 0.02
MAX_SECONDS = 150.0
REQUEST = b"GET /cache-healthcheck? HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def probe(port: int) -> float:
    """Return one health check's latency in ms; raise ``RuntimeError`` on a non-200 answer."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(REQUEST)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"ok"):
                break
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(answer[:20].decode("latin1"))
    return (time.perf_counter() - started) * 1000


def main() -> None:
    """Probe until stopped and write the summary."""
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGINT, stop)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    end = time.monotonic() + MAX_SECONDS
    due = time.monotonic()
    while not stopped and time.monotonic() < end:
        try:
            latencies.append(probe(port))
        except (OSError, RuntimeError) as error:
            name = str(error) if isinstance(error, RuntimeError) else type(error).__name__
            errors[name] = errors.get(name, 0) + 1
        due += INTERVAL
        time.sleep(max(0.0, due - time.monotonic()))
    latencies.sort()

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

    summary = {"n": len(latencies), "p50": quantile(0.5), "p99": quantile(0.99)}
    out.write_text(json.dumps({**summary, "max": quantile(1.0), "errors": errors}))


if __name__ == "__main__":
    main()
