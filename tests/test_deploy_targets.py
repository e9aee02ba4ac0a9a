"""Deploy targets: Spaces and ModelScope studios by name or address, their READMEs, and
authentication by a token that is used and never written anywhere.

The hosts are stood in for by a git smart-HTTP server on loopback (`git http-backend`
behind HTTP Basic auth) or a bare repository; the test's HOME gitconfig rewrites the
real https address to it (`url.<local>.insteadOf`), so the real address parsing and
credential path run, and no test touches the network.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main as cli
from flowillower.errors import GitError
from flowillower.gitops.fastimport import WHOLE_ABOVE
from flowillower.server.demo import make_demo_store
from flowillower.server.deploy import deploy
from flowillower.server.deploy_targets import is_hosted, parse_target, readme
from flowillower.server.share import push as share_push
from tests.conftest_git import bare_remote, git, isolate_home
from tests.test_deploy_lfs import require_lfs
from tests.test_sync_whole_blobs import _pack_kinds

TOKEN = "hf_Sup3rSecretTok3n_do_not_leak_8f2c"


class _GitOverHttp(BaseHTTPRequestHandler):
    """`git http-backend` behind HTTP Basic auth, as a hosted git server is."""

    def _serve(self) -> None:
        srv = self.server
        auth = self.headers.get("Authorization", "")
        srv.seen.append(auth)
        srv.requests.append((self.path, auth == srv.expected))
        if auth != srv.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="hub"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        env = {"GIT_PROJECT_ROOT": str(srv.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "someone",
               "REMOTE_ADDR": "127.0.0.1", "PATH": os.environ["PATH"],
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def http_hub(tmp_path):
    """(server, root): bare repositories under `root`, served on loopback behind auth."""
    root = tmp_path / "hub"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitOverHttp)
    server.root, server.seen, server.requests, server.expected = root, [], [], None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, root
    server.shutdown()
    server.server_close()


def _home_for(monkeypatch, tmp_path, base: str, host: str, extra: str = "") -> Path:
    # A big postBuffer keeps git's requests unchunked for the small test server.
    return isolate_home(monkeypatch, tmp_path, f'[url "{base}"]\n\tinsteadOf = {host}\n'
                        "[http]\n\tpostBuffer = 200000000\n" + extra)


def _bare(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return bare_remote(path)


def _everything_under(path: Path) -> bytes:
    data = b""
    for item in sorted(path.rglob("*")):
        if item.is_file() and not item.is_symlink():
            data += item.read_bytes()
    return data


def _all_objects(bare: Path) -> bytes:
    return subprocess.run(["git", "-C", str(bare), "cat-file", "--batch-all-objects",
                           "--batch"], capture_output=True, check=True).stdout


def test_targets_by_name_and_address():
    space = parse_target("hf:alice/my-runs")
    assert (space.url, space.kind, space.hosted) == (
        "https://huggingface.co/spaces/alice/my-runs", "hf", True)
    assert parse_target("https://huggingface.co/spaces/alice/my-runs").url == space.url
    assert parse_target("https://huggingface.co/spaces/alice/my-runs.git/").kind == "hf"
    studio = parse_target("ms:bob/board")
    assert studio.url == "https://www.modelscope.cn/studios/bob/board.git"
    assert studio.page == "https://www.modelscope.cn/studios/bob/board"
    assert parse_target("https://modelscope.cn/studios/bob/board").url == studio.url
    for plain in ("git@github.com:a/b.git", "/srv/runs.git", "https://huggingface.co/a/b"):
        assert parse_target(plain).kind == "git" and not is_hosted(plain)
    assert is_hosted("hf:alice/x") and is_hosted("ms:bob/y") and is_hosted("hf:broken")
    for bad in ("hf:nope", "ms:a/b/c", "hf:../x"):
        with pytest.raises(GitError, match="hf:USER/SPACE"):
            parse_target(bad)
    with pytest.raises(GitError, match="leave the token out") as err:
        parse_target(f"https://user:{TOKEN}@huggingface.co/spaces/alice/x")
    assert TOKEN not in str(err.value)


def test_the_token_goes_to_the_remotes_host_only(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path, "")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    args, env = parse_target("hf:alice/x").auth("huggingface.co")

    def fill(host: str) -> str:
        proc = subprocess.run(["git", *args, "credential", "fill"],
                              input=f"protocol=https\nhost={host}\n\n", text=True,
                              capture_output=True, env={**os.environ, **env,
                                                        "GIT_TERMINAL_PROMPT": "0"})
        return proc.stdout

    assert f"username=user\npassword={TOKEN}" in fill("huggingface.co")
    for elsewhere in ("evil.example", "huggingface.co.evil.example", "cdn-lfs.hf.co"):
        assert TOKEN not in fill(elsewhere)
    monkeypatch.delenv("HF_TOKEN")
    assert parse_target("hf:alice/x").auth("huggingface.co") == ([], {})


def test_readmes_per_host():
    hf = readme("runs", "hf")
    assert hf.startswith("---\n") and "sdk: static\n" in hf and "app_file: index.html" in hf
    ms = readme("runs", "ms")
    front = ms.split("---\n")[1]
    assert "deployspec:\n  entry_file: index.html\n" in front and "sdk:" not in front
    assert not readme("runs", "git").startswith("---")
    # A title cannot break out of the front matter.
    assert "sdk: docker" not in readme("x\nsdk: docker", "hf").split("---\n")[1]


@pytest.mark.parametrize("kind,host,var,user", [
    ("hf", "https://huggingface.co/", "HF_TOKEN", "user"),
    ("ms", "https://www.modelscope.cn/", "MODELSCOPE_API_TOKEN", "oauth2")])
def test_token_authenticates_and_is_never_written(http_hub, tmp_path, monkeypatch,
                                                  kind, host, var, user):
    server, root = http_hub
    where = "spaces" if kind == "hf" else "studios"
    bare = _bare(root / where / "alice" / ("runs.git" if kind == "ms" else "runs"))
    home = _home_for(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_port}/", host,
                     "[credential]\n\thelper = store\n")  # a helper that would save it
    server.expected = "Basic " + base64.b64encode(f"{user}:{TOKEN}".encode()).decode()
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=2, steps=30, names=["a", "b"], model=False, media=False)
    target = f"{kind}:alice/runs"

    # Without the token the host refuses (no prompt, no hang) and nothing is pushed.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(GitError, match="cannot read"):
        deploy(store, target)
    assert git(bare, "for-each-ref") == ""

    monkeypatch.setenv(var, TOKEN)
    work = tmp_path / "work"
    result = deploy(store, target, workdir=work)
    assert result["pushed"] and result["runs"]["runs"] == 2 and result["kind"] == kind
    assert server.expected in server.seen  # the token did authenticate
    head = git(bare, "show", "main:README.md")
    assert ("sdk: static" in head) == (kind == "hf")
    assert ("entry_file: index.html" in head) == (kind == "ms")
    assert len(git(bare, "for-each-ref", "refs/flowillower/runs/").splitlines()) == 2
    # The run catalog went too, from the store's repository with the same token.
    assert result["runs"]["catalog"]["error"] is None and result["runs"]["catalog"]["rows"] == 2
    assert git(bare, "rev-parse", "refs/flowillower/catalog").strip()
    # The CLI, on the same remote: the runs are there already.
    res = CliRunner().invoke(cli, ["push", target, "--dir", str(store)])
    assert res.exit_code == 0, res.output
    assert "data of 2 run(s) (0 new or updated" in res.output
    # Never written: pushed objects, the host's files, the throwaway repository (its
    # .git/config included), HOME (no ~/.git-credentials), output, result.
    secret = TOKEN.encode()
    assert secret not in _all_objects(bare)
    assert secret not in _everything_under(root)
    assert (work / "repo" / ".git" / "config").is_file()
    assert secret not in _everything_under(work)
    assert secret not in _everything_under(home)
    assert secret not in _everything_under(store)
    assert not (home / ".git-credentials").exists()
    assert TOKEN not in res.output and TOKEN not in repr(result)


def test_lfs_upload_carries_the_token_and_a_failed_one_pushes_nothing(http_hub, tmp_path,
                                                                      monkeypatch):
    require_lfs()
    server, root = http_hub  # a git server without an LFS endpoint
    bare = _bare(root / "spaces" / "alice" / "runs")
    _home_for(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_port}/",
              "https://huggingface.co/")
    server.expected = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False)  # with images
    with pytest.raises(GitError, match="LFS storage of https://huggingface.co/spaces/alice/"
                                         "runs failed: .*lfs/objects/batch") as err:
        deploy(store, "hf:alice/runs")
    assert TOKEN not in str(err.value) and "credential.helper" not in str(err.value)
    # git-lfs asked the LFS API with the token (git's credential path, our helper) ...
    assert ("/spaces/alice/runs.git/info/lfs/objects/batch", True) in server.requests
    # ... and, the images not uploaded, the branch was never pushed (no dangling pointers).
    assert git(bare, "for-each-ref") == ""


def test_host_refusing_the_run_refs_keeps_the_site_and_says_so(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    bare = _bare(hub / "spaces" / "alice" / "runs")
    hook = bare / "hooks" / "pre-receive"  # a host that takes branches only
    hook.write_text("#!/bin/sh\nwhile read old new ref; do case $ref in refs/heads/*) ;; "
                    "*) echo \"only branches here: $ref\" >&2; exit 1;; esac; done\n")
    hook.chmod(0o755)
    isolate_home(monkeypatch, tmp_path,
                 f'[url "file://{hub}/"]\n\tinsteadOf = https://huggingface.co/\n')
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False, media=False)
    with pytest.raises(GitError, match="viewer is deployed to https://huggingface.co/spaces/"
                                       "alice/runs, but the remote refused the run refs"):
        share_push("hf:alice/runs", dir=store)
    assert "index.html" in git(bare, "ls-tree", "--name-only", "main")
    assert git(bare, "for-each-ref", "refs/flowillower/") == ""
    res = CliRunner().invoke(cli, ["push", "hf:alice/runs", "--dir", str(store)])
    assert res.exit_code == 1
    assert "site unchanged" in res.output and "only branches here" in res.output


def test_host_refusing_only_the_catalog_keeps_the_runs_and_says_so(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    bare = _bare(hub / "spaces" / "alice" / "runs")
    tries = tmp_path / "catalog-tries"
    hook = bare / "hooks" / "pre-receive"  # takes the site and the runs, not the catalog
    hook.write_text("#!/bin/sh\nwhile read old new ref; do case $ref in "
                    f"refs/flowillower/catalog) echo x >> {tries}; "
                    "echo \"no catalog here\" >&2; exit 1;; esac; done\n")
    hook.chmod(0o755)
    isolate_home(monkeypatch, tmp_path,
                 f'[url "file://{hub}/"]\n\tinsteadOf = https://huggingface.co/\n')
    store = tmp_path / "proj" / ".flowillower"
    (run_id,) = make_demo_store(store, runs=1, steps=20, names=["a"], model=False,
                                media=False)
    res = CliRunner().invoke(cli, ["deploy", "hf:alice/runs", "--dir", str(store)])
    assert res.exit_code == 0, res.output
    assert "pushed the data of 1 run(s)" in res.output
    assert "`pull --runs FILTER` fetches the runs it lacks whole" in res.output
    assert run_id in git(bare, "for-each-ref", "refs/flowillower/")
    assert "refs/flowillower/catalog" not in git(bare, "for-each-ref", "refs/flowillower/")
    assert tries.read_text() == "x\n"  # a refusal is not a race: no retries


def test_wrong_token_error_names_the_address_not_the_token(http_hub, tmp_path, monkeypatch):
    server, root = http_hub
    _bare(root / "spaces" / "alice" / "runs")
    _home_for(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_port}/",
              "https://huggingface.co/")
    server.expected = "Basic " + base64.b64encode(b"user:the-right-one").decode()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    store = tmp_path / "proj" / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False, media=False)
    res = CliRunner().invoke(cli, ["deploy", "hf:alice/runs", "--dir", str(store)])
    assert res.exit_code == 1
    assert "huggingface.co/spaces/alice/runs" in res.output and TOKEN not in res.output


def test_push_of_a_space_leaves_the_users_repo_alone(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    bare = _bare(hub / "spaces" / "alice" / "runs")
    isolate_home(monkeypatch, tmp_path,
                 f'[url "file://{hub}/"]\n\tinsteadOf = https://huggingface.co/\n')
    project = tmp_path / "proj"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "train.py").write_text("print(1)\n")
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "mine")
    (project / "train.py").write_text("print(2)\n")  # a dirty working tree
    store = project / ".flowillower"
    make_demo_store(store, runs=1, steps=20, names=["a"], model=False, media=False)

    def state() -> tuple[str, ...]:
        return (git(project, "rev-parse", "HEAD"), git(project, "status", "--porcelain"),
                (project / ".git" / "config").read_text(), git(project, "ls-files", "-s"),
                (project / ".git" / "index").read_bytes().hex())

    before = state()
    monkeypatch.chdir(project)
    monkeypatch.delenv("FLOWILLOWER_DIR")  # the store is found from the project, as a user's
    result = share_push("https://huggingface.co/spaces/alice/runs")
    assert result["pushed"] and result["runs"]["pushed"] == 1
    assert state() == before
    assert git(bare, "ls-tree", "--name-only", "main").split().count("index.html") == 1
    # A remote *name* of the project for the Space is a Space too (CLI and Python).
    git(project, "remote", "add", "space", "https://huggingface.co/spaces/alice/runs")
    before = state()
    assert share_push("space")["kind"] == "hf"
    res = CliRunner().invoke(cli, ["push", "space"])
    assert res.exit_code == 0 and "data of 1 run(s)" in res.output, res.output
    assert state() == before


def _incoming(store: Path) -> list[str]:
    listing = git(store / "git", "for-each-ref", "--format=%(refname:lstrip=3)",
                  "refs/flowillower/incoming/")
    return sorted(listing.split())


def test_a_deployed_space_has_the_run_catalog_so_filtered_pulls_fetch_only_matches(
        tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    bare = _bare(hub / "spaces" / "alice" / "runs")
    isolate_home(monkeypatch, tmp_path,
                 f'[url "file://{hub}/"]\n\tinsteadOf = https://huggingface.co/\n')
    store = tmp_path / "proj" / ".flowillower"
    ids = make_demo_store(store, runs=3, steps=20, names=["a", "b", "c"], model=False,
                          media=False)
    first = share_push("hf:alice/runs", dir=store)
    assert first["runs"]["pushed"] == 3
    assert first["runs"]["catalog"]["rows"] == 3 and first["runs"]["catalog"]["error"] is None
    catalog = git(bare, "rev-parse", "refs/flowillower/catalog").strip()
    # A teammate pulls one run by a filter from the Space's address: the catalog says
    # which, and only that run's ref is fetched (no full fetch to look).
    space = "https://huggingface.co/spaces/alice/runs"
    mate = tmp_path / "mate" / ".flowillower"
    got = fw.pull(space, runs="name == 'b'", dir=mate)
    assert got["catalog"]["state"] == "used" and got["catalog"]["uncovered"] == 0
    assert (got["catalog"]["matched"], got["catalog"]["skipped"]) == (1, 2)
    assert got["runs_added"] == 1 and _incoming(mate) == [ids[1]]
    assert sorted(p.name for p in (mate / "runs").iterdir()) == [ids[1]]
    # A later deploy adds the new run's row on top of the same catalog (a fast-forward).
    ids += make_demo_store(store, runs=1, steps=20, names=["d"], model=False, media=False,
                           seed=5)
    again = deploy(store, "hf:alice/runs")
    assert again["runs"]["catalog"]["rows"] == 1 and again["runs"]["catalog"]["error"] is None
    assert git(bare, "merge-base", "--is-ancestor", catalog, "refs/flowillower/catalog") == ""
    got = fw.pull(space, runs="name == 'd'", dir=mate)
    assert got["catalog"]["uncovered"] == 0 and got["runs_added"] == 1
    assert _incoming(mate) == sorted([ids[1], ids[3]])


def test_a_deploy_sends_big_blobs_whole(tmp_path, monkeypatch):
    # Packs stay packs on the remote (as for any push of more than 100 objects).
    isolate_home(monkeypatch, tmp_path, "[transfer]\n\tunpackLimit = 1\n")
    bare = _bare(tmp_path / "site.git")
    store = tmp_path / "proj" / ".flowillower"
    ids = make_demo_store(store, runs=2, steps=20, names=["a", "b"], model=False, media=False)
    shared = os.urandom(3 * WHOLE_ABOVE)  # ideal delta material, in both runs
    for run_id in ids:
        (store / "runs" / run_id / "artifacts").mkdir(exist_ok=True)
        (store / "runs" / run_id / "artifacts" / "state.bin").write_bytes(
            shared + os.urandom(2048))
    result = deploy(store, str(bare))
    assert result["pushed"] and result["runs"]["pushed"] == 2
    big = [git(bare, "rev-parse", f"refs/flowillower/runs/{rid}:artifacts/state.bin").strip()
           for rid in ids]
    kinds = _pack_kinds(bare)
    assert set(big) <= set(kinds) and [sha for sha in big if kinds[sha]] == []
