"""A run pulled with `--no-media` shows its images when opened: the run page fetches that
run's media from the remote it came from (real bare remote, real Chromium); a remote that
cannot be reached is said on the page, which keeps working."""

from __future__ import annotations

import numpy as np
import pytest

from flowillower.gitops.sync import pull, push
from flowillower.run import Run
from tests.conftest import require_browser, ui_server, wait_for
from tests.conftest_git import bare_remote

require_browser()


@pytest.fixture
def pulled(tmp_path):
    """Bob's store holding one run (an image at steps 0 and 5) pulled with --no-media."""
    alice = tmp_path / "alice" / ".flowillower"
    run = Run("media", "pictures", dir=alice, snapshot=False)
    rng = np.random.default_rng(0)
    for step in (0, 5):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step)
        run.log_image("samples", (rng.random((32, 32, 3)) * 255).astype(np.uint8), step)
    run.finish()
    remote = bare_remote(tmp_path / "remote.git")
    push(alice, f"file://{remote}")
    bob = tmp_path / "bob" / ".flowillower"
    assert pull(bob, f"file://{remote}", no_media=True)["media_left"] >= 2
    assert not (bob / "runs" / run.id / "media").exists()
    return bob, run.id, remote


def test_opening_a_run_fetches_its_media_and_shows_the_image(page, pulled):
    bob, run_id, _remote = pulled
    with ui_server(bob) as url:
        page.goto(f"{url}#/run/{run_id}")
        wait_for(lambda: page.locator(".media img").count() and page.locator(".media img")
                 .first.evaluate("i => i.complete && i.naturalWidth === 32"),
                 timeout=30, what="the fetched image")
        assert "fetched" in page.text_content(".media-fetch")
    assert len(list((bob / "runs" / run_id / "media").rglob("*.png"))) == 2


def test_an_unreachable_remote_is_said_on_the_run_page(page, pulled):
    bob, run_id, remote = pulled
    remote.rename(remote.with_name("gone.git"))
    with ui_server(bob) as url:
        page.goto(f"{url}#/run/{run_id}")
        wait_for(lambda: page.locator(".media-fetch.error").count(), timeout=30,
                 what="the message about the remote")
        assert "cannot be reached" in page.text_content(".media-fetch.error")
        assert page.locator("h1.run-name").text_content() == "pictures"  # the page works
