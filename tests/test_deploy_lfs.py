"""Git LFS on a deploy, for real: Debian's git-lfs, a local bare repository standing in for
the Hub (the Space's https address rewritten to it by `url.<bare>.insteadOf` in the test's
HOME gitconfig, so the real address parsing runs), and LFS's standalone transfer agent
for file:// remotes. The git objects hold pointers; a clone with git-lfs gets the bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main as cli
from flowillower.server.demo import make_demo_store
from flowillower.server.deploy import deploy
from flowillower.server.deploy_lfs import BEGIN, END, LfsMissingError, attributes, lfs_files
from flowillower.server.export import export_site
from tests.conftest import in_ci, static_server, wait_for
from tests.conftest_git import bare_remote, git, isolate_home

SPACE = "https://huggingface.co/spaces/alice/runs"
POINTER = b"version https://git-lfs.github.com/spec/v1\n"


def require_lfs() -> None:
    """Skip without git-lfs on a developer's machine; fail on CI, which installs it."""
    if shutil.which("git-lfs") is None:
        if in_ci():
            pytest.fail("CI must test the LFS path: install git-lfs", pytrace=False)
        pytest.skip("git-lfs is not installed (apt-get install git-lfs)")


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A HOME whose git sends huggingface.co to bare repositories under `hub/`."""
    require_lfs()
    root = tmp_path / "hub"
    (root / "spaces" / "alice").mkdir(parents=True)
    bare_remote(root / "spaces" / "alice" / "runs")
    isolate_home(monkeypatch, tmp_path, f'[url "file://{root}/"]\n'
                 "\tinsteadOf = https://huggingface.co/\n"
                 "[lfs]\n\tstandalonetransferagent = lfs-standalone-file\n")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _blob(repo: Path, spec: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "blob", spec],
                          capture_output=True, check=True).stdout


def test_space_images_travel_through_lfs_and_a_clone_gets_their_bytes(hub, tmp_path):
    store = tmp_path / "proj" / ".flowillower"
    ids = make_demo_store(store, runs=1, steps=40, names=["a"], model=False)
    gitconfig = (tmp_path / "home" / ".gitconfig").read_text()
    assert fw.push(SPACE, dir=store)["pushed"]
    # A later deploy on top: the images already there stay pointers to stored objects.
    ids += make_demo_store(store, runs=1, steps=40, names=["b"], model=False, seed=7)
    result = fw.push(SPACE, dir=store)
    assert result["pushed"] and result["kind"] == "hf" and result["runs"]["pushed"] == 1
    assert (tmp_path / "home" / ".gitconfig").read_text() == gitconfig  # user's config
    images = [p for p in result["lfs"] if p.endswith(".png")]
    assert len(images) >= 8 and all(p.startswith("data/runs/") for p in images)
    assert {p.split("/")[2] for p in images} == set(ids)
    bare = hub / "spaces" / "alice" / "runs"
    # In git: a pointer for each image, the real bytes in the remote's LFS store.
    for rel in images:
        pointer = _blob(bare, f"main:{rel}")
        assert pointer.startswith(POINTER) and len(pointer) < 200
        oid = pointer.split(b"oid sha256:")[1].split(b"\n")[0].decode()
        assert (bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).is_file()
    attrs = _blob(bare, "main:.gitattributes").decode()
    assert "*.png filter=lfs diff=lfs merge=lfs -text" in attrs
    assert not _blob(bare, "main:index.html").startswith(POINTER)  # text stays text
    # A teammate with git-lfs clones the Space and gets every image's bytes.
    git(tmp_path, "lfs", "install", "--skip-repo")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", SPACE, str(clone))
    local = tmp_path / "site"
    export_site(store, local, files=False)
    for rel in images:
        assert _sha(clone / rel) == _sha(local / rel), rel
    # ... and the runs themselves, from the same address.
    other = tmp_path / "teammate" / ".flowillower"
    pulled = fw.pull(SPACE, dir=other)
    assert pulled["runs_added"] == 2
    assert sorted(p.name for p in (other / "runs").iterdir()) == sorted(ids)


def test_the_cloned_space_serves_the_viewer_with_real_images(hub, tmp_path, page):
    from playwright.sync_api import expect

    store = tmp_path / "proj" / ".flowillower"
    ids = make_demo_store(store, runs=2, steps=30, names=["first", "second"], model=False)
    fw.push("hf:alice/runs", dir=store)
    git(tmp_path, "lfs", "install", "--skip-repo")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", SPACE, str(clone))
    with static_server(clone) as url:  # what the Hub's static server does with it
        page.goto(url)
        expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
        page.goto(f"{url}#/run/{ids[0]}")
        image = page.locator("#view img").first
        expect(image).to_be_visible()
        wait_for(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"),
                 timeout=30, what="an image of the Space to decode (bytes, not a pointer)")


def test_odd_names_large_text_and_raw_binaries_go_through_lfs(hub, tmp_path):
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False, media=False)
    site = tmp_path / "site"
    export_site(store, site, files=False)
    odd = site / "data" / 'a b#[x] "q".dat'
    odd.write_bytes(b"\x00\x01raw" * 100)  # a NUL byte: binary whatever the extension
    big = site / "data" / "big.json"
    big.write_text('{"x": "' + "y" * 10_500_000 + '"}')  # text, but over the Hub's 10 MB
    (site / "data" / "link.json").symlink_to("/etc/hostname")
    remote = bare_remote(tmp_path / "plain.git")
    result = deploy(site, str(remote), lfs=True)
    assert set(result["lfs"]) == {'data/a b#[x] "q".dat', "data/big.json"}
    assert result["skipped"] == ["data/link.json"]  # a link never leaves the machine
    for rel in result["lfs"]:
        assert _blob(remote, f"main:{rel}").startswith(POINTER), rel
    names = git(remote, "ls-tree", "-r", "--name-only", "main")
    assert "link.json" not in names and "README.md" in names
    git(tmp_path, "lfs", "install", "--skip-repo")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    assert _sha(clone / "data" / 'a b#[x] "q".dat') == _sha(odd)
    assert _sha(clone / "data" / "big.json") == _sha(big)


def test_without_git_lfs_one_line_error_and_nothing_pushed(hub, tmp_path, monkeypatch):
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("git"), bindir / "git")  # git, but no git-lfs beside it
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(LfsMissingError, match="install the git-lfs package"):
        fw.push(SPACE, dir=store)
    res = CliRunner().invoke(cli, ["deploy", "hf:alice/runs", "--dir", str(store)])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "git-lfs" in res.output
    bare = hub / "spaces" / "alice" / "runs"
    monkeypatch.undo()
    assert git(bare, "for-each-ref") == ""  # no branch, no run ref


def test_site_without_binaries_needs_no_lfs(hub, tmp_path, monkeypatch):
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False, media=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("git"), bindir / "git")
    monkeypatch.setenv("PATH", str(bindir))
    result = deploy(store, "hf:alice/runs")
    assert result["pushed"] and result["lfs"] == [] and result["runs"]["runs"] == 1


def test_attributes_keep_the_remotes_lines_and_rewrite_ours(tmp_path):
    hub_defaults = "*.7z filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    first = attributes(["img/a.png", "odd name.dat"], hub_defaults)
    assert first.startswith(hub_defaults) and first.count(BEGIN) == 1
    second = attributes(["img/b.JPG"], first)  # a later deploy: our block replaced
    assert second.count(BEGIN) == second.count(END) == 1
    assert "*.JPG filter=lfs" in second and "*.png" not in second and "odd" not in second
    assert second.startswith(hub_defaults)
    # The exact-path pattern matches that file and no other, per git itself.
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitattributes").write_text(attributes(["d/[x] *.dat", "top.dat"]))
    out = git(repo, "check-attr", "filter", "--", "d/[x] *.dat", "d/x y.dat", "sub/top.dat",
              "top.dat")
    assert out.splitlines() == ["d/[x] *.dat: filter: lfs", "d/x y.dat: filter: unspecified",
                                "sub/top.dat: filter: unspecified", "top.dat: filter: lfs"]


def test_lfs_files_choice(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(b"\x89PNG")
    (tmp_path / "a.PNG").write_bytes(b"\x89PNG")
    (tmp_path / "t.json").write_text("{}")
    (tmp_path / "n.txt").write_bytes(b"text\x00zero")
    (tmp_path / "README.md").write_text("hi")
    assert lfs_files(tmp_path) == ["a.PNG", "n.txt"]
