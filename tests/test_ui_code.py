"""Code snapshots and code diffs in the UI: the snapshot browser (folder tree, filter,
highlighted file with line numbers, large files cut with a note), the code diff between
two runs (tree of changed files with counts, coloured lines), both live and in a static
export served over HTTP and opened from a file; the export writes each file once and
never a secret."""

from __future__ import annotations

import json
import re
import subprocess
import warnings

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from flowillower.run import Run
from flowillower.server.app import create_app
from tests.conftest import ok, static_server, ui_server, wait_for
from tests.conftest_git import fingerprint, git

LOCAL = "http://127.0.0.1:8686"
FILLERS = 130  # src/pkg/layers/layer_NNN.py: with the rest, a ~140-file snapshot
BIG = 1_200_000  # bytes of data/big.txt: over the 1 MB shown of a file


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """base and tuned: snapshots of one git project (tuned changes train.py, adds a file,
    removes one); nosnap: no snapshot. A `.env` is left out by the snapshot; `deploy.key`
    is let in by a `!` line in .flowillowerignore (the export must still leave it out)."""
    project = tmp_path_factory.mktemp("code") / "proj"
    project.mkdir()
    git(project, "init", "-q")
    files = {
        "train.py": "import os\n\n\ndef main(lr=0.1):\n    return lr * 2  # scale\n",
        "README.md": "# demo\n", "configs/base.yaml": "lr: 0.1\nlayers: 4\n",
        "configs/old.yaml": "gone: true\n", "scripts/run.sh": "#!/bin/sh\necho hi\n",
        "src/pkg/models/net.py": "WIDTH = 64\n\nclass Net:\n    pass\n",
        "src/pkg/data/loader.py": "def load():\n    return []\n",
        "data/big.txt": ("x" * 99 + "\n") * (BIG // 100),
        ".env": "TOKEN=hunter2-env-secret\n", "deploy.key": "KEYMATERIAL-let-in-by-ignore\n",
        ".flowillowerignore": "!deploy.key\n", ".gitignore": ".flowillower/\n",
    }
    files.update({f"src/pkg/layers/layer_{i:03d}.py": f"SIZE = {i}\n" for i in range(FILLERS)})
    for rel, text in files.items():
        _write(project, rel, text)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    root = project / ".flowillower"
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for name, snap in (("base", True), ("tuned", True), ("nosnap", False)):
            if name == "tuned":  # uncommitted changes: the snapshot takes the working tree
                _write(project, "train.py", files["train.py"].replace("lr=0.1", "lr=0.2"))
                _write(project, "src/pkg/models/head.py", "class Head:\n    pass\n")
                (project / "configs/old.yaml").unlink()
            run = Run("p", name, dir=root, snapshot=snap)
            run.record_args({"lr": 0.2 if name == "tuned" else 0.1})
            run.log_metrics({"loss": 1.0}, 0)
            run.finish()
            ids[name] = run.id
    return root, ids



def test_api_code_tree_file_search_and_no_snapshot(store):
    root, ids = store
    with TestClient(create_app(root), base_url=LOCAL) as c:
        d = ok(c.get(f"/api/runs/{ids['base']}/code"))
        paths = [e["path"] for e in d["tree"]]
        assert "src/pkg/models/net.py" in paths and ".env" not in paths
        net = next(e for e in d["tree"] if e["path"] == "src/pkg/models/net.py")
        assert net["size"] == len("WIDTH = 64\n\nclass Net:\n    pass\n")
        assert re.fullmatch(r"[0-9a-f]{40}", net["blob"]) and d["files"] == paths
        big = ok(c.get(f"/api/runs/{ids['base']}/code/file", params={"path": "data/big.txt"}))
        assert big["size"] == BIG // 100 * 100 and big["truncated"] is True
        assert len(big["text"]) == 1_000_000
        small = ok(c.get(f"/api/runs/{ids['base']}/code/file", params={"path": "train.py"}))
        assert small["truncated"] is False and small["text"].startswith("import os")
        hits = ok(c.get(f"/api/runs/{ids['base']}/code/search", params={"text": "class net"}))
        assert hits["paths"] == ["src/pkg/models/net.py"]
        r = c.get(f"/api/runs/{ids['nosnap']}/code")
        assert r.status_code == 404 and "no code snapshot" in r.json()["error"]


# -- in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store):
    from tests.conftest import require_browser

    require_browser()
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def _tree_names(page, selector: str) -> list[str]:
    return page.eval_on_selector(selector, """el => [...el.children].map(c =>
        c.tagName === 'DETAILS' ? c.querySelector('.dir-name').textContent
                                : c.querySelector('.fname').textContent)""")


def _check_browser(page, base: str, ids: dict, *, live: bool) -> None:
    """The snapshot browser of `tuned` and its diff against `base` on one page. `live`:
    the server (deploy.key shown as the snapshot holds it), else an
    export (which leaves deploy.key out)."""
    key = ["deploy.key"] if live else []
    page.goto(f"{base}#/run/{ids['tuned']}")
    tree = page.locator(".code-card .file-tree")
    wait_for(lambda: tree.count() == 1, timeout=20, what="the snapshot tree")
    # Folders first, then files, each sorted; nested folders inside their parent.
    assert _tree_names(page, ".code-card .file-tree") == [
        "configs/", "data/", "scripts/", "src/", ".flowillowerignore", ".gitignore",
        *key, "README.md", "train.py"]
    assert _tree_names(page, ".code-card details[data-path='src/pkg/'] > .kids") == [
        "data/", "layers/", "models/"]
    # A file opens highlighted, with numbered lines.
    page.click(".code-card .file[data-path='train.py']")
    gutter = page.locator(".code-card .snap-file .gutter")
    wait_for(lambda: gutter.count() == 1 and gutter.text_content() == "1\n2\n3\n4\n5",
             timeout=20, what="train.py's 5 numbered lines")
    lines = page.locator(".code-card .snap-file pre.src").text_content().split("\n")
    assert len(lines) == 5 and "lr=0.2" in lines[3]
    keywords = page.locator(".code-card .snap-file .hljs-keyword").all_text_contents()
    assert "import" in keywords and "def" in keywords
    # The filter narrows the tree to matching paths (their folders open).
    total = page.locator(".code-card .file").count()
    assert total == FILLERS + 10 + len(key)
    page.fill("input[aria-label='filter snapshot files']", "models n")
    visible = page.locator(".code-card .file:visible")
    wait_for(lambda: visible.count() == 1, timeout=10, what="the filtered tree")
    assert visible.get_attribute("data-path") == "src/pkg/models/net.py"
    assert page.locator(".snap-count").text_content() == f"1 of {total} files"
    # Contents too (the server's git grep, or the export's files read by the page).
    page.fill("input[aria-label='filter snapshot files']", "class head")
    page.check("input[aria-label='search file contents']")
    wait_for(lambda: visible.count() == 1 and visible.get_attribute("data-path")
             == "src/pkg/models/head.py", timeout=20, what="the content search")
    page.uncheck("input[aria-label='search file contents']")
    page.fill("input[aria-label='filter snapshot files']", "big")
    wait_for(lambda: visible.count() == 1, timeout=10, what="big.txt alone")
    visible.click()
    wait_for(lambda: page.locator(".code-card .note.truncated").count() == 1, timeout=20,
             what="the large-file note")
    assert "of 1.1 MB are shown" in page.locator(".code-card .note.truncated").text_content()
    assert page.locator(".code-card .gutter").text_content().endswith("\n9999\n10000")
    # The diff against base, picked from the list: changed files with counts.
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() == 3, timeout=10, what="the run list")
    label = next(t for t in pick.locator("option").all_text_contents() if t.startswith("base"))
    pick.select_option(label=label)
    changed = page.locator(".code-diff .file")
    wait_for(lambda: changed.count() == 3, timeout=20, what="three changed files")
    counts = {f.get_attribute("data-path"): f.locator(".dcount").text_content()
              for f in changed.all()}
    assert counts == {"configs/old.yaml": "D +0 −1", "src/pkg/models/head.py": "A +2 −0",
                      "train.py": "M +1 −1"}
    page.click(".code-diff .file[data-path='train.py']")
    added, removed = page.locator(".code-diff .dl.add"), page.locator(".code-diff .dl.del")
    wait_for(lambda: added.count() == 1 and "lr=0.2" in added.text_content(), timeout=10,
             what="the added line")
    assert removed.count() == 1 and "lr=0.1" in removed.text_content()
    assert page.locator(".code-diff .dl.add .hljs-keyword").all_text_contents() == ["def"]
    bg = [page.eval_on_selector(s, "el => getComputedStyle(el).backgroundColor")
          for s in (".code-diff .dl.add", ".code-diff .dl.del", ".code-diff .dl.ctx")]
    assert len(set(bg)) == 3, bg  # added, removed and context lines differ
    # Old and new line numbers: the changed line is line 4 on both sides.
    assert added.locator(".n").all_text_contents() == ["", "4"]
    assert removed.locator(".n").all_text_contents() == ["4", ""]


def test_snapshot_browser_and_code_diff_live(server, store, page):
    project = store[0].parent
    before = fingerprint(project)
    _check_browser(page, server, store[1], live=True)
    assert fingerprint(project) == before  # the user's repo: not a byte, ref or lock


def test_run_without_snapshot_says_so(server, store, page):
    _, ids = store
    page.goto(f"{server}#/run/{ids['nosnap']}")
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() == 3, timeout=20, what="the run list")
    assert page.locator(".code-card").count() == 0
    label = next(t for t in pick.locator("option").all_text_contents() if t.startswith("base"))
    pick.select_option(label=label)
    wait_for(lambda: page.locator(".code-error").count() == 1, timeout=10, what="the message")
    assert f"run {ids['nosnap']} has no code snapshot" in page.locator(".code-error").text_content()


def test_dark_theme_diff_colours_and_390px(server, store, page):
    _, ids = store
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server}#/run/{ids['tuned']}")
    page.click(".code-card .file[data-path='train.py']")
    gutter = page.locator(".code-card .gutter")
    wait_for(lambda: gutter.count() == 1 and gutter.text_content().endswith("\n5"), timeout=20,
             what="train.py")
    # Stacked: the tree above the file, nothing wider than the screen.
    tree = page.locator(".code-card .snap-tree").bounding_box()
    file = page.locator(".code-card .snap-file").bounding_box()
    assert tree["y"] + tree["height"] <= file["y"] + 1
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() == 3, timeout=10, what="the run list")
    pick.select_option(label=next(t for t in pick.locator("option").all_text_contents()
                                  if t.startswith("base")))
    page.click(".code-diff .file[data-path='train.py']")
    wait_for(lambda: page.locator(".code-diff .dl.add").count() == 1, timeout=10, what="diff")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for sel in (".code-diff .dl.add", ".code-diff .dl.del", ".code-card .code-lines"):
        rgb = page.eval_on_selector(sel, "el => getComputedStyle(el).backgroundColor")
        r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
        assert max(r, g, b) < 90, (sel, rgb)  # a dark background in the dark theme


@pytest.fixture(scope="module")
def site(store, tmp_path_factory):
    from flowillower.server.export import export_site

    out = tmp_path_factory.mktemp("site") / "site"
    result = export_site(store[0], out)
    return out, result


def test_export_writes_each_file_once_and_no_secret(site, store):
    out, result = site
    trees = sorted((out / "data/code/trees").glob("*.json"))
    assert len(trees) == 2 and result["code"]["snapshots"] == 2
    blobs = {e["blob"] for t in trees for e in json.loads(t.read_text())["tree"]}
    written = list((out / "data/code/blobs").glob("*/*.json"))
    assert len(written) == len(blobs) == result["code"]["blobs"]
    # base and tuned share all but two files: stored once each, not twice.
    assert len(blobs) < result["code"]["files"] - FILLERS
    left = [json.loads(t.read_text())["left_out"] for t in trees]
    assert left == [["deploy.key"], ["deploy.key"]]
    text = subprocess.run(["grep", "-rl", "-e", "hunter2-env-secret", "-e", "KEYMATERIAL",
                           str(out)], capture_output=True, text=True)
    assert text.stdout == "" and text.returncode == 1
    big = json.loads(next(p for p in written if '"size":1200000' in p.read_text()).read_text())
    assert big["truncated"] is True and len(big["text"]) == 1_000_000


def test_export_shows_code_and_diff_over_http(site, store, page):
    with static_server(site[0]) as base:
        _check_browser(page, base, store[1], live=False)


def test_export_shows_code_and_diff_from_a_file(site, store, page):
    _check_browser(page, (site[0] / "index.html").as_uri(), store[1], live=False)


def test_browser_line_diff_is_minimal_and_applies_with_git(server, page, tmp_path):
    """The static export's own diff (linediff.js): as few changed lines as git counts, and
    a patch `git apply` turns from the old text into the new one."""
    import random

    rng = random.Random(7)
    vocab = [f"line {c}" for c in "abcdef"] + ["", "    return x"]
    cases = []
    for _ in range(40):
        a = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        b = list(a)
        for _ in range(rng.randint(0, 12)):
            at = rng.randint(0, len(b))
            kind = rng.random()
            if kind < 0.4:
                b.insert(at, rng.choice(vocab))
            elif b and kind < 0.8:
                del b[min(at, len(b) - 1)]
            elif b:
                b[min(at, len(b) - 1)] = rng.choice(vocab)
        cases.append(("".join(x + "\n" for x in a), "".join(x + "\n" for x in b)))
    page.goto(server)
    got = page.evaluate("""async ([url, cases]) => {
        const m = await import(url);
        return cases.map(([a, b]) => {
          const split = (t) => (t ? t.slice(0, -1).split("\\n") : []);
          const ops = m.diffLines(split(a), split(b));
          return { add: ops.filter((o) => o[0] === "+").length,
                   del: ops.filter((o) => o[0] === "-").length,
                   patch: m.unifiedFile("f.txt", a, b) };
        });
    }""", [f"{server}static/js/linediff.js", cases])
    for (a, b), res in zip(cases, got, strict=True):
        (tmp_path / "a").write_text(a)
        (tmp_path / "b").write_text(b)
        numstat = subprocess.run(["git", "diff", "--no-index", "--numstat", "a", "b"],
                                 cwd=tmp_path, capture_output=True, text=True).stdout.split()
        assert (res["add"], res["del"]) == ((int(numstat[0]), int(numstat[1])) if numstat
                                            else (0, 0)), (a, b)
        if a == b:
            continue
        (tmp_path / "f.txt").write_text(a)
        (tmp_path / "p.diff").write_text(res["patch"] + "\n")
        applied = subprocess.run(["git", "apply", "p.diff"], cwd=tmp_path,
                                 capture_output=True, text=True)
        assert applied.returncode == 0, (applied.stderr, res["patch"])
        assert (tmp_path / "f.txt").read_text() == b


def test_chosen_file_and_diff_are_in_the_link(server, store, page, browser):
    _, ids = store
    page.goto(f"{server}#/run/{ids['tuned']}")
    page.fill("input[aria-label='filter snapshot files']", "models/net", timeout=20000)
    page.click(".code-card .file[data-path='src/pkg/models/net.py']")
    pick = page.locator("select[aria-label='diff against run']")
    wait_for(lambda: pick.locator("option").count() == 3, timeout=10, what="the run list")
    pick.select_option(value=ids["base"])
    page.click(".code-diff .file[data-path='train.py']", timeout=20000)
    wait_for(lambda: "dfile=train.py" in page.url, timeout=10, what="the diff file in the URL")
    link = page.url
    assert "file=src%2Fpkg%2Fmodels%2Fnet.py" in link and f"diff={ids['base']}" in link
    # A fresh browser context opening the link sees the same file and the same diff.
    other = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        pg = other.new_page()
        pg.goto(link)
        wait_for(lambda: pg.locator(".code-card .snap-path").count() == 1 and
                 pg.locator(".code-card .snap-path").text_content() == "src/pkg/models/net.py",
                 timeout=20, what="the linked file")
        assert "class" in pg.locator(".code-card .hljs-keyword").all_text_contents()
        wait_for(lambda: pg.locator(".code-diff .dl.add").count() == 1, timeout=20,
                 what="the linked diff")
        assert "lr=0.2" in pg.locator(".code-diff .dl.add").text_content()
        assert pg.locator(".code-diff .file.current").get_attribute("data-path") == "train.py"
    finally:
        other.close()


def test_diff_reader_takes_git_paths_with_spaces_unicode_and_renames(server, page, tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    _write(repo, "data dir/é ü 名前.txt", "one\ntwo\n")
    _write(repo, "old name.py", "".join(f"x = {i}\n" for i in range(20)))
    _write(repo, "gone.bin", "\0\1\2")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a")
    _write(repo, "data dir/é ü 名前.txt", "one\n2\nthree\n")
    git(repo, "mv", "old name.py", "new name.py")
    git(repo, "rm", "-q", "gone.bin")
    text = git(repo, "diff", "-M", "--cached", "HEAD") + git(repo, "diff", "-M")
    page.goto(server)
    files = page.evaluate("""async ([url, text]) => (await import(url)).parseDiff(text)
        .map((f) => [f.path, f.old, f.status, f.add, f.del, f.binary])""",
                          [f"{server}static/js/diffview.js", text])
    assert sorted(files) == [
        ["data dir/é ü 名前.txt", "data dir/é ü 名前.txt", "modified", 2, 1, False],
        ["gone.bin", "gone.bin", "removed", 0, 0, True],
        ["new name.py", "old name.py", "renamed", 0, 0, False]]


def test_export_publishes_only_snapshot_commits(store, tmp_path):
    """A run.json naming another commit of the store (a pushed run's folder, a teammate's
    hostile push) as its snapshot gets no code in the export."""
    import shutil

    from flowillower.server.export import export_site

    root, ids = store
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    bare = copy / "git"
    blob = subprocess.run(["git", "--git-dir", str(bare), "hash-object", "-w", "--stdin"],
                          input=b"PRIVATE-RUN-DATA\n", capture_output=True, check=True)
    tree = subprocess.run(["git", "--git-dir", str(bare), "mktree"], capture_output=True,
                          check=True, input=f"100644 blob {blob.stdout.decode().strip()}\t"
                                              "notes.txt\n".encode())
    commit = git(bare, "commit-tree", tree.stdout.decode().strip(), "-m", "a run").strip()
    meta_path = copy / "runs" / ids["nosnap"] / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["git"] = {**(meta.get("git") or {}), "snapshot": commit}
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "site"
    result = export_site(copy, out)
    assert result["code"]["snapshots"] == 2  # base's and tuned's, not the run commit
    run = json.loads((out / "data/runs" / ids["nosnap"] / "run.json").read_text())
    assert run["snapshot"] is None
    found = subprocess.run(["grep", "-rl", "PRIVATE-RUN-DATA", str(out)], capture_output=True)
    assert found.returncode == 1 and found.stdout == b""
