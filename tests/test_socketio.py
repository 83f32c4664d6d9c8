"""Socket.IO's official client (Node's ``socket.io-client``) against the rendered app.

The template is rendered with ``socketio_server`` yes and the app runs as a real process on a real
port; ``tests/socketio/client.mjs`` drives the client (installed with ``npm ci`` from the
committed lock file) and prints what it received, one JSON line per step.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import start_app
from rendering import render
from servers import free_port

NODE = shutil.which("node")
NPM = shutil.which("npm")
CLIENT_DIR = Path(__file__).parent / "socketio"

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="Node.js and npm are not installed: Socket.IO's official client runs on Node",
)


@pytest.fixture(scope="module")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``client.mjs`` beside the pinned ``socket.io-client``, installed from the registry."""
    directory = tmp_path_factory.mktemp("socketio-client")
    for name in ("package.json", "package-lock.json", "client.mjs"):
        shutil.copy2(CLIENT_DIR / name, directory / name)
    subprocess.run(
        [str(NPM), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        check=True,
        timeout=300,
    )
    return directory


@pytest.fixture(scope="module")
def project(template_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("socketio") / "realtime-app"  # package realtime_app
    return render(template_snapshot, dest, socketio_server=True)


class App:
    """The rendered app, run with this interpreter, restartable on its port."""

    def __init__(self, project: Path, **env: str) -> None:
        self.project = project
        self.port = free_port()
        self.env = env
        self.log: Path = project / f"app-{self.port}.log"
        self.process = self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            try:
                return start_app(
                    self.project, self.port, {"TICK_SECONDS": "0.1", **self.env}, stderr=log
                )
            except RuntimeError:
                raise RuntimeError(f"the app did not start: {self.log.read_text()}") from None

    def restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # the container dies without a word
        self.process.wait()
        self.process = self.start()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def make_app(project: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(**env: str) -> App:
        apps.append(App(project, **env))
        return apps[-1]

    yield make
    for app in apps:
        app.stop()


def drive(client_dir: Path, app: App, *args: str) -> subprocess.Popen[str]:
    """Start ``client.mjs`` on ``app`` with ``args``; its lines are read with :func:`lines`."""
    return subprocess.Popen(
        [str(NODE), "client.mjs", app.base, *args],
        cwd=client_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def line(client: subprocess.Popen[str]) -> dict[str, Any]:
    """The client's next report."""
    assert client.stdout is not None
    text = client.stdout.readline()
    if not text:
        assert client.stderr is not None
        pytest.fail(f"the client ended without a report: {client.stderr.read()}")
    report: dict[str, Any] = json.loads(text)
    return report


def run(client_dir: Path, app: App, *args: str) -> dict[str, Any]:
    """Run a scenario of ``client.mjs`` to its end and return its one report."""
    client = drive(client_dir, app, *args)
    report = line(client)
    assert client.wait(timeout=60) == 0
    return report


def assert_one_sequence(integers: list[dict[str, Any]]) -> None:
    """Consecutive ids and integers, in step (the integers ``{"id": N, "data": n}``)."""
    assert [m["id"] - integers[0]["id"] for m in integers] == list(range(len(integers)))
    assert [m["data"] - integers[0]["data"] for m in integers] == list(range(len(integers)))


def test_socketio_clients_receive_the_integers(client_dir: Path, make_app: Any) -> None:
    first, second = run(client_dir, make_app(), "integers")["received"]
    assert set(first[0]) == {"id", "data"}
    for received in (first, second):
        assert_one_sequence(received)
    # One sequence for both: the same id carries the same integer.
    assert first[0]["id"] - first[0]["data"] == second[0]["id"] - second[0]["data"]


def test_rooms_are_isolated(client_dir: Path, make_app: Any) -> None:
    report = run(client_dir, make_app(), "rooms")
    assert [answer["channel"] for answer in report["subscribed"]] == ["chat/a", "chat/b", "chat/a"]
    heard = report["heard"]
    assert [m["data"]["text"] for m in heard["ann"]] == ["to room a"]
    assert [m["data"]["text"] for m in heard["eve"]] == ["to room a"]
    assert [m["data"]["text"] for m in heard["bob"]] == ["to room b"]
    assert heard["ann"] == heard["eve"]
    assert set(heard["ann"][0]) == {"channel", "id", "data"}
    assert report["error"] == {
        "type": "error",
        "request": "subscribe",
        "reason": "forbidden",
        "channel": "elsewhere",
    }
    assert all(m["data"]["member"].startswith("anonymous-") for m in report["members"])


def test_a_dropped_client_recovers_what_it_missed(client_dir: Path, make_app: Any) -> None:
    client = drive(client_dir, make_app(), "recover", "drop")
    ready = line(client)
    recovered = line(client)
    assert client.wait(timeout=60) == 0
    integers = recovered["after"]
    assert [m["event"] for m in integers] == ["integers"] * len(integers)  # no gap
    assert integers[0]["id"] == ready["last_id"] + 1
    assert_one_sequence(integers)


def test_a_client_recovers_across_a_server_restart(client_dir: Path, make_app: Any) -> None:
    app = make_app()
    client = drive(client_dir, app, "recover", "restart")
    line(client)  # ready
    app.restart()
    recovered = line(client)
    assert client.wait(timeout=60) == 0
    after = recovered["after"]
    gaps = [i for i, m in enumerate(after) if m["event"] == "gap"]
    # The new process never saw the old one's broadcasts: it says so, then goes on.
    assert len(gaps) == 1
    before_gap, gap, since = after[: gaps[0]], after[gaps[0]], after[gaps[0] + 1 :]
    last_seen = before_gap[-1]["id"] if before_gap else recovered["last_id"]
    assert gap["last_id"] == last_seen
    assert len(since) >= 3
    assert_one_sequence(since)
    assert since[0]["id"] > last_seen  # ids keep growing across restarts


def test_long_polling_is_refused_with_400(client_dir: Path, make_app: Any) -> None:
    report = run(client_dir, make_app(), "polling")
    assert report["status"] == 400
    assert "transports: ['websocket']" in report["body"]
    assert report["reason"].startswith("connect_error")


def test_a_misbehaving_client_is_bounded(client_dir: Path, make_app: Any) -> None:
    app = make_app(MAX_SUBSCRIPTIONS="2")
    report = run(client_dir, app, "misbehaving")
    assert report["too_many"]["reason"] == "too many subscriptions (MAX_SUBSCRIPTIONS)"
    assert report["too_many"]["channel"] == "chat/3"
    assert report["large"] == "transport close"  # 1009: past MAX_MESSAGE_BYTES
    assert report["flood"] == "transport close"  # 4008: past its allowance
    assert "closing a Socket.IO client that sent too much (4008)" in app.log.read_text()
    before, after = report["bystander"]
    assert after == before + 1  # the client beside them missed nothing


def test_raw_websockets_on_ws_are_unaffected(make_app: Any) -> None:
    """Beside Socket.IO, /_ws/ serves raw JSON frames; the one sequence of ids is shared."""
    app = make_app()

    async def scenario() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{app.port}/_ws/") as ws,
        ):
            frames = [json.loads(await ws.receive_str(timeout=10)) for _ in range(3)]
            return [frame for frame in frames if frame.get("type") != "heartbeat"]

    integers = asyncio.run(scenario())
    assert_one_sequence(integers)
    # A raw WebSocket upgrade on /socket.io/ is Socket.IO's: without its query, 400.
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    conn.request("GET", "/socket.io/", headers=handshake)
    response = conn.getresponse()
    assert response.status == 400
    assert re.search(r"transports: \['websocket'\]", response.read().decode())
    # A malformed one (no key, no version) is refused before Socket.IO sees it, as on /_ws/.
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    malformed = {"Upgrade": "websocket", "Connection": "Upgrade"}
    conn.request("GET", "/socket.io/?EIO=4&transport=websocket", headers=malformed)
    response = conn.getresponse()
    assert response.status == 400
    assert "not a valid WebSocket handshake" in response.read().decode()
