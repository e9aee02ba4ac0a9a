"""No secrets in code snapshots: secret-looking files and `.flowillowerignore` patterns
stay out of the snapshot (and so out of every push), the run says what was left out, a
cap bounds untracked files, and the user's repository is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowillower.gitops.snapshot import list_files, take_snapshot
from tests.conftest_git import bare_remote, fingerprint, git, isolate_home, make_repo, status

CLI = [sys.executable, "-m", "flowillower"]
SECRETS = {
    ".env": b"API_TOKEN=tok-env-5f1c\n",
    "id_rsa": b"-----BEGIN OPENSSH PRIVATE KEY-----\ntok-rsa-77aa\n",
    "config/prod.pem": b"-----BEGIN CERTIFICATE-----\ntok-pem-9b2e\n",
    "sub/deep/.aws/credentials": b"[default]\naws_secret_access_key=tok-aws-31d0\n",
    "data/big.csv": b"a,b\ntok-data-c4c4\n",  # left out by .flowillowerignore
}
COMMITTED = b'{"password": "tok-committed-0a0a"}\n'
MODIFIED = b'{"password": "tok-modified-1b1b"}\n'
TOKENS = [b"tok-env-5f1c", b"tok-rsa-77aa", b"tok-pem-9b2e", b"tok-aws-31d0", b"tok-data-c4c4",
          b"tok-committed-0a0a", b"tok-modified-1b1b"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GIT_") and k != "FLOWILLOWER_DIR"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A repo with a committed-then-modified credentials.json and untracked secrets."""
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "main")
    (repo / "credentials.json").write_bytes(COMMITTED)
    git(repo, "add", "credentials.json")
    git(repo, "commit", "-qm", "oops, a secret")
    (repo / "credentials.json").write_bytes(MODIFIED)
    for rel, data in SECRETS.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    (repo / ".flowillowerignore").write_text("data/\n!.env.example\n")
    (repo / ".env.example").write_text("API_TOKEN=put-yours-here\n")
    (repo / "lib" / "new_layer.py").write_text("DEPTH = 3  # untracked, kept\n")
    return repo


def _all_blobs(git_dir: Path) -> list[bytes]:
    out = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "--batch-all-objects",
                          "--batch"], capture_output=True, check=True).stdout
    blobs, pos = [], 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        _sha, kind, size = out[pos:header_end].split()
        body = out[header_end + 1: header_end + 1 + int(size)]
        if kind == b"blob":
            blobs.append(body)
        pos = header_end + 1 + int(size) + 1
    return blobs


def test_secrets_stay_out_of_the_snapshot_and_the_push(project, tmp_path):
    before, status_before = fingerprint(project), status(project)
    subprocess.run([sys.executable, "train.py"], cwd=project, env=_env(), check=True,
                   capture_output=True)
    store = project / ".flowillower"
    [run_dir] = list((store / "runs").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())["git"]
    files = set(list_files(store / "git", meta["snapshot"]))
    assert {"train.py", "lib/new_layer.py", ".env.example", ".flowillowerignore"} <= files
    assert not files & {*SECRETS, "credentials.json"}
    assert sorted(map(tuple, meta["left_out"])) == sorted([
        (".env", "secret pattern .env"), ("id_rsa", "secret pattern id_rsa*"),
        ("config/prod.pem", "secret pattern *.pem"),
        ("sub/deep/.aws/credentials", "secret pattern .aws/credentials"),
        ("data/big.csv", ".flowillowerignore pattern data/"),
        ("credentials.json", "secret pattern credentials*")])
    assert meta["dirty"] is True

    remote = bare_remote(tmp_path / "team.git")
    proc = subprocess.run([*CLI, "push", str(remote), "--dir", str(project)], env=_env(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1 code snapshot(s)" in proc.stdout
    blobs = _all_blobs(remote)
    assert b"DEPTH = 3  # untracked, kept\n" in blobs  # the code did travel
    assert [t for t in TOKENS if any(t in blob for blob in blobs)] == []
    assert status(project) == status_before and fingerprint(project) == before


def test_committed_secret_left_out_of_a_clean_tree(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "main")
    (repo / "deploy.key").write_bytes(b"tok-key-2c2c\n")
    git(repo, "add", "deploy.key")
    git(repo, "commit", "-qm", "key")
    before = fingerprint(repo)
    info = take_snapshot(repo, tmp_path / "store" / "git")
    assert "deploy.key" not in list_files(tmp_path / "store" / "git", info["snapshot"])
    assert info["left_out"] == [["deploy.key", "secret pattern *.key"]]
    assert info["dirty"] is False  # nothing uncommitted: only the secret was left out
    assert fingerprint(repo) == before


def test_untracked_cap_warns_naming_the_largest_folders(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "main")
    (repo / "outputs").mkdir()
    (repo / "scratch").mkdir()
    for i in range(30):
        (repo / "outputs" / f"pred_{i:02}.txt").write_bytes(b"x" * 4000)
    for i in range(5):
        (repo / "scratch" / f"s{i}.txt").write_bytes(b"y" * 10)
    git_dir = tmp_path / "store" / "git"
    with pytest.warns(UserWarning, match=r"left out \d+ untracked file\(s\).*outputs/"):
        info = take_snapshot(repo, git_dir, max_untracked_files=10,
                             max_untracked_bytes=2**20)
    files = list_files(git_dir, info["snapshot"])
    assert len([f for f in files if f.startswith("outputs/")]) == 10
    assert "train.py" in files  # tracked files never count against the cap
    folders = {path: why for path, why in info["left_out"]}
    assert folders["outputs/"].endswith("20 file(s), 0.1 MB")
    assert "scratch/" in folders and "outputs/" in info["warning"]
    # The byte cap alone also applies.
    with pytest.warns(UserWarning, match="outputs/"):
        info = take_snapshot(repo, git_dir, max_untracked_bytes=40_000)
    assert len([f for f in list_files(git_dir, info["snapshot"])
                if f.startswith("outputs/")]) == 10


def test_push_no_code_sends_no_snapshot(project, tmp_path):
    subprocess.run([sys.executable, "train.py"], cwd=project, env=_env(), check=True,
                   capture_output=True)
    remote = bare_remote(tmp_path / "team.git")
    proc = subprocess.run([*CLI, "push", str(remote), "--no-code", "--dir", str(project)],
                          env=_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "no code snapshots" in proc.stdout
    refs = git(remote, "for-each-ref", "--format=%(refname)").split()
    # the run, and the remote's run catalog (its row names the snapshot, as run.json does)
    assert len(refs) == 2 and refs[1].startswith("refs/flowillower/runs/")
    assert refs[0] == "refs/flowillower/catalog"
    blobs = _all_blobs(remote)
    assert (project / "train.py").read_bytes() not in blobs
    assert any(b'"snapshot"' in blob for blob in blobs)  # the run itself did travel
