"""The browser client's JavaScript unit tests pass in a freshly rendered project.

The template keeps ``tests/js/ws-client.test.mjs`` (Node's built-in test runner, fake timers, a
seeded random source) beside the generated Python tests; here the template is rendered with its
default answers and that suite is run with ``node --test`` inside the rendered project.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rendering import render

NODE = shutil.which("node")
MIN_NODE_MAJOR = 20


def _node_major() -> int | None:
    if NODE is None:
        return None
    out = subprocess.run(
        [NODE, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, template_snapshot: Path) -> Path:
    """The template rendered with its default answers (package ``realtime_app``)."""
    # The package is named after the folder.
    return render(template_snapshot, tmp_path_factory.mktemp("js-client") / "realtime-app")


def test_rendered_test_imports_the_rendered_module(rendered: Path) -> None:
    test_file = rendered / "tests" / "js" / "ws-client.test.mjs"
    assert test_file.is_file()
    text = test_file.read_text()
    assert "{{" not in text, "template syntax left in the rendered test"
    assert "{%" not in text, "template syntax left in the rendered test"
    assert '"../../src/realtime_app/static/ws-client.js"' in text
    assert (rendered / "src" / "realtime_app" / "static" / "ws-client.js").is_file()


def test_index_page_uses_the_client(rendered: Path) -> None:
    page = (rendered / "src" / "realtime_app" / "static" / "index.html").read_text()
    assert 'import { ReconnectingWebSocket } from "./static/ws-client.js";' in page
    assert "/_ws/integers" in page
    for element_id in ("state", "latest", "reconnects", "log"):
        assert f'id="{element_id}"' in page, f"#{element_id} is missing"
    assert "<script src=" not in page, "the page must not load third-party scripts"


def test_node_unit_tests_pass(rendered: Path) -> None:
    if NODE is None:
        pytest.skip("node is not installed: the JavaScript unit tests need Node.js 20 or newer")
    major = _node_major()
    if major is None or major < MIN_NODE_MAJOR:
        pytest.skip(f"node {major} is too old: the JavaScript unit tests need Node.js 20 or newer")
    js_dir = rendered / "tests" / "js"
    files = sorted(p.relative_to(rendered).as_posix() for p in js_dir.glob("*.test.mjs"))
    assert files, "no tests/js/*.test.mjs in the rendered project"
    # Files are named one by one: `node --test tests/js/` finds them on Node 20, but Node 21+
    # treats arguments as glob patterns and would try to import the directory itself.
    result = subprocess.run(
        [NODE, "--test", "--test-reporter=tap", *files],
        cwd=rendered,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", result.stdout, re.M)}
    assert result.returncode == 0, output[-6000:]
    assert counts.get("tests", 0) > 0, f"no tests ran:\n{output[-6000:]}"
    assert counts.get("fail") == 0, output[-6000:]
    assert counts.get("pass") == counts["tests"], output[-6000:]
