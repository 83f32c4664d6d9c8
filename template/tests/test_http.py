"""Plain HTTP: the health check, the page, static files, unknown paths."""

from __future__ import annotations

import socket

import pytest

from conftest import Server


def raw_request(server: Server, head: str) -> bytes:
    """Send ``head`` byte for byte (the literal ``?`` included) and return the whole response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "host", ["Host: 127.0.0.1\r\n", "Host: 10.9.8.7:3000\r\n", "Host: evil.example\r\n"]
)
def test_health_check_answers_200_ok_whatever_the_host(
    server: Server, method: str, host: str
) -> None:
    response = raw_request(
        server, f"{method} /cache-healthcheck? HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    assert lines[0] == "http/1.1 200 ok"
    assert "content-type: text/plain; charset=utf-8" in lines
    assert "cache-control: no-store" in lines
    assert not any(line.startswith(("location:", "set-cookie:")) for line in lines)
    assert body == (b"ok" if method == "GET" else b"")


def test_health_check_over_http_1_0_without_host(server: Server) -> None:
    response = raw_request(server, "GET /cache-healthcheck? HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nok")


def test_home_page_is_200_and_cacheable(server: Server) -> None:
    status, headers, body = server.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "public, max-age=60"
    assert "Set-Cookie" not in headers
    assert b"ws-client.js" in body


def test_head_on_home_page_matches_get(server: Server) -> None:
    status, headers, body = server.get("/", method="HEAD")
    assert (status, headers["Cache-Control"], body) == (200, "public, max-age=60", b"")


def test_browser_client_is_served_with_short_cache(server: Server) -> None:
    status, headers, body = server.get("/static/ws-client.js")
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=300"
    assert b"export" in body


@pytest.mark.parametrize("path", ["/nope", "/cache-healthcheck/", "/_bench/start", "/static/nope"])
def test_unknown_paths_are_404_and_not_cached(server: Server, path: str) -> None:
    status, headers, _ = server.get(path)
    assert status == 404
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/_ws/", "/_ws/liveblog"])
def test_plain_get_on_websocket_path_is_not_a_cacheable_200(server: Server, path: str) -> None:
    status, headers, _ = server.get(path)
    assert status == 426
    assert headers["Cache-Control"] == "no-store"


def test_app_listens_on_the_port_given_by_the_platform(server: Server) -> None:
    assert server.get("/cache-healthcheck?")[0] == 200
    assert any(f"listening on http://0.0.0.0:{server.port}" in line for line in server.log)
