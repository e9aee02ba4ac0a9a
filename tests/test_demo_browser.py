"""The demo's runs in the real UI (Debian's chromium via Playwright): both quickstart runs
in the table, their loss curves overlaid, each run's pictures and GIF, the model graph
with statistics on the watched layers. Screenshots land in $TMPDIR/flowillower-demo-*.png."""

from __future__ import annotations

import pytest

from tests.conftest import require_browser, ui_server

require_browser()  # /usr/bin/chromium, the binary launched, and playwright (CI: must be there)
pytest.importorskip("torch")
pytest.importorskip("omegaconf")

from tests.test_demo import SMALL, cli  # noqa: E402
from tests.test_ui_browser import (  # noqa: E402
    SHOTS,
    expect,
    wait_image,
    wait_rows,
)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from flowillower.store.catalog import Store

    work = tmp_path_factory.mktemp("demo-ui")
    store = work / ".flowillower"
    cli("demo", "quickstart", "--no-ui", "--epochs", "4", *SMALL, cwd=work, store=store)
    ids = {row["name"]: row["id"] for row in Store(store).runs()}
    with ui_server(store) as url:
        yield url, ids


def test_table_lists_both_runs(page, demo_server):
    url, ids = demo_server
    page.goto(url)
    assert sorted(wait_rows(page, 2)) == ["lr-0.001", "lr-0.003"]
    page.screenshot(path=str(SHOTS / "flowillower-demo-table.png"), full_page=True)


def test_run_page_shows_every_picture_and_the_gif(page, demo_server):
    url, ids = demo_server
    page.goto(f"{url}#/run/{ids['lr-0.003']}")
    page.wait_for_selector("h1.run-name")
    expect(page.locator(".media img")).to_have_count(4)  # comparison, flow_gif, trajectory, vector_field
    for i in range(4):
        wait_image(page, f".card:has(.media) >> nth={i} >> img")
    sizes = page.eval_on_selector_all(".media img", "els => els.map(e => [e.alt, e.naturalWidth])")
    widths = dict(sizes)
    assert widths["comparison"] == 480 and widths["flow_gif"] == 240
    assert widths["trajectory"] == widths["vector_field"] == 1200
    labels = page.locator(".media .muted").all_text_contents()
    assert all("after training" in text for text in labels)
    # 4 epochs: pictures after epochs 1, 2 and 3 (quickstart: every epochs/5, at least 1),
    # then the final ones.
    page.locator(".card:has(img[alt=comparison]) input[type=range]").fill("0")
    expect(page.locator(".card:has(img[alt=comparison]) .media .muted")).to_have_text(
        "step 0 · epoch 1 · 1/4")
    page.screenshot(path=str(SHOTS / "flowillower-demo-run.png"), full_page=True)


def test_loss_curves_of_both_runs_overlaid(page, demo_server):
    url, ids = demo_server
    runs = ",".join(ids.values())
    page.goto(f"{url}#/charts?runs={runs}&m=loss")
    expect(page.locator(".chart")).to_have_count(2)  # loss and epoch_loss
    page.wait_for_selector(".chart[data-drawn]:not([data-drawn='0']) canvas")
    for legend in page.locator(".chart table.legend").all():
        expect(legend).to_contain_text("lr-0.001")
        expect(legend).to_contain_text("lr-0.003")
    page.screenshot(path=str(SHOTS / "flowillower-demo-charts.png"), full_page=True)


def test_model_page_has_stats_on_watched_layers(page, demo_server):
    url, ids = demo_server
    page.goto(f"{url}#/model/{ids['lr-0.001']}")
    page.wait_for_selector("svg g.node")
    assert page.locator("svg g.node").count() >= 3
    page.locator("svg g.node", has_text="net.3").click()  # a watched SiLU
    page.wait_for_selector(".detail h3:has-text('net.3')")
    assert "SiLU" in page.text_content(".detail")
    page.wait_for_selector(".detail .chart[data-drawn]:not([data-drawn='0']) canvas")
    page.screenshot(path=str(SHOTS / "flowillower-demo-model.png"), full_page=True)
