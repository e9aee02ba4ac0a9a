"""The run diff: arg differences (added / removed / changed, as `flowillower diff`) and the
code diff against another run picked from a list, in the API, the UI and a static export
(which diffs args and code from its data files)."""

from __future__ import annotations

import subprocess
import warnings

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from flowillower.run import Run
from flowillower.server.app import create_app
from tests.conftest import ok, static_server, ui_server, wait_for

LOCAL = "http://127.0.0.1:8686"
BASE_TO_TUNED = [{"key": "dropout", "change": "removed", "a": 0.5},
                 {"key": "lr", "change": "changed", "a": 0.1, "b": 0.2},
                 {"key": "warmup", "change": "added", "b": 100}]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """base and tuned (code snapshots of a git project), then nosnap (no snapshot)."""
    project = tmp_path_factory.mktemp("diff") / "proj"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    root = project / ".flowillower"
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        runs = [("base", {"lr": 0.1, "bs": 32, "dropout": 0.5}, True),
                ("tuned", {"lr": 0.2, "bs": 32, "warmup": 100}, True),
                ("nosnap", {"lr": 0.3, "bs": 32}, False)]
        for name, args, snap in runs:
            (project / "train.py").write_text(f"lr = {args['lr']}\n")
            run = Run("p", name, dir=root, snapshot=snap)
            run.record_args(args)
            run.log_metrics({"loss": 1.0}, 0)
            run.finish()
            ids[name] = run.id
    return root, ids



def test_api_diff_returns_arg_changes_and_the_code_diff(store):
    root, ids = store
    with TestClient(create_app(root), base_url=LOCAL) as c:
        d = ok(c.get("/api/diff", params={"a": ids["base"], "b": ids["tuned"]}))
        assert (d["a"], d["b"]) == (ids["base"], ids["tuned"])
        assert d["args"] == BASE_TO_TUNED
        assert "-lr = 0.1" in d["diff"] and "+lr = 0.2" in d["diff"]
        assert d["code_error"] is None
        # No snapshot: the args still differ, and the answer says why there is no code.
        d = ok(c.get("/api/diff", params={"a": ids["tuned"], "b": ids["nosnap"]}))
        assert d["args"] == [{"key": "lr", "change": "changed", "a": 0.2, "b": 0.3},
                             {"key": "warmup", "change": "removed", "a": 100}]
        assert d["diff"] is None and "no code snapshot" in d["code_error"]
        assert ids["nosnap"] in d["code_error"]
        same = ok(c.get("/api/diff", params={"a": ids["base"], "b": ids["base"]}))
        assert same["args"] == [] and same["diff"] == ""
        assert c.get("/api/diff", params={"a": ids["base"], "b": "nope"}).status_code == 404


# -- in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store):
    from tests.conftest import require_browser

    require_browser()
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def _pick(page, label_part: str) -> None:
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() > 1, timeout=10, what="the run list")
    label = next(t for t in pick.locator("option").all_text_contents() if label_part in t)
    pick.select_option(label=label)


def _arg_rows(page) -> list[list[str]]:
    rows = page.locator("table.arg-diff tr")
    wait_for(lambda: rows.count() > 0, timeout=10, what="the arg differences")
    return [r.locator("td").all_text_contents() for r in rows.all()]


def test_run_page_diffs_against_a_run_picked_from_the_list(server, store, page):
    _, ids = store
    page.goto(f"{server}#/run/{ids['tuned']}")
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() == 3, timeout=10,
             what=f"the run list {pick.locator('option').all_text_contents()}")
    # Newest first, the page's own run left out, each showing name and id.
    assert pick.locator("option").all_text_contents()[1:] == [
        f"nosnap · {ids['nosnap']}", f"base · {ids['base']}"]
    page.fill("input[aria-label='find the other run']", "BAS")  # narrows the list
    assert pick.locator("option").all_text_contents()[1:] == [f"base · {ids['base']}"]
    _pick(page, "base")
    assert _arg_rows(page) == [["dropout", "removed", "0.5", "(unset)"],
                               ["lr", "changed", "0.1", "0.2"],
                               ["warmup", "added", "(unset)", "100"]]
    code = page.locator(".diff-out .code-diff .dl.add")  # test_ui_code.py checks the rest
    wait_for(lambda: code.count() and "lr = 0.2" in code.text_content(), timeout=10,
             what="the code diff")
    page.fill("input[aria-label='find the other run']", "")
    _pick(page, "nosnap")
    wait_for(lambda: page.locator(".code-error").count() > 0, timeout=10,
             what="the no-snapshot message")
    assert "no code snapshot" in page.locator(".code-error").text_content()
    assert ["lr", "changed", "0.3", "0.2"] in _arg_rows(page)  # from nosnap to tuned


def test_static_export_diffs_args_and_code(store, tmp_path, page):
    from flowillower.server.export import export_site

    _, ids = store
    site = tmp_path / "site"
    export_site(store[0], site)
    with static_server(site) as base:
        page.goto(f"{base}#/run/{ids['tuned']}")
        _pick(page, "base")
        assert ["lr", "changed", "0.1", "0.2"] in _arg_rows(page)
        code = page.locator(".diff-out .code-diff .dl.del")  # from the exported snapshots
        wait_for(lambda: code.count() and "lr = 0.1" in code.text_content(), timeout=10,
                 what="the code diff")
