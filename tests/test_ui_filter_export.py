"""The exported (static) site resolves filter names like the live UI: the same ambiguity
error, the same resolution line and the same working placeholder."""

from __future__ import annotations

import pytest

from flowillower.server.export import export_site
from tests.conftest import static_server
from tests.test_ui_filter import demo_shaped_runs, expect, names, type_filter


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("filter-export")
    root = base / ".flowillower"
    demo_shaped_runs(root)
    out = base / "site"
    export_site(root, out)
    with static_server(out) as url:
        yield url


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
