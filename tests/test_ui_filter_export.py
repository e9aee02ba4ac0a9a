"""The exported (static) site resolves filter names like the live UI: the same ambiguity
error, the same resolution line and the same working placeholder."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from flowillower.run import Run
from flowillower.server.export import export_site
from tests.conftest import wait_for
from tests.test_ui_filter import expect, names, type_filter


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("filter-export")
    root = base / ".flowillower"
    for lr in (0.001, 0.003):
        run = Run("demo", f"lr-{lr}", dir=root, snapshot=False)
        run.record_args({"training.learning_rate": lr, "model.layers": 3})
        for step in range(5):
            run.log_metrics({"lr": lr * 1e-4 / (step + 1), "loss": 1 / (step + 1)}, step)
        run.finish()
    out = base / "site"
    export_site(root, out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               "-d", str(out), str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(up, timeout=20, what="the static server")
    yield f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(10)


def test_static_export_resolves_filter_names(page, site):
    page.goto(site)
    names(page, 2)
    search = page.locator("input.search")
    expect(search).to_have_attribute("data-example", "learning_rate <= 0.001")
    type_filter(page, "lr < 0.002")
    expect(page.locator(".error")).to_contain_text("ambiguous name `lr`")
    type_filter(page, "learning_rate < 0.002")
    assert names(page, 1) == {"lr-0.001"}
    expect(page.locator(".filter-names")).to_contain_text(
        "`learning_rate` → `args.training.learning_rate` (arg)")
    assert not page.errors
