"""The UI's JSON API: every route, bad input (4xx, never 500), auth, traversal, live cursor."""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import time
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from flowillower.run import Run
from flowillower.server.app import create_app
from flowillower.server.demo import make_demo_store
from tests.conftest import ok, wait_for

LOCAL = "http://127.0.0.1:8686"
WRITE = {"X-Flowillower-Token": ""}  # the header the UI sends on changes (CSRF defence)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui") / ".flowillower"
    names = ["alpha", "beta", "gamma", "delta", "<script>alert(1)</script>", "zeta"]
    ids = make_demo_store(root, runs=6, steps=240, names=names)
    return root, ids


@pytest.fixture
def client(demo):
    root, _ = demo
    with TestClient(create_app(root, sync_interval=0.1), base_url=LOCAL) as c:
        yield c


@pytest.fixture
def fresh(tmp_path):
    """A private store (for tests that change or add runs)."""
    root = tmp_path / "fresh" / ".flowillower"
    ids = make_demo_store(root, runs=3, steps=60, model=False)
    with TestClient(create_app(root, sync_interval=0.05), base_url=LOCAL) as c:
        yield root, ids, c



def poll(c, path: str, params: dict, until, what: str) -> dict:
    """The first 200 answer of `path` whose JSON satisfies `until` (the server picks up
    files on its next sync: wait for it instead of sleeping a fixed time)."""
    def attempt():
        r = c.get(path, params=params)
        return r.json() if r.status_code == 200 and until(r.json()) else None

    return wait_for(attempt, timeout=10, what=what)


# -- runs table --------------------------------------------------------------------------
def test_info(client, demo):
    info = ok(client.get("/api/info"))
    assert info["runs"] == len(demo[1]) and info["auth"] == "loopback" and not info["static"]


def test_runs_table_page_columns_and_constant_folding(client):
    data = ok(client.get("/api/runs", params={"limit": 4}))
    assert data["total"] == 6 and data["matched"] == 6 and len(data["rows"]) == 4
    cols = {c["key"]: c for c in data["columns"]}
    assert cols["arg:layers"]["constant"] and cols["arg:layers"]["value"] == 3
    assert not cols["arg:lr"]["constant"]
    assert cols["best:val/loss"]["goal"] == "min" and cols["best:val/acc"]["goal"] == "max"
    assert cols["last:act/fc1/mean"]["visible"] is False  # watch statistics start hidden
    row = data["rows"][0]
    assert "arg:lr" in row["cells"] and "arg:layers" not in row["cells"]  # folded away
    page2 = ok(client.get("/api/runs", params={"limit": 4, "offset": 4}))
    assert len(page2["rows"]) == 2
    assert not {r["id"] for r in page2["rows"]} & {r["id"] for r in data["rows"]}


def test_runs_sort_group_and_columns(client):
    asc = ok(client.get("/api/runs", params={"sort": "arg:lr", "desc": "false",
                                             "col": ["arg:lr", "best:train/loss"]}))
    lrs = [r["cells"]["arg:lr"] for r in asc["rows"]]
    assert lrs == sorted(lrs) and set(asc["rows"][0]["cells"]) == {"arg:lr", "best:train/loss"}
    desc = ok(client.get("/api/runs", params={"sort": "best:train/loss"}))
    best = [r["cells"]["best:train/loss"] for r in desc["rows"]]
    assert best == sorted(best, reverse=True)
    grouped = ok(client.get("/api/runs", params={"group": "arg:optimizer"}))
    groups = [r["group"] for r in grouped["rows"]]
    assert groups == sorted(groups) and {g["value"] for g in grouped["groups"]} == {"adam", "sgd"}


@pytest.mark.parametrize("q, expected", [
    ("gamma", {"gamma"}),
    ("lr < 0.02 and optimizer == 'adam'", {"gamma"}),
    ("${'hyper-lr':'<0.02', 'hyper-optimizer':'adam'}$", {"gamma"}),
    ("${'hyper-lr':[0.1, 0.003]}$", {"alpha", "delta", "<script>alert(1)</script>"}),
    ("status == 'finished' and `val/acc.max` > 0", {"alpha", "beta", "gamma", "delta", "zeta",
                                                  "<script>alert(1)</script>"}),
])
def test_runs_filter_syntaxes(client, q, expected):
    data = ok(client.get("/api/runs", params={"q": q}))
    assert {r["name"] for r in data["rows"]} == expected


@pytest.mark.parametrize("params", [
    {"q": "lr <"}, {"q": "${'hyper-lr': }$"}, {"q": "lr < __import__('os')"},
    {"sort": "nonsense"}, {"limit": "abc"}, {"limit": "0"}, {"offset": "-1"},
    {"desc": "maybe"}, {"group": "arg"},
])
def test_runs_bad_requests_are_400(client, params):
    r = client.get("/api/runs", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_points(client):
    data = ok(client.get("/api/points", params={"dim": ["arg:lr", "last:val/acc"]}))
    assert len(data["ids"]) == 6 and len(data["dims"]["arg:lr"]) == 6
    assert client.get("/api/points").status_code == 400
    assert client.get("/api/points", params={"dim": "bogus"}).status_code == 400


# -- series ------------------------------------------------------------------------------
def test_keys(client, demo):
    data = ok(client.get("/api/keys", params={"run": demo[1][:2]}))
    names = {m["name"]: m for m in data["metrics"]}
    assert {"train/loss", "val/acc"} <= set(names) and names["act/fc1/mean"]["watch"]
    assert data["loops"] == ["epoch", "step"] and len(data["runs"]) == 2


def test_series_downsampled_on_a_shared_grid(client, demo):
    ids = demo[1]
    data = ok(client.get("/api/series", params={"run": ids, "key": "train/loss", "x": "time",
                                                "points": 40}))
    assert data["sampled"] and data["x"] is not None and len(data["x"]) <= 40
    for r in data["runs"]:
        assert len(r["y"]) == len(data["x"]) and r["count"] == 240
        assert r["min"] <= r["last"] <= r["max"]
    # Few distinct steps: no grid, every run's own points.
    small = ok(client.get("/api/series", params={"run": ids[:2], "key": "val/acc"}))
    assert small["x"] is None and [len(r["x"]) for r in small["runs"]] == [4, 4]


def test_series_zoom_gives_full_resolution(client, demo):
    rid = demo[1][0]
    full = ok(client.get("/api/series", params={"run": rid, "key": "train/loss", "points": 20}))
    assert full["sampled"] and len(full["runs"][0]["x"]) <= 22
    zoom = ok(client.get("/api/series", params={"run": rid, "key": "train/loss", "points": 20,
                                                "x0": 100, "x1": 110}))
    xs = zoom["runs"][0]["x"]
    assert xs == list(range(99, 112))  # the window plus one neighbour on each side
    assert not zoom["sampled"]


@pytest.mark.parametrize("axis", ["step", "time", "rel", "epoch", "metric:val/acc"])
def test_series_x_axes(client, demo, axis):
    data = ok(client.get("/api/series", params={"run": demo[1][:2], "key": "val/loss",
                                                "x": axis}))
    xs = data["x"] or data["runs"][0]["x"]
    assert len(xs) == 4 and all(isinstance(v, (int, float)) for v in xs)
    if axis == "epoch":
        assert xs == pytest.approx([0, 1, 2, 3])
    if axis == "rel":
        assert 0 <= xs[0] < 60


def test_series_missing_key_gives_replay_command(client, demo):
    data = ok(client.get("/api/series", params={"run": demo[1][0], "key": "grad/never"}))
    r = data["runs"][0]
    assert r["missing"] and r["replay"] == f"flowillower replay grad/never --runs {demo[1][0]}"


@pytest.mark.parametrize("params", [
    {"key": "train/loss"},  # no run
    {"run": "nope", "key": "train/loss"},
    {"run": "..", "key": "train/loss"},
    {"run": "RUN", "key": "train/loss", "x": "bogus"},
    {"run": "RUN", "key": "train/loss", "points": "many"},
    {"run": "RUN", "key": "train/loss", "points": "1"},
    {"run": "RUN", "key": "train/loss", "x0": "nan"},
    {"run": "RUN", "key": "train/loss", "x0": "5", "x1": "1"},
    {"run": "RUN", "key": "train/loss", "after": ["1", "2"]},
    {"run": "RUN", "key": "train/loss", "after": "-3"},
    {"run": "RUN"},  # no key
])
def test_series_bad_requests(client, demo, params):
    params = {k: (v.replace("RUN", demo[1][0]) if isinstance(v, str) else v)
              for k, v in params.items()}
    r = client.get("/api/series", params=params)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]


def test_live_cursor_returns_only_new_points(fresh):
    root, _, c = fresh
    run = Run("live", "running-run", dir=root, snapshot=False)
    for step in range(50):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step)
    run.flush()
    rid = run.id
    first = poll(c, "/api/series", {"run": rid, "key": "loss"},
                 lambda d: d["runs"] and d["runs"][0]["cursor"] >= 50, "the first 50 points")
    cursor = first["runs"][0]["cursor"]
    assert cursor == 50 and len(first["runs"][0]["x"]) == 50
    for step in range(50, 55):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step)
    run.flush()
    nxt = ok(c.get("/api/series", params={"run": rid, "key": "loss", "after": cursor}))
    r = nxt["runs"][0]
    assert r["x"] == [50, 51, 52, 53, 54] and r["cursor"] == 55 and r["after"] == 50
    again = ok(c.get("/api/series", params={"run": rid, "key": "loss", "after": 55}))
    assert again["runs"][0]["x"] == []
    table = ok(c.get("/api/runs", params={"q": "running-run"}))
    assert table["rows"][0]["status"] == "running"
    run.finish()


def test_new_runs_appear_while_serving(fresh):
    root, ids, c = fresh
    assert ok(c.get("/api/runs"))["matched"] == 3
    make_demo_store(root, runs=1, steps=10, model=False, media=False, names=["late"], seed=9)
    poll(c, "/api/runs", {}, lambda d: d["matched"] >= 4, "the new run in the table")
    table = ok(c.get("/api/runs", params={"q": "late"}))
    assert table["matched"] == 1 and table["rows"][0]["name"] == "late"
    assert ok(c.get("/api/runs"))["matched"] == 4


def test_nan_values_stay_valid_json(fresh):
    root, _, c = fresh
    run = Run("nan", "nan-run", dir=root, snapshot=False)
    run.log_metrics({"loss": 1.0}, 0)
    run.log_metrics({"loss": math.nan}, 1)
    run.log_metrics({"loss": math.inf}, 2)
    run.finish()
    table = poll(c, "/api/runs", {"q": "nan-run", "col": ["last:loss"]},
                 lambda d: d["rows"] and d["rows"][0]["status"] != "running", "the finished run")
    assert table["rows"][0]["cells"]["last:loss"] == "inf"
    data = ok(c.get("/api/series", params={"run": run.id, "key": "loss"}))
    assert data["runs"][0]["y"] == [1.0, None, None]


# -- one run -----------------------------------------------------------------------------
def test_run_detail(client, demo):
    rid = demo[1][0]
    data = ok(client.get(f"/api/runs/{rid}"))
    assert data["run"]["name"] == "alpha" and data["models"] == [""]
    assert data["keys"]["image"] == ["samples"] and data["keys"]["artifact"] == ["notes"]
    assert "act/fc1/hist" in data["keys"]["hist"] and "train/loss" in data["keys"]["chart"]
    by_prefix = ok(client.get(f"/api/runs/{rid[:-3]}"))
    assert by_prefix["run"]["id"] == rid
    by_name = ok(client.get("/api/runs/gamma"))
    assert by_name["run"]["name"] == "gamma"


@pytest.mark.parametrize("ref, status", [("nope", 404), ("..", 400), ("%2e%2e", 400),
                                         ("a%00b", 400)])
def test_run_bad_refs(client, ref, status):
    r = client.get(f"/api/runs/{ref}")
    assert r.status_code in (status, 404), r.text


def test_media_and_files(client, demo):
    rid = demo[1][0]
    items = ok(client.get(f"/api/runs/{rid}/media", params={"key": "samples"}))["items"]
    assert len(items) == 4 and items[0]["caption"] == "epoch 0"
    r = client.get(f"/api/runs/{rid}/files/{items[0]['path']}")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert "sandbox" in r.headers["content-security-policy"]
    art = ok(client.get(f"/api/runs/{rid}/media", params={"key": "notes"}))["items"][0]
    r = client.get(f"/api/runs/{rid}/files/{art['path']}", params={"download": "1"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert client.get(f"/api/runs/{rid}/media", params={"key": "nope"}).status_code == 404


@pytest.mark.parametrize("path", [
    "media/../run.json", "media/%2e%2e/run.json", "media/..%2frun.json", "run.json",
    "notes/x.json", "/etc/passwd", "%2fetc%2fpasswd", "media//x", "media/./x",
    "media/..%5c..%5crun.json", "media/samples-x/%00.png", "artifacts/missing.txt",
])
def test_file_route_refuses_traversal(client, demo, path):
    r = client.get(f"/api/runs/{demo[1][0]}/files/{path}")
    assert r.status_code in (400, 403, 404), (path, r.status_code)
    assert b"root:" not in r.content and b'"id"' not in r.content


def test_file_route_refuses_symlink_escape(fresh):
    root, ids, c = fresh
    run_dir = root / "runs" / ids[0]
    secret = root.parent / "secret.txt"
    secret.write_text("top secret")
    link_dir = run_dir / "media" / "evil"
    link_dir.mkdir(parents=True)
    os.symlink(secret, link_dir / "x.png")
    os.symlink(root.parent, run_dir / "media" / "up")
    assert c.get(f"/api/runs/{ids[0]}/files/media/evil/x.png").status_code == 403
    assert c.get(f"/api/runs/{ids[0]}/files/media/up/secret.txt").status_code == 403


def test_hist_model_models(client, demo):
    rid = demo[1][0]
    h = ok(client.get(f"/api/runs/{rid}/hist", params={"key": "act/fc1/hist", "points": 10}))
    assert len(h["steps"]) == 10 and len(h["counts"][0]) == 32 and h["count"] == 48
    g = ok(client.get(f"/api/runs/{rid}/model"))
    assert g["format"] == "flowillower.graph/1" and g["nodes"]
    assert ok(client.get(f"/api/runs/{rid}/models"))["models"] == [""]
    assert client.get(f"/api/runs/{rid}/model", params={"name": "../x"}).status_code == 400
    assert client.get(f"/api/runs/{rid}/model", params={"name": "other"}).status_code == 404
    assert client.get(f"/api/runs/{demo[1][1]}/model").status_code == 404
    assert client.get(f"/api/runs/{rid}/hist", params={"key": "nope"}).status_code == 404


# -- changes -----------------------------------------------------------------------------
def test_annotate_hide_and_delete(fresh):
    root, ids, c = fresh
    r = ok(c.patch(f"/api/runs/{ids[0]}", json={"notes": "<b>memo</b>", "tags": ["x"]},
                   headers=WRITE))
    assert r["run"]["notes"] == "<b>memo</b>" and r["run"]["tags"] == ["x"]
    ok(c.patch(f"/api/runs/{ids[1]}", json={"hidden": True}, headers=WRITE))
    assert ok(c.get("/api/runs"))["matched"] == 2
    assert ok(c.get("/api/runs", params={"hidden": "1"}))["matched"] == 3
    ok(c.delete(f"/api/runs/{ids[2]}", headers=WRITE))
    assert not (root / "runs" / ids[2]).exists()
    assert ok(c.get("/api/runs", params={"hidden": "1"}))["matched"] == 2
    assert c.delete(f"/api/runs/{ids[2]}", headers=WRITE).status_code == 404


@pytest.mark.parametrize("kwargs, status", [
    ({"json": {"notes": 3}}, 400), ({"json": {"hidden": "yes"}}, 400),
    ({"json": {"tags": "x"}}, 400), ({"json": {"bogus": 1}}, 400), ({"json": {}}, 400),
    ({"json": [1, 2]}, 400), ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ({"content": b"notes=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
])
def test_annotate_bad_bodies(fresh, kwargs, status):
    _, ids, c = fresh
    headers = {**WRITE, **kwargs.pop("headers", {})}
    r = c.patch(f"/api/runs/{ids[0]}", headers=headers, **kwargs)
    assert r.status_code == status, r.text


def test_changes_need_the_csrf_header(fresh):
    _, ids, c = fresh
    assert c.patch(f"/api/runs/{ids[0]}", json={"notes": "x"}).status_code == 403
    assert c.delete(f"/api/runs/{ids[0]}").status_code == 403
    r = c.patch(f"/api/runs/{ids[0]}", json={"notes": "x"},
                headers={**WRITE, "Origin": "http://evil.example"})
    assert r.status_code == 403


# -- auth --------------------------------------------------------------------------------
def test_token_required_beyond_loopback(demo):
    app = create_app(demo[0], token="s3cret", loopback_only=False)
    with TestClient(app, base_url="http://10.1.2.3:8686") as c:
        assert c.get("/api/info").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/api/info", params={"token": "wrong"}).status_code == 401
        r = c.get("/", params={"token": "s3cret"})
        assert r.status_code == 200 and "fw_token=s3cret" in r.headers["set-cookie"]
        assert 'content="s3cret"' in r.text  # for the UI's change requests
        assert c.get("/api/info").status_code == 200  # the cookie now
        rid = demo[1][0]
        # A cookie alone can't change anything: the header is the CSRF defence.
        assert c.patch(f"/api/runs/{rid}", json={"notes": "x"}).status_code == 403
        assert c.patch(f"/api/runs/{rid}", json={"notes": "x"},
                       headers={"X-Flowillower-Token": "wrong"}).status_code in (401, 403)
    with TestClient(app, base_url="http://10.1.2.3:8686") as c:
        assert c.get("/api/info", headers={"X-Flowillower-Token": "s3cret"}).status_code == 200
        assert c.get("/api/info", headers={"Authorization": "token s3cret"}).status_code == 200


def test_loopback_refuses_foreign_host_header(client):
    assert client.get("/api/info", headers={"Host": "evil.example:8686"}).status_code == 403
    assert client.get("/api/info", headers={"Host": "localhost:8686"}).status_code == 200
    assert client.get("/api/info", headers={"Host": "[::1]:8686"}).status_code == 200


# -- pages, schema, fuzz -----------------------------------------------------------------
def test_index_and_static(client):
    r = client.get("/")
    assert r.status_code == 200 and 'name="fw-mode" content="live"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/js/app.js").status_code == 200
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/static/../pyproject.toml").status_code == 404
    assert client.get("/api/nothing").status_code == 404
    assert client.post("/api/runs", headers=WRITE).status_code == 405


def test_openapi_lists_every_route(client):
    schema = ok(client.get("/api/openapi.json"))
    assert schema["openapi"].startswith("3.")
    routes = {(m.lower(), r.path) for r in client.app.routes if getattr(r, "methods", None)
              and r.path.startswith("/api/") and "{rest" not in r.path
              for m in r.methods if m != "HEAD"} - {("get", "/api/openapi.json")}
    documented = {(m, p.replace("{path:path}", "{path}")) for p, ops in schema["paths"].items()
                  for m in ops}
    assert {(m, p.replace("{path:path}", "{path}")) for m, p in routes} == documented


_NASTY = ["", "..", "../../etc/passwd", "%2e%2e", "\x00", "'", '"', "${", "}$", "<script>",
          "a" * 3000, "-1", "1e309", "NaN", "inf", "9" * 40, "0", "1", "true", " ", "\u202e",
          "metric:", "arg:", "last:", "${'a':'<<1'}$", "not", "(", "lr <<", "/", "%00"]


def _value(spec, rng):
    kind = spec.get("items", spec).get("type")
    if rng.random() < 0.6:
        return rng.choice(_NASTY)
    if kind == "integer":
        return str(rng.choice([-5, 0, 1, 2, 10**15, 3]))
    if kind == "number":
        return str(rng.choice([-1.5, 0, 1e300, 3.25]))
    if kind == "boolean":
        return rng.choice(["true", "false", "2"])
    return rng.choice(["train/loss", "arg:lr", "step", "epoch", "x"])


def test_fuzz_schema_never_500(client, demo):
    """Property test: random values for every documented parameter never give a 5xx."""
    schema = ok(client.get("/api/openapi.json"))
    rng = random.Random(1234)
    rid = demo[1][0]
    calls = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for _ in range(25):
                url = path.replace("{run}", rng.choice([rid, "..", "nope", rid[:8], "%2e"]))
                url = url.replace("{path}", rng.choice(["media/../x", "x", "media/a/b.png",
                                                        "artifacts/%2e%2e/x"]))
                params = {}
                for p in op["parameters"]:
                    if p["in"] == "query" and rng.random() < 0.7:
                        params[p["name"]] = _value(p["schema"], rng)
                kwargs = {"params": params}
                if method in ("patch", "delete"):
                    if method == "delete" and url.endswith(rid):
                        continue  # keep the shared demo runs
                    kwargs["headers"] = WRITE
                    if method == "patch":
                        kwargs["json"] = rng.choice([{"notes": rng.choice(_NASTY)},
                                                     {"hidden": "x"}, {"tags": [1]}, {}])
                r = client.request(method.upper(), url, **kwargs)
                calls += 1
                assert r.status_code < 500, (method, url, params, r.text[:300])
    assert calls > 300


# -- code snapshots ----------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_code_snapshot_and_diff(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    _git(project, "init", "-q")
    (project / "train.py").write_text("lr = 0.1\n")
    monkeypatch.chdir(project)
    store = project / ".flowillower"
    ids = []
    for lr in ("0.1", "0.2"):
        (project / "train.py").write_text(f"lr = {lr}\n")
        run = Run("p", f"lr{lr}", dir=store)
        run.log_metrics({"loss": 1.0}, 0)
        run.finish()
        ids.append(run.id)
    with TestClient(create_app(store), base_url=LOCAL) as c:
        code = ok(c.get(f"/api/runs/{ids[0]}/code"))
        assert "train.py" in code["files"]
        f = ok(c.get(f"/api/runs/{ids[0]}/code/file", params={"path": "train.py"}))
        assert f["text"] == "lr = 0.1\n"
        d = ok(c.get("/api/diff", params={"a": ids[0], "b": ids[1]}))
        assert "-lr = 0.1" in d["diff"] and "+lr = 0.2" in d["diff"]
        assert c.get(f"/api/runs/{ids[0]}/code/file", params={"path": "../x"}).status_code == 400
        assert c.get(f"/api/runs/{ids[0]}/code/file", params={"path": "nope.py"}
                     ).status_code == 404
        assert c.get("/api/diff", params={"a": ids[0], "b": "nope"}).status_code == 404


def test_series_also_decodes_the_next_keys_in_one_pass(demo):
    root, ids = demo
    with TestClient(create_app(root), base_url=LOCAL) as c:
        cache = c.app.state.api.series_cache
        ok(c.get("/api/series", params={"run": ids, "key": "train/loss",
                                        "also": ["val/acc", "val/loss"]}))
        assert cache.decodes == len(ids)
        ok(c.get("/api/series", params={"run": ids, "key": "val/acc"}))
        ok(c.get("/api/series", params={"run": ids, "key": "val/loss"}))
        assert cache.decodes == len(ids)  # served from the same decode


def _write_replay(run_dir: Path, key: str, steps: list[int], values: list[float]) -> None:
    """A hindsight replay's output file, as the replay writer leaves it."""
    import numpy as np

    from flowillower.store.format import encode_frame

    n = len(steps)
    frame = encode_frame(
        keys={0: (key, "metric")},
        call_cols=[np.zeros(n, np.uint32), np.array(steps, np.int64),
                   np.full(n, time.time()), np.ones(n, np.uint32)],
        float_cols=[np.zeros(n, np.uint32), np.array(values, np.float64)])
    (run_dir / "replays").mkdir(exist_ok=True)
    (run_dir / "replays" / "r1.fwl").write_bytes(frame)


def test_replayed_values_are_marked(fresh):
    root, ids, c = fresh
    _write_replay(root / "runs" / ids[0], "grad_norm", [0, 10, 20], [3.0, 2.0, 1.0])
    _write_replay(root / "runs" / ids[1], "train/loss", [5], [9.0])
    poll(c, "/api/runs", {"col": ["count:train/loss"]},
         lambda d: 61 in [r["cells"].get("count:train/loss") for r in d["rows"]],
         "both replay files indexed")
    table = ok(c.get("/api/runs", params={"q": "grad_norm.count == 3"}))
    assert [r["id"] for r in table["rows"]] == [ids[0]]
    assert table["rows"][0]["replayed"] == ["grad_norm"]
    col = next(x for x in table["columns"] if x["key"] == "last:grad_norm")
    assert col["replayed"]
    s = ok(c.get("/api/series", params={"run": ids[:2], "key": "grad_norm"}))
    assert s["runs"][0]["replayed"] == [0, 1, 2]
    assert s["runs"][1]["missing"] and "flowillower replay grad_norm --runs" in s["runs"][1][
        "replay"]
    mixed = ok(c.get("/api/series", params={"run": ids[1], "key": "train/loss"}))
    r = mixed["runs"][0]
    assert r["count"] == 61 and len(r["replayed"]) == 1 and r["y"][r["replayed"][0]] == 9.0


def test_ui_command_serves_with_a_token_beyond_loopback(demo, tmp_path):
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flowillower", "ui", "--no-browser",
                             "--host", "0.0.0.0", "--port", str(port), "--dir", str(demo[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("token=" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        token = next(line for line in lines if "token=" in line).split("token=")[1].strip()
        base = f"http://127.0.0.1:{port}"
        def answer():
            try:
                return httpx.get(f"{base}/api/info")
            except httpx.TransportError:  # not listening yet
                return None

        r = wait_for(answer, timeout=10, what="the server to listen")
        assert r.status_code == 401
        assert httpx.get(f"{base}/api/info", params={"token": token}).json()["runs"] == 6
    finally:
        proc.terminate()
        proc.wait(10)
