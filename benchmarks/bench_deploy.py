"""Redeploying a Space whose history holds many images: what a deploy downloads first.

A static site (one exported demo run) plus IMAGES random 200 kB `.png` files is deployed
DEPLOYS times to a local bare repository through Git LFS (the standalone file agent, as
in tests/test_deploy_lfs.py), each time with new images, so the remote's LFS store and
history grow like a Space updated after every training session. Then one more deploy is
timed two ways (best of --repeats), in the same run, on two remotes with the same history:

* this package (`server.deploy.deploy`): fetch the branch tip only (depth 1) and never
  download the old site's LFS files (they are replaced anyway);
* the naive way, what the Hub's git instructions lead to: `git clone` (full history,
  every LFS file of the checkout downloaded), replace the files, `git add`, commit,
  `git push` (git-lfs's pre-push hook uploads the new files).

Printed: seconds, and the bytes the working repository got from the remote (git objects
and LFS files; for this package its git objects after the deploy, an upper bound). On a
local disk the time is mostly git process starts; over a network to the Hub the bytes
are what a redeploy waits for.

Run: python benchmarks/bench_deploy.py [--deploys 8] [--images 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from flowillower.server.demo import make_demo_store  # noqa: E402
from flowillower.server.deploy import deploy  # noqa: E402
from flowillower.server.export import export_site  # noqa: E402


def git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@x", *args], cwd=cwd,
                   env=env, check=True, capture_output=True)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def new_images(site: Path, count: int, round_: int) -> None:
    folder = site / "data" / "gallery"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"r{round_}-{i}.png").write_bytes(os.urandom(200_000))


def naive(remote: str, site: Path, work: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    git(work.parent, "clone", "-q", remote, str(work))
    downloaded = size(work / ".git" / "objects") + size(work / ".git" / "lfs")
    git(work, "lfs", "install", "--local")
    for child in work.iterdir():
        if child.name not in (".git", ".gitattributes"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    shutil.copytree(site, work, dirs_exist_ok=True)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "naive")
    git(work, "push", "-q", "origin", "HEAD:main")
    return time.perf_counter() - t0, downloaded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploys", type=int, default=8)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args, _ = ap.parse_known_args()
    if shutil.which("git-lfs") is None:
        sys.exit("bench_deploy needs git-lfs (apt-get install git-lfs)")
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        (home / ".gitconfig").write_text(
            "[lfs]\n\tstandalonetransferagent = lfs-standalone-file\n"
            '[filter "lfs"]\n\tclean = git-lfs clean -- %f\n'
            "\tsmudge = git-lfs smudge -- %f\n\tprocess = git-lfs filter-process\n"
            "\trequired = true\n")
        os.environ["HOME"] = str(home)
        store = root / "proj" / ".flowillower"
        make_demo_store(store, runs=1, steps=50, names=["a"], model=False)
        site = root / "site"
        export_site(store, site, files=False)
        remotes = {}
        for name in ("ours", "naive"):
            remotes[name] = root / f"{name}.git"
            git(root, "init", "-q", "--bare", "-b", "main", str(remotes[name]))
        for round_ in range(args.deploys):
            new_images(site, args.images, round_)
            for remote in remotes.values():
                deploy(site, str(remote), lfs=True)
        ours, ours_bytes, naive_s, naive_bytes = [], [], [], []
        for rep in range(args.repeats):  # the best of a few: a shared box is noisy
            new_images(site, args.images, args.deploys + rep)
            kept = root / f"kept{rep}"
            t0 = time.perf_counter()
            deploy(site, str(remotes["ours"]), lfs=True, workdir=kept)
            ours.append(time.perf_counter() - t0)
            # What the fetch brought (plus the new commit's own git objects; LFS not
            # counted: the new images are in both, the old ones only in the naive clone).
            ours_bytes.append(size(kept / "repo" / ".git" / "objects"))
            seconds, got = naive(str(remotes["naive"]), site, root / f"naive{rep}")
            naive_s.append(seconds)
            naive_bytes.append(got)
        history = size(remotes["ours"])
        ours, ours_bytes = min(ours), min(ours_bytes)
        naive_s, naive_bytes = min(naive_s), min(naive_bytes)
    print(f"redeploy after {args.deploys} deploys of {args.images} x 200 kB images "
          f"(remote: {history / 1e6:.1f} MB)")
    print(f"{'method':<44} {'seconds':>8} {'MB from the remote':>20}")
    print(f"{'flowillower deploy (depth 1, no LFS download)':<44} {ours:>8.2f} "
          f"{ours_bytes / 1e6:>20.1f}")
    print(f"{'naive: git clone + LFS checkout + push':<44} {naive_s:>8.2f} "
          f"{naive_bytes / 1e6:>20.1f}")


if __name__ == "__main__":
    main()
