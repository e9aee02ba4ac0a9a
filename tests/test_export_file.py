"""The exported site works opened from a file (a bundled classic script and data twins);
where it cannot, it says exactly how to serve it; a broken one says what failed. Never
"Loading..." forever (issue 19, item 6)."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowillower.server import export
from flowillower.server.demo import make_demo_store
from flowillower.server.export import export_site
from tests.conftest import require_browser, wait_for

playwright_api = require_browser()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp") / ".flowillower"
    make_demo_store(root, runs=2, steps=50, names=["first", "second"])
    out = root.parent / "site with spaces"
    export_site(root, out, points=20)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as res:
            return res.status == 200
    except OSError:
        return False


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve_copy(tmp_path) -> Iterator:
    """Serve a folder over HTTP from a thread; yields a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_opened_from_a_file_shows_runs_charts_images_and_models(site, page):
    ids = [row["id"] for row in json.loads((site / "data" / "index.json").read_text())["runs"]]
    page.goto((site / "index.html").as_uri())
    expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
    expect(page.locator("#boot-msg")).to_have_count(0)
    page.locator("table.runs tr[data-id] input[type=checkbox]").first.check()
    page.goto((site / "index.html").as_uri() + "#/charts")
    expect(page.locator("#view canvas").first).to_be_visible()  # a chart was drawn
    page.goto((site / "index.html").as_uri() + f"#/run/{ids[-1]}")
    expect(page.locator("#view")).to_contain_text("train/loss")
    image = page.locator("#view img").first
    expect(image).to_be_visible()
    wait_for(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"),
             what="the run's image to load from the file")
    with_model = [i for i in ids if (site / "data" / "runs" / i / "model").is_dir()]
    page.goto((site / "index.html").as_uri() + f"#/model/{with_model[0]}")
    expect(page.locator("#view")).to_contain_text("ResMLP")


def test_export_without_a_bundle_shows_the_command_that_serves_it(
        tmp_path, page, monkeypatch):
    def refuse(js_dir: Path) -> str:
        raise export.BundleError("app.js:1: cannot bundle 'export default'")

    monkeypatch.setattr(export, "bundle_modules", refuse)
    root = tmp_path / ".flowillower"
    make_demo_store(root, runs=2, steps=20, names=["first", "second"])
    site = tmp_path / "my site"  # a space: the command shown must survive being pasted
    result = export.export_site(root, site, points=10)
    assert result["file"] == "app.js:1: cannot bundle 'export default'"
    assert not (site / export.BUNDLE).exists()

    page.goto((site / "index.html").as_uri())
    box = page.locator("#boot-msg")
    expect(box).to_be_visible()
    assert "served over HTTP" in box.inner_text()
    assert "Loading" not in page.locator("#view").inner_text()
    command = page.locator("#boot-msg code").inner_text()
    assert command == f'python -m http.server --bind 127.0.0.1 -d "{site}" 8000'
    assert page.locator("#boot-msg a").get_attribute("href") == "http://127.0.0.1:8000/"

    # The command, pasted into a shell (a free port instead of 8000), serves the runs.
    port = _free_port()
    argv = shlex.split(command)
    argv[0], argv[-1] = sys.executable, str(port)
    proc = subprocess.Popen(argv, cwd="/", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(base), timeout=15, what="http.server to answer")
        page.goto(base)
        expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
        expect(page.locator("#boot-msg")).to_have_count(0)
    finally:
        proc.terminate()
        proc.wait(10)


def test_bundler_refuses_what_it_cannot_rewrite(tmp_path):
    (tmp_path / "app.js").write_text('import { a } from "./b.js";\nexport default a;\n')
    (tmp_path / "b.js").write_text("export const a = 1;\n")
    with pytest.raises(export.BundleError, match="app.js:2"):
        export.bundle_modules(tmp_path)
    (tmp_path / "app.js").write_text('import { a } from "./b.js";\nexport const c = a;\n')
    (tmp_path / "b.js").write_text('import { c } from "./app.js";\nexport const a = 1;\n')
    with pytest.raises(export.BundleError, match="cycle"):
        export.bundle_modules(tmp_path)


def test_data_twins_hold_the_same_json_and_files_false_writes_none(site, tmp_path):
    jsons = sorted(p for p in (site / "data").rglob("*.json"))
    assert any(p.name == "graph.json" for p in jsons) and len(jsons) >= 5
    for path in jsons:
        twin = (path.parent / (path.name + ".js")).read_text()
        key = path.relative_to(site).as_posix()
        head, payload = twin.split(", ", 1)
        assert head == f"window.__fwData({json.dumps(key)}" and payload.endswith(");\n")
        assert json.loads(payload.removesuffix(");\n")) == json.loads(path.read_text())
    root = site.parent / ".flowillower"
    plain = export_site(root, tmp_path / "plain", points=20, files=False)
    assert plain["file"] == "not asked for (files=False)"
    assert not list((tmp_path / "plain").rglob("*.json.js"))
    assert not (tmp_path / "plain" / export.BUNDLE).exists()


def test_a_hostile_graph_json_cannot_run_code_from_its_twin(tmp_path):
    root = tmp_path / ".flowillower"
    make_demo_store(root, runs=2, steps=20, names=["a", "b"])
    graphs = list(root.rglob("model/graph.json"))
    assert graphs
    graphs[0].write_text('{"nodes": []}); window.__pwned = 1; ({"x": 1}')
    site = tmp_path / "site"
    export_site(root, site, points=10)
    copied = list(site.rglob("model/graph.json"))
    assert copied and not list(site.rglob("model/graph.json.js"))  # not JSON: no twin
    graphs[0].write_text('{"name": "\\u2028</script>"}  // trailing code')  # still not JSON
    export_site(root, site, points=10)
    assert not list(site.rglob("model/graph.json.js"))
    # Well-formed JSON is re-encoded (ASCII escapes), never pasted: the twin is data only.
    graphs[0].write_text('{"name": "\\u2028</script>"}')
    export_site(root, site, points=10)
    (twin,) = site.rglob("model/graph.json.js")
    head, payload = twin.read_text().split(", ", 1)
    assert payload == '{"name":"\\u2028</script>"});\n'


def test_bundle_fetches_nothing_from_the_network(site):
    text = (site / export.BUNDLE).read_text()
    assert set(re.findall(r"https?://[^\s\"'`)]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert "import(" not in text and "\nexport " not in text


def test_a_broken_export_says_what_failed(site, page, serve_copy, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(site), str(broken)], check=True)
    (broken / "static" / "js" / "dom.js").unlink()  # a half-uploaded site
    page.goto(serve_copy(broken))
    box = page.locator("#boot-msg")
    expect(box).to_be_visible()
    text = box.inner_text()
    assert "failed to start" in text and "could not load static/js/dom.js" in text
    assert "Loading" not in page.locator("#view").inner_text()


def test_served_export_starts_without_a_message(site, page, serve_copy):
    page.goto(serve_copy(site))
    expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
    assert page.locator("html").get_attribute("data-fw-started") == ""
    expect(page.locator("#boot-msg")).to_have_count(0)


def test_serve_command_pasted_into_a_shell_serves_the_site(tmp_path):
    root = tmp_path / ".flowillower"
    make_demo_store(root, runs=1, steps=20, names=["only"])
    out = tmp_path / "it's my site"  # a quote and a space: pasted as printed, still one path
    result = export_site(root, out, points=10)
    command = result["serve"]
    assert command.startswith("python -m http.server --bind 127.0.0.1 -d ")
    assert command.endswith(" 8000") and result["url"] == "http://127.0.0.1:8000/"
    port = _free_port()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    proc = subprocess.Popen(["bash", "-c", "exec " + command[:-len("8000")] + str(port)],
                            cwd="/", env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(base + "data/index.json"), timeout=15,
                 what="the printed command to serve the export")
        with urllib.request.urlopen(base + "index.html", timeout=5) as res:
            assert b'content="static"' in res.read()
    finally:
        proc.terminate()
        proc.wait(10)
