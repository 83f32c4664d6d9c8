"""The WordPress half of a rendered project: its PHP contract and its end-to-end tests against a
real WordPress (PHP CLI, Debian's ``wordpress`` package, the local MariaDB), run with this
interpreter. In CI (``VIP_SKELETON_NO_SKIPS=1``) none of them may skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from conftest import render, start_app
from test_browser import CHROMIUM, CHROMIUM_ARGS
from vip_skeleton.check import free_port

#: The rendered plugin's publish token, and the origin its WordPress pages have.
TOKEN = "a-publish-token-for-the-page-test"  # noqa: S105 - a test token
SITE = "http://127.0.0.1:9"


def test_the_wordpress_plugin_passes_its_contract_and_end_to_end_tests(
    template_snapshot: Path, tmp_path: Path
) -> None:
    project = render(template_snapshot, tmp_path / "project")
    assert (project / "wordpress" / "mu-plugins" / "realtime.php").is_file()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"),
            *("tests/test_wordpress.py", "tests/test_publish_once.py", "tests/test_seen_keys.py"),
        ],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if os.environ.get("VIP_SKELETON_NO_SKIPS") == "1":
        assert "skipped" not in result.stdout, result.stdout


def test_without_the_wordpress_answer_there_is_no_plugin(
    template_snapshot: Path, tmp_path: Path
) -> None:
    project = render(template_snapshot, tmp_path / "project", wordpress=False)
    assert not (project / "wordpress").exists()
    assert not (project / "tests" / "test_wordpress.py").exists()
    assert "PyJWT" not in (project / "pyproject.toml").read_text()


def drive(project: Path, wordpress: str, port: int, *args: object) -> Any:
    """One command of the rendered plugin's tests/drive.php, with the app at ``port``."""
    result = subprocess.run(
        ["php", str(project / "wordpress" / "tests" / "drive.php"), wordpress, *map(str, args)],
        env={**os.environ, "REALTIME_URL": f"http://127.0.0.1:{port}", "PUBLISH_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"drive.php {args}:\n{result.stdout}\n{result.stderr}")


@pytest.mark.browser
def test_a_post_page_shows_comments_and_updates_in_place(
    template_snapshot: Path, tmp_path: Path
) -> None:
    """The page side in headless Chromium: the plugin's page of a post, served as WordPress would
    (its origin http://127.0.0.1:9, answered by Playwright), imports the app's client across
    origins, subscribes from its data-last-id, and shows a new comment and the post's update."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which("php") is None or shutil.which("mysql") is None:
        pytest.skip("php (php-cli php-mysql) or the mysql client is not installed")
    project = render(template_snapshot, tmp_path / "realtime-app")  # package realtime_app
    plugin = project / "wordpress"
    setup = subprocess.run(
        [
            "bash",
            str(plugin / "tests" / "setup-wordpress.sh"),
            str(tmp_path / "wp"),
            str(plugin / "mu-plugins"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    wordpress = setup.stdout.strip().splitlines()[-1]
    port = free_port()
    app = start_app(project, port, {"BENCH": "1", "PUBLISH_TOKEN": TOKEN, "ALLOWED_ORIGINS": SITE})
    try:
        post_id = drive(project, wordpress, port, "insert-post", "Kick-off")["id"]
        # The post's page as WordPress renders it: the content with its live regions, the script.
        parts = drive(project, wordpress, port, "page", post_id)
        html = f"<!doctype html><html><body>{parts['content']}{parts['scripts']}</body></html>"

        def serve(route: Any) -> None:
            url = urlsplit(route.request.url)
            path, query = url.path, dict(parse_qsl(url.query))
            if path == "/post":
                route.fulfill(body=html, content_type="text/html")
            elif "rest_route" in query:  # the REST API, with plain permalinks
                route_path = query.pop("rest_route")
                rest = drive(project, wordpress, port, "rest", route_path, json.dumps(query))
                route.fulfill(status=rest["status"], json=rest["body"])
            elif path.endswith(".js") and (Path(wordpress) / path.lstrip("/")).is_file():
                route.fulfill(
                    path=str(Path(wordpress) / path.lstrip("/")), content_type="text/javascript"
                )
            else:
                route.fulfill(status=404, body="")

        with sync_api.sync_playwright() as playwright:
            # The page's origin is answered by Playwright, not by a loopback address: Chromium's
            # local-network checks would then refuse the app on 127.0.0.1.
            local = "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights"
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, local]
            )
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.route(f"{SITE}/**", serve)
                console: list[str] = []
                page.on("console", lambda message: console.append(message.text))
                page.goto(f"{SITE}/post")
                try:
                    page.wait_for_function("document.documentElement.dataset.realtime === 'live'")
                except sync_api.Error as error:
                    raise AssertionError(f"the page never went live: {console}") from error
                (comment_id,) = drive(project, wordpress, port, "comments", post_id, 1)["ids"]
                comment = page.wait_for_selector(f"#comment-{comment_id}", timeout=10_000)
                assert comment is not None
                assert "Reader" in comment.inner_text()
                assert "Comment 1" in comment.inner_text()
                drive(project, wordpress, port, "update-post", post_id, "Half-time")
                notice = page.wait_for_selector(".realtime-post .realtime-notice", timeout=10_000)
                assert notice is not None
                assert "updated" in notice.inner_text()
                # The app goes away: the page polls the REST API (every 10 s) and goes on.
                app.terminate()
                app.wait(10)
                page.wait_for_function("document.documentElement.dataset.realtime === 'polling'")
                (polled,) = drive(project, wordpress, port, "comments", post_id, 1)["ids"]
                assert page.wait_for_selector(f"#comment-{polled}", timeout=30_000) is not None
                assert errors == []
            finally:
                browser.close()
    finally:
        app.terminate()
        app.wait(10)
        database = (tmp_path / "wp" / "db").read_text().strip()
        subprocess.run(
            ["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE {database}"], check=False
        )
