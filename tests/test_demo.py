"""The flow-matching showcase (`flowillower demo`): data, config, plots, a real tracked
training run, visualize, the quickstart with its UI data, and hindsight replay on it."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
PIL = pytest.importorskip("PIL")
pytest.importorskip("omegaconf")

from PIL import Image  # noqa: E402

from flowillower.examples.flow_matching import plots  # noqa: E402
from flowillower.examples.flow_matching.config import (  # noqa: E402
    Config,
    ConfigError,
    all_keys,
    from_dict,
    parse_overrides,
)
from flowillower.examples.flow_matching.data import GENERATORS, make_dataset  # noqa: E402
from flowillower.examples.flow_matching.metrics import (  # noqa: E402
    chamfer_distance,
    energy_distance,
)
from flowillower.examples.flow_matching.model import (  # noqa: E402
    VelocityNet,
    integrate,
    noise,
    velocity_grid,
)
from flowillower.store.catalog import Store  # noqa: E402
from tests.conftest_git import git  # noqa: E402

TRAIN = Path(__file__).resolve().parents[1] / "src/flowillower/examples/flow_matching/train.py"
# Small but real: 1,024 points, 4 batches per epoch.
SMALL = ["data.n_samples=1024", "evaluation.n_samples=256", "visualization.n_samples=300",
         "visualization.n_sampling_steps=20", "training.threads=1", "training.log_interval=0"]


def cli(*args: str, cwd: Path, store: Path | None = None, check: bool = True,
        timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FLOWILLOWER_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    if store is not None:
        env["FLOWILLOWER_DIR"] = str(store)
    proc = subprocess.run([sys.executable, "-m", "flowillower", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"flowillower {args} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


# -- data ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_datasets_shapes_ranges_and_determinism(name):
    points = make_dataset(name, 3000, 0.02, seed=7)
    assert points.shape == (3000, 2) and points.dtype == np.float32
    assert np.abs(points).max() == pytest.approx(1.0) and np.isfinite(points).all()
    # Centred on the bounding box: both sides of each axis are used.
    assert points.min(0).max() < -0.3 and points.max(0).min() > 0.3
    assert np.array_equal(points, make_dataset(name, 3000, 0.02, seed=7))
    assert not np.array_equal(points, make_dataset(name, 3000, 0.02, seed=8))


def test_trex_has_its_parts():
    """Head up and right, tail far left, legs down: mass where a T-Rex has it."""
    p = make_dataset("trex", 20000, 0.0, seed=0)
    head = (p[:, 0] > 0.6) & (p[:, 1] > 0.3)
    tail = p[:, 0] < -0.7
    legs = p[:, 1] < p[:, 1].min() + 0.25
    assert head.mean() > 0.03 and tail.mean() > 0.02 and legs.mean() > 0.02
    # Nothing in the empty corner under the tail and nothing above the tail tip.
    assert ((p[:, 0] < -0.6) & (p[:, 1] < -0.4)).sum() == 0
    assert ((p[:, 0] < -0.6) & (p[:, 1] > 0.4)).sum() == 0
    # Noise widens the cloud a little, never beyond [-1, 1].
    noisy = make_dataset("trex", 20000, 0.05, seed=0)
    assert np.abs(noisy).max() <= 1.0 + 1e-6


def test_dataset_errors():
    with pytest.raises(ValueError, match="unknown data set 'cat'"):
        make_dataset("cat", 10)
    with pytest.raises(ValueError, match="n_samples"):
        make_dataset("trex", 0)


# -- configuration ------------------------------------------------------------------------
def test_overrides_parse_into_typed_config():
    cfg = parse_overrides(["training.n_epochs=500", "model.hidden_dims=[256,512,512,256]",
                           "data.noise=0.05", "visualization.sampler=midpoint",
                           "tracking.name='lr sweep'", "visualization.gif=false"])
    assert cfg.training.n_epochs == 500 and cfg.model.hidden_dims == [256, 512, 512, 256]
    assert cfg.data.noise == 0.05 and cfg.visualization.sampler == "midpoint"
    assert cfg.tracking.name == "lr sweep" and cfg.visualization.gif is False
    defaults = Config()
    assert (defaults.data.n_samples, defaults.data.noise, defaults.training.learning_rate,
            defaults.training.batch_size, defaults.training.n_epochs, defaults.training.seed,
            defaults.model.time_embed_dim, defaults.model.hidden_dims,
            defaults.visualization.n_sampling_steps, defaults.visualization.grid_size) == (
        10_000, 0.02, 0.003, 256, 300, 42, 64, [128, 256, 256, 128], 100, 20)
    assert "training.learning_rate" in all_keys() and len(all_keys()) == len(set(all_keys()))
    # The recorded (flat) form rebuilds the same config.
    from flowillower.args import flatten_config
    from flowillower.examples.flow_matching.config import to_dict

    assert from_dict(flatten_config(to_dict(cfg))) == cfg


@pytest.mark.parametrize("overrides, expected", [
    (["training.n_epoch=5"], r"training\.n_epoch: no such setting; did you mean training\.n_epochs"),
    (["training.n_epochs=abc"], r"training\.n_epochs=abc: expected an integer"),
    (["training.n_epochs=1.5"], r"expected an integer"),
    (["model.hidden_dims=256"], r"model\.hidden_dims=256: expected a list"),
    (["model.hidden_dims=[a,b]"], r"expected a list"),
    (["visualization.gif=maybe"], r"expected true or false"),
    (["learning_rate"], r"'learning_rate': expected key=value"),
    (["+extra.key=1"], r"adding or deleting keys is not supported"),
    (["data.name=cat"], r"data\.name='cat': choose one of trex, moons"),
    (["training.learning_rate=-1"], r"must be a positive number"),
    (["data.noise=nan"], r"finite number"),
    (["visualization.times=[0,2]"], r"times in \[0, 1\]"),
    (["training.device=tpu"], r"use auto, cpu, cuda"),
    (["tracking.name='unclosed"], r"tracking\.name='unclosed: expected a string"),
    (["tracking.checkpoint_overhead=1.5"], r"checkpoint_overhead=1\.5: must be a fraction"),
    (["tracking.checkpoint_disk=lots"], r"checkpoint_disk='lots': must be a size like 500MB"),
])
def test_bad_overrides_fail_clearly(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_overrides(overrides)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        parse_overrides(["data.name=cat", "training.batch_size=0", "model.hidden_dims=[]"])
    text = str(info.value)
    assert text.startswith("invalid demo configuration")
    assert "data.name" in text and "training.batch_size" in text and "model.hidden_dims" in text


# -- model, sampling, metrics --------------------------------------------------------------
def test_integrate_keeps_frames_and_samplers_agree_on_a_known_field():
    class Rotate(torch.nn.Module):  # v = (-y, x): a rotation by 1 radian over t in [0, 1]
        def forward(self, x, t):
            return torch.stack([-x[:, 1], x[:, 0]], 1)

    x0 = torch.tensor([[1.0, 0.0]])
    exact = torch.tensor([[np.cos(1.0), np.sin(1.0)]], dtype=torch.float32)
    euler, frames = integrate(Rotate(), x0, 200, "euler", keep=[0.0, 0.5, 0.5, 1.0])
    midpoint, _ = integrate(Rotate(), x0, 20, "midpoint")
    assert torch.allclose(euler, exact, atol=5e-3)
    assert torch.allclose(midpoint, exact, atol=5e-4)  # second order: 10x fewer steps, closer
    assert sorted(frames) == [0.0, 0.5, 1.0] and torch.equal(frames[0.0], x0)
    with pytest.raises(ValueError, match="unknown sampler"):
        integrate(Rotate(), x0, 2, "rk4")


def test_velocity_net_shapes_and_grid():
    net = VelocityNet(2, 16, [32, 32])
    out = net(torch.zeros(5, 2), torch.zeros(5, 1))
    assert out.shape == (5, 2)
    points, v = velocity_grid(net, 0.5, grid_size=7)
    assert points.shape == (49, 2) and v.shape == (49, 2)
    assert points.min() == -1.5 and points.max() == 1.5


def test_distances():
    x = noise(400, seed=1)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert chamfer_distance(x, x) == 0.0
    shifted = x + torch.tensor([1.0, 0.0])
    assert energy_distance(x, shifted) > 0.3 and chamfer_distance(x, shifted) > 0.1
    # Exact values on a tiny case: one point each, 5 apart; two points 2 apart vs their middle.
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert energy_distance(a, b) == pytest.approx(10.0) and chamfer_distance(a, b) == 5.0
    pair, middle = torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert energy_distance(pair, middle) == pytest.approx(2 * 1 - 1 - 0)
    assert chamfer_distance(pair, middle) == pytest.approx(1.0)
    # Closer clouds score lower on both.
    assert energy_distance(x, x + 0.1) < energy_distance(x, shifted)
    assert chamfer_distance(x, x + 0.1) < chamfer_distance(x, shifted)


# -- plots ---------------------------------------------------------------------------------
def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_plots_are_valid_images_of_the_expected_size():
    rng = np.random.default_rng(0)
    target, generated = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    height = plots.PANEL + plots.HEADER
    png = _image(plots.comparison(target, generated, "title"))
    assert png.format == "PNG" and png.size == (2 * plots.PANEL, height)
    png = _image(plots.trajectory({t: generated * t for t in times}, target))
    assert png.size == (5 * plots.PANEL, height)
    grid = rng.normal(size=(400, 2))
    png = _image(plots.vector_field([(t, grid, -grid) for t in times[:3]], target))
    assert png.size == (3 * plots.PANEL, height)
    # The generated cloud is drawn in its colour, the target in another, on white.
    colours = {tuple(c) for c in np.asarray(_image(plots.comparison(target, generated)
                                                   ).convert("RGB")).reshape(-1, 3)}
    assert plots.SAMPLE in colours and plots.TARGET in colours and plots.WHITE in colours
    gif = _image(plots.gif([generated * (i / 4) for i in range(5)], target))
    assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (plots.PANEL,) * 2


def test_plots_survive_odd_points():
    """NaN, infinite and far-away points are skipped, not drawn or crashed on."""
    odd = np.array([[np.nan, 0.0], [np.inf, 1.0], [1e9, -1e9], [0.0, 0.0]])
    assert _image(plots.comparison(odd, odd)).size[0] == 2 * plots.PANEL
    grid = np.zeros((4, 2))
    assert _image(plots.vector_field([(0.0, grid, np.zeros((4, 2)))])).size[0] == plots.PANEL


# -- a real tracked training run ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 12-epoch demo run through `flowillower demo train`, in a folder outside git."""
    work = tmp_path_factory.mktemp("demo-train")
    store = work / ".flowillower"
    proc = cli("demo", "train", *SMALL, "training.n_epochs=12", "visualization.image_every=4",
               "tracking.watch_every=2", "tracking.name=small", cwd=work, store=store)
    return work, store, proc


def test_training_records_everything(trained):
    work, store, proc = trained
    assert "samples: energy distance" in proc.stdout and "recorded in" in proc.stdout
    s = Store(store)
    (row,) = s.runs()
    assert row["status"] == "success" and row["name"] == "small"
    assert row["project"] == "flow-matching"
    data = s.reader(row["id"]).load()
    args = {name: ser.last() for name, ser in data.series.items() if ser.role == "arg"}
    # The whole resolved config: every key, "auto" resolved to the device used.
    assert set(all_keys()) <= set(args)
    assert args["training.device"] == "cpu" and args["data.n_samples"] == 1024
    assert args["model.hidden_dims"] == [128, 256, 256, 128]

    loss = data.series["loss"].values.astype(float)
    assert len(loss) == 12 * 4 and np.isfinite(loss).all()
    epoch_loss = data.series["epoch_loss"].values.astype(float)
    assert len(epoch_loss) == 12 and epoch_loss[-3:].mean() < epoch_loss[0] * 0.8
    energy = data.series["energy_distance"].values.astype(float)
    chamfer = data.series["chamfer_distance"].values.astype(float)
    assert len(energy) == 12 and energy[-3:].mean() < energy[0] * 0.7
    assert chamfer[-3:].mean() < chamfer[0]
    lr = data.series["lr"].values.astype(float)
    assert lr[0] == pytest.approx(0.003) and lr[-1] < lr[0] / 10  # cosine decay

    run_dir = store / "runs" / row["id"]
    # Pictures at epochs 4 and 8 (0-based steps 3, 7) and after training (step 11).
    for key in ("comparison", "trajectory", "vector_field"):
        refs = data.series[key].values
        assert [r["$media"] for r in refs] == ["image"] * 3
        assert list(data.series[key].step) == [3, 7, 11]
        for ref in refs:
            assert (run_dir / ref["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gif = data.series["flow_gif"].values[0]
    # 26 times over 20 sampling steps: Pillow merges the repeated frames into 21.
    assert _image((run_dir / gif["path"]).read_bytes()).n_frames == 21
    assert (run_dir / "model" / "graph.json").is_file()
    assert any(name.startswith("act/") for name in data.series)  # fw.watch statistics
    assert (run_dir / "checkpoints" / "manifest.jsonl").is_file()
    from flowillower.hindsight.checkpoint import CheckpointStore

    meta = CheckpointStore(run_dir).meta  # the demo's budgets reach fw.checkpointing
    assert meta["max_overhead"] == 0.005 and meta["max_disk"] == 10**9
    weights = next((run_dir / "artifacts").glob("velocity_net-*/*/velocity_net.pt"))
    state = torch.load(weights, weights_only=True)
    assert state["net.0.weight"].shape == (128, 2 + 64)
    assert data.series["final_energy_distance"].last() < energy[0]


def test_untracked_training_writes_nothing(tmp_path):
    store = tmp_path / ".flowillower"
    proc = cli("demo", "train", *SMALL, "training.n_epochs=2", "tracking.enabled=false",
               cwd=tmp_path, store=store, check=False)
    assert proc.returncode != 0  # the CLI says no run was recorded
    assert "recorded no run" in proc.stderr
    assert "samples: energy distance" in proc.stdout  # but it did train
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_bad_override_is_refused_before_training(tmp_path):
    store = tmp_path / ".flowillower"
    proc = cli("demo", "train", "training.n_epochs=abc", "model.hidden=[1]", cwd=tmp_path,
               store=store, check=False)
    assert proc.returncode == 2
    assert "training.n_epochs" not in proc.stdout
    assert "model.hidden: no such setting; did you mean model.hidden_dims" in proc.stderr
    assert not (store / "runs").exists()
    # The script itself refuses the same way (a replay or a direct run).
    direct = subprocess.run([sys.executable, str(TRAIN), "training.batch_size=0"],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "FLOWILLOWER_DIR": str(store)})
    assert direct.returncode == 2 and "training.batch_size=0: must be >= 1" in direct.stderr


def test_visualize_a_finished_run(trained, tmp_path):
    work, store, _ = trained
    out = tmp_path / "pictures"
    proc = cli("demo", "visualize", "--out", str(out), "visualization.sampler=midpoint",
               "visualization.times=[0,0.5,1]", cwd=work, store=store)
    files = sorted(p.name for p in (out / "small").iterdir())
    assert files == ["comparison.png", "flow.gif", "trajectory.png", "vector_field.png"]
    assert proc.stdout.count("wrote ") == 4
    trajectory = _image((out / "small" / "trajectory.png").read_bytes())
    assert trajectory.size == (3 * plots.PANEL, plots.PANEL + plots.HEADER)
    # Only pictures can change after training; unknown runs are named.
    bad = cli("demo", "visualize", "model.hidden_dims=[8]", cwd=work, store=store,
              check=False)
    assert bad.returncode == 2 and "only visualization.* settings" in bad.stderr
    missing = cli("demo", "visualize", "--run", "nope", cwd=work, store=store, check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr


# -- the main job --------------------------------------------------------------------------
def test_quickstart_end_to_end_without_ui(tmp_path):
    """Two runs with different learning rates, side by side, then the runs table; the UI's
    API serves both with overlaid loss series, pictures and the model graph."""
    store = tmp_path / ".flowillower"
    proc = cli("demo", "quickstart", "--no-ui", "--epochs", "3", *SMALL, cwd=tmp_path,
               store=store)
    assert "training 2 runs x 3 epochs" in proc.stdout
    assert re.search(r"\[lr-0\.001\] run \S+ \(lr-0\.001\) recorded", proc.stdout)
    assert re.search(r"\[lr-0\.003\] run \S+ \(lr-0\.003\) recorded", proc.stdout)
    assert "lr-0.001" in proc.stdout.split("trained in")[1]  # the runs table follows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from flowillower.server.app import create_app

    with TestClient(create_app(store), base_url="http://127.0.0.1:8686") as client:
        table = client.get("/api/runs").json()
        names = sorted(row["name"] for row in table["rows"])
        assert names == ["lr-0.001", "lr-0.003"] and table["matched"] == 2
        ids = [row["id"] for row in table["rows"]]
        series = client.get("/api/series", params={"run": ids, "key": "loss"}).json()
        assert len(series["runs"]) == 2 and all(len(r["y"]) == 12 for r in series["runs"])
        run = client.get(f"/api/runs/{ids[0]}").json()
        assert {"comparison", "trajectory", "vector_field", "flow_gif"} <= set(
            run["keys"]["image"])
        assert run["models"] == [""]
        media = client.get(f"/api/runs/{ids[0]}/media", params={"key": "flow_gif"}).json()
        picture = client.get(f"/api/runs/{ids[0]}/files/{media['items'][0]['path']}")
        assert picture.status_code == 200 and picture.content[:6] == b"GIF89a"
        graph = client.get(f"/api/runs/{ids[0]}/model")
        assert graph.status_code == 200 and "VelocityNet" in graph.text


def test_quickstart_rejects_bad_options(tmp_path):
    bad = cli("demo", "quickstart", "--no-ui", "--lrs", "fast", cwd=tmp_path,
              store=tmp_path / ".flowillower", check=False)
    assert bad.returncode == 2 and "--lrs" in bad.stderr
    bad = cli("demo", "quickstart", "--no-ui", "data.name=cat", cwd=tmp_path,
              store=tmp_path / ".flowillower", check=False)
    assert bad.returncode == 2 and "data.name='cat'" in bad.stderr


# -- hindsight logging on the demo --------------------------------------------------------
GRAD_NORM = ('                fw.log("grad_norm", torch.nn.utils.get_total_norm(\n'
             '                    [p.grad for p in model.parameters()]).item())\n')


def test_replay_grad_norm_into_demo_runs_bit_for_bit(tmp_path):
    """The README walkthrough: add a fw.log line to the demo script, replay it into a past
    run; the values equal a fresh run of the edited script, and the repo is untouched."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copy(TRAIN, repo / "train.py")
    git(repo, "add", "train.py")
    git(repo, "commit", "-qm", "demo script")
    args = [*SMALL, "training.n_epochs=5", "tracking.watch_every=0",
            "visualization.image_every=0", "visualization.gif=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FLOWILLOWER_DIR", None)
    subprocess.run([sys.executable, "train.py", *args], cwd=repo, env=env, check=True,
                   capture_output=True)

    source = (repo / "train.py").read_text()
    anchor = "                loss.backward()\n"
    assert source.count(anchor) == 1
    (repo / "train.py").write_text(source.replace(anchor, anchor + GRAD_NORM))
    before = git(repo, "status", "--porcelain")
    proc = cli("replay", "grad_norm", "-y", cwd=repo)
    report = proc.stdout + proc.stderr  # the report goes to stderr, like progress
    assert "replayed  grad_norm: 20 values" in report
    assert git(repo, "status", "--porcelain") == before  # only the user's own edit

    # A fresh run of the edited script, same arguments: the same values, bit for bit.
    subprocess.run([sys.executable, "train.py", *args], cwd=repo, env=env, check=True,
                   capture_output=True)
    store = Store(repo / ".flowillower")
    old, new = sorted(store.runs(), key=lambda r: r["id"])
    replayed = store.reader(old["id"]).load().series["grad_norm"]
    fresh = store.reader(new["id"]).load().series["grad_norm"]
    assert replayed.replayed.all() and not fresh.replayed.any()
    assert len(replayed.values) == 20
    assert np.array_equal(replayed.values, fresh.values)
    assert np.array_equal(replayed.step, fresh.step)


def test_demo_docs_python_example_runs(tmp_path, monkeypatch, capsys):
    """docs/demo.md's 'From Python' example runs as written."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "demo.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if b.startswith("import")]
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/demo.md", "exec"), {})
    assert "bytes of PNG" in capsys.readouterr().out


def test_every_setting_is_documented():
    """docs/demo.md's settings table names every key `flowillower demo keys` prints."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "demo.md").read_text()
    assert [key for key in all_keys() if f"`{key}`" not in text] == []
