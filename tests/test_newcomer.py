"""The newcomer's walk: a chat with sender stamping, a greeting on connect, a webhook route and a
setting of their own, all in ``service.py`` through its seams, survive a template release that
changes the template's own files, with no conflict, and still work.

Hermetic, as ``test_update_matrix.py``: this checkout's template is imported into a temporary
template repository as a release, the project is generated from it and made the newcomer's, then
a next release edits ``app.py``, ``hub.py`` and ``settings.py`` and the project is updated to it.
The newcomer's own test runs against the updated app, a real process on a real port with real
WebSocket clients, with this interpreter (the ``test`` extra holds the app's dependencies).
"""

from __future__ import annotations

from pathlib import Path

import copier
import pytest

from cli_support import assert_no_conflict, commit_all, run_project_tests
from conftest import REPO_ROOT
from rendering import git
from vip_skeleton.source import import_snapshot

PACKAGE = "my_app"
RELEASE = "998.0.0"
NEXT_RELEASE = "999.0.0"
#: What the next release changes in files that are the template's, and so the project's after
#: the update: a line at the end of each.
TEMPLATE_EDITS = {
    "template/src/{{ package_name }}/app.py": "\n# The next release's app.py.\n",
    "template/src/{{ package_name }}/hub.py": "\n# The next release's hub.py.\n",
    "template/src/{{ package_name }}/settings.py.jinja": "\n# The next release's settings.py.\n",
}

#: The newcomer's service: every seam they need first, and nothing of the demo.
SERVICE = '''"""A chat whose messages say who sent them, a greeting for each connection, a
webhook that posts to the subscribers of ``hooks/<name>``, and a setting of our own:
MAX_CHAT_LENGTH."""

from __future__ import annotations

from aiohttp import web

from .hooks import PUBLISHER_KEY, Connection, Hooks, Refusal
from .settings import Settings, read_int

ROOM_PREFIX = "room/"
HOOKS_PREFIX = "hooks/"


class Service(Hooks):
    """The chat's answers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_chat_length = read_int(settings.environ, "MAX_CHAT_LENGTH", 200, 1, 10_000)

    async def on_connect(self, connection: Connection) -> None:
        connection.send({"greeting": f"welcome, {connection.member}"})

    async def authorize_subscribe(self, connection: Connection, channel: str) -> bool:
        return channel.startswith((ROOM_PREFIX, HOOKS_PREFIX))

    async def prepare_publish(self, connection: Connection, channel: str, data: object) -> object:
        if not channel.startswith(ROOM_PREFIX):
            raise Refusal("only rooms take messages")
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not 0 < len(text) <= self.max_chat_length:
            raise Refusal(f'a message is {{"text": ...}} of 1-{self.max_chat_length} characters')
        return {"text": text, "sender": connection.member}

    def setup(self, app: web.Application) -> None:
        app.router.add_post("/hooks/{name}", self.webhook)

    async def webhook(self, request: web.Request) -> web.Response:
        channel = HOOKS_PREFIX + request.match_info["name"]
        message_id = await request.app[PUBLISHER_KEY].broadcast(await request.json(), channel)
        return web.json_response({"id": message_id})
'''

#: The newcomer's test of it.
USER_TEST = f'''"""Our chat: greeted on connect, messages stamped with their sender, webhooks
delivered, and MAX_CHAT_LENGTH honoured (and refused at start when bad)."""

import asyncio
import os
import subprocess
import sys

import aiohttp

from conftest import NO_DOTENV, start_server
from peers import Peer, of_type, on


def greeting(frame: dict[str, object]) -> bool:
    return frame.get("type") == "message"


def test_greeted_stamped_and_webhooks_delivered() -> None:
    server = start_server(MAX_CHAT_LENGTH="10")

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{{server.ws_base}}/_ws/a") as ws_a,
            session.ws_connect(f"{{server.ws_base}}/_ws/b") as ws_b,
        ):
            a, b = Peer(ws_a), Peer(ws_b)
            welcome = (await a.next(greeting))["data"]["greeting"]
            assert welcome.startswith("welcome, anonymous-")
            member_a = welcome.removeprefix("welcome, ")
            await b.next(greeting)
            for peer in (a, b):
                await peer.send(type="subscribe", channel="room/lobby")
                await peer.next(of_type("subscribed", "room/lobby"))
            await b.send(type="subscribe", channel="hooks/deploys")
            await b.next(of_type("subscribed", "hooks/deploys"))

            await a.send(type="publish", channel="room/lobby", data={{"text": "hi", "sender": "x"}})
            heard = await b.next(on("room/lobby"))
            assert heard["data"] == {{"text": "hi", "sender": member_a}}  # stamped, not taken

            await a.send(type="publish", channel="room/lobby", data={{"text": "much too long"}})
            refused = await a.next(of_type("error", "room/lobby"))
            assert refused["reason"] == 'a message is {{"text": ...}} of 1-10 characters'

            posted = await session.post(f"{{server.base}}/hooks/deploys", json={{"done": True}})
            assert posted.status == 200
            delivered = await b.next(on("hooks/deploys"))
            assert delivered["data"] == {{"done": True}}
            assert delivered["id"] == (await posted.json())["id"]

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_bad_max_chat_length_stops_start_up_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "{PACKAGE}"],
        env={{**os.environ, "MAX_CHAT_LENGTH": "0"}},
        cwd=NO_DOTENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "error: MAX_CHAT_LENGTH=0 is out of range (1-10000)\\n"
'''


@pytest.mark.slow
def test_a_newcomers_service_survives_a_template_release_with_no_conflict(tmp_path: Path) -> None:
    upstream = tmp_path / "template"
    import_snapshot(REPO_ROOT, RELEASE, upstream)
    project = tmp_path / "my-app"
    copier.run_copy(str(upstream), project, vcs_ref=RELEASE, defaults=True, quiet=True)
    service = project / "src" / PACKAGE / "service.py"
    service.write_text(SERVICE)
    (project / "tests" / "test_newcomer.py").write_text(USER_TEST)
    commit_all(project, "Our chat")

    for path, line in TEMPLATE_EDITS.items():
        with (upstream / path).open("a") as template_file:
            template_file.write(line)
    git(upstream, "commit", "-q", "-am", "The next release")
    git(upstream, "tag", NEXT_RELEASE)
    copier.run_update(project, defaults=True, overwrite=True, conflict="rej", quiet=True)

    assert_no_conflict(project)
    assert f"_commit: {NEXT_RELEASE}\n" in (project / ".copier-answers.yml").read_text()
    assert service.read_text() == SERVICE
    for name in ("app.py", "hub.py", "settings.py"):
        updated = (project / "src" / PACKAGE / name).read_text()
        assert updated.endswith(f"# The next release's {name}.\n")
    assert "2 passed" in run_project_tests(project, "tests/test_newcomer.py")
