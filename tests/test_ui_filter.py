"""The runs table's filter box in a real browser on two runs shaped like the demo's (an arg
`training.learning_rate`, a metric `lr`): a bare name shared by an arg and a metric is an
error naming both spellings, a suffix of one dotted arg resolves and says so, and the
placeholder is a filter that works on these runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowillower.run import Run
from tests.conftest import require_browser, ui_server

playwright_api = require_browser()
expect = playwright_api.expect


def demo_shaped_runs(root: Path) -> None:
    """Two finished runs like the demo's: an arg `training.learning_rate`, a metric `lr`."""
    for lr in (0.001, 0.003):
        run = Run("demo", f"lr-{lr}", dir=root, snapshot=False)
        run.record_args({"training.learning_rate": lr, "model.layers": 3})
        for step in range(5):
            run.log_metrics({"lr": lr * 1e-4 / (step + 1), "loss": 1 / (step + 1)}, step)
        run.finish()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("filter-ui") / ".flowillower"
    demo_shaped_runs(root)
    with ui_server(root, sync_interval=0.2) as url:
        yield url


def names(pg, n: int) -> set[str]:
    expect(pg.locator("table.runs tr[data-id]")).to_have_count(n)
    return set(pg.eval_on_selector_all("table.runs tr[data-id] td:nth-child(2) a",
                                       "els => els.map(e => e.textContent)"))


def type_filter(pg, text: str) -> None:
    pg.fill("input.search", text)
    pg.press("input.search", "Enter")


def test_ambiguous_name_is_an_error_listing_both_spellings(page, server):
    page.goto(server)
    names(page, 2)
    type_filter(page, "lr < 0.002")
    expect(page.locator(".error")).to_contain_text("ambiguous name `lr`")
    expect(page.locator(".error")).to_contain_text(
        "write `metrics.lr` or `args.training.learning_rate`")
    expect(page.locator("table.runs tr[data-id]")).to_have_count(0)
    type_filter(page, "metrics.lr < 0.002")  # the explicit spelling works
    assert names(page, 2) == {"lr-0.001", "lr-0.003"}
    expect(page.locator(".error")).to_have_text("")
    assert not page.errors


def test_suffix_of_a_dotted_arg_resolves_and_says_so(page, server):
    page.goto(server)
    names(page, 2)
    type_filter(page, "learning_rate < 0.002")
    assert names(page, 1) == {"lr-0.001"}
    expect(page.locator(".filter-names")).to_contain_text(
        "`learning_rate` → `args.training.learning_rate` (arg)")
    type_filter(page, "learning_rat < 0.002")
    expect(page.locator(".error")).to_contain_text(
        "did you mean `args.training.learning_rate`")
    expect(page.locator(".filter-names")).to_have_text("")
    assert not page.errors


def test_placeholder_is_a_working_filter_on_these_runs(page, server):
    page.goto(server)
    names(page, 2)
    search = page.locator("input.search")
    expect(search).to_have_attribute("data-example", "learning_rate <= 0.001")
    example = search.get_attribute("data-example")
    assert example in search.get_attribute("placeholder")
    assert "lr < 0.01" not in search.get_attribute("placeholder")
    type_filter(page, example)
    assert names(page, 1) == {"lr-0.001"}
    expect(page.locator(".error")).to_have_text("")
