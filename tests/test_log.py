"""fw.init / fw.log / fw.log_metrics: values come back typed and in order."""

from __future__ import annotations

import math

import pytest

import flowillower as fw
from flowillower.errors import FlowillowerError
from flowillower.store.reader import RunReader
from tests.conftest import only_run


def test_nothing_written_before_first_value(store_dir):
    run = fw.init(project="p", name="lazy")
    fw.arg("lr", 0.1)
    # The store itself may exist already (the code snapshot is taken in the background);
    # what must not exist yet is a run folder.
    runs = store_dir / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    fw.log("loss", 1.0)
    assert run.dir.is_dir() and (run.dir / "run.json").exists()


def test_failed_setup_leaves_no_run(store_dir):
    run = fw.init(project="p")
    fw.arg("lr", 0.1)
    run.finish("failed", error="crashed during set-up")
    assert not (store_dir / "runs").exists() or not any((store_dir / "runs").iterdir())


def test_values_round_trip_with_types(store_dir):
    fw.init(project="p", name="types")
    assert fw.log("f", 0.5) == 0.5
    fw.log("i", 7)
    fw.log("b", True)
    fw.log("s", "héllo")
    fw.log("nan", float("nan"))
    fw.log("inf", float("inf"))
    fw.log("ninf", float("-inf"))
    fw.log("big", 2**80)
    fw.log("lst", [1, 2.5, "x"])
    fw.log("dct", {"a": 1, "b": [float("nan")]})
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    s = data.series
    assert s["f"].kind == "float" and s["f"].values[0] == 0.5
    assert s["i"].kind == "int" and s["i"].values[0] == 7
    assert s["b"].values[0] is True
    assert s["s"].values[0] == "héllo"
    assert math.isnan(s["nan"].values[0])
    assert s["inf"].values[0] == math.inf and s["ninf"].values[0] == -math.inf
    assert s["big"].values[0] == 2**80
    assert s["lst"].values[0] == [1, 2.5, "x"]
    assert s["dct"].values[0]["a"] == 1 and math.isnan(s["dct"].values[0]["b"][0])


def test_log_metrics_steps_and_order(store_dir):
    fw.init()
    for step in range(1000):
        fw.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.01, "acc": step / 1000}, step=step)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    loss = data.series["loss"]
    assert list(loss.step) == list(range(1000))
    assert loss.values[999] == pytest.approx(1 / 1000)
    assert (data.series["acc"].values == [s / 1000 for s in range(1000)]).all()


def test_values_without_step_get_per_key_counters(store_dir):
    fw.init()
    for i in range(3):
        fw.log("a", float(i))
    fw.log("b", 1.0)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    assert list(data.series["a"].step) == [0, 1, 2]
    assert list(data.series["b"].step) == [0]


def test_unsupported_value_names_key_and_keeps_run(store_dir):
    fw.init()
    fw.log("ok", 1.0)
    with pytest.raises(TypeError, match="'weird'"):
        fw.log_metrics({"fine": 2.0, "weird": object()}, step=1)
    fw.log("ok", 3.0)
    fw.finish()
    data = RunReader(only_run(store_dir)).load()
    assert "fine" not in data.series  # all-or-nothing per call
    assert list(data.series["ok"].values) == [1.0, 3.0]


def test_finish_writes_summary_and_status(store_dir):
    run = fw.init(name="done")
    fw.log("loss", 0.25)
    fw.finish()
    reader = RunReader(run.dir)
    assert reader.status == "success"
    assert reader.summary["last"]["loss"] == 0.25
    with pytest.raises(FlowillowerError, match="already finished"):
        run.log("loss", 1.0)


def test_implicit_run_and_new_run_after_finish(store_dir):
    fw.log("x", 1.0)  # no init: implicit run
    first = fw.current_run()
    fw.finish()
    fw.log("x", 2.0)  # a new implicit run
    second = fw.current_run()
    fw.finish()
    assert first.id != second.id
    assert len(list((store_dir / "runs").iterdir())) == 2


def test_debug_makes_everything_a_noop(store_dir):
    fw.debug(True)
    assert fw.log("x", 5) == 5
    fw.log_metrics({"a": 1.0})
    assert fw.arg("lr", 0.1) == 0.1
    assert list(fw.loop("e", range(3))) == [0, 1, 2]
    fw.finish()
    fw.debug(False)
    assert not (store_dir / "runs").exists()


def test_run_object_context_manager(store_dir):
    with fw.Run(project="p", name="ctx", dir=store_dir) as run:
        run.log("v", 1.0)
    assert RunReader(run.dir).status == "success"
    with pytest.raises(ValueError):
        with fw.Run(dir=store_dir) as run2:
            run2.log("v", 1.0)
            raise ValueError("boom")
    reader = RunReader(run2.dir)
    assert reader.status == "failed" and "boom" in reader.summary["error"]


def test_images_and_artifacts(store_dir, tmp_path):
    import numpy as np

    fw.init()
    image = np.zeros((8, 12, 3), np.uint8)
    image[2:4, 3:5] = 255
    for step in range(2):
        fw.log_image("samples/grid", image, step=step)
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00" * 100)
    fw.log_artifact("weights", artifact)
    fw.finish()
    run_dir = only_run(store_dir)
    data = RunReader(run_dir).load()
    refs = data.series["samples/grid"].values
    assert [r["$media"] for r in refs] == ["image", "image"]
    png = (run_dir / refs[1]["path"]).read_bytes()
    assert png.startswith(b"\x89PNG") and refs[1]["width"] == 12 and refs[1]["height"] == 8
    art = data.series["weights"].values[0]
    assert (run_dir / art["path"]).read_bytes() == b"\x00" * 100


def test_image_from_pil_and_matplotlib(store_dir):
    from PIL import Image

    fw.init()
    fw.log_image("pil", Image.new("RGB", (5, 4), "red"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fw.log_image("fig", fig)
    plt.close(fig)
    fw.finish()
    run_dir = only_run(store_dir)
    data = RunReader(run_dir).load()
    for key in ("pil", "fig"):
        ref = data.series[key].values[0]
        assert (run_dir / ref["path"]).read_bytes()[:4] == b"\x89PNG"


def test_image_from_encoded_bytes(store_dir):
    """PNG / GIF bytes are stored as they are, with their own size; other bytes are refused."""
    import io

    from PIL import Image

    from flowillower.errors import UnsupportedValueError

    png, gif = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (7, 3), "blue").save(png, format="PNG")
    frames = [Image.new("RGB", (9, 5), c) for c in ("red", "green")]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    fw.init()
    fw.log_image("png", png.getvalue())
    fw.log_image("anim", gif.getvalue())
    with pytest.raises(UnsupportedValueError, match="not PNG, GIF"):
        fw.log_image("junk", b"hello world, not an image")
    fw.finish()
    run_dir = only_run(store_dir)
    data = RunReader(run_dir).load()
    ref = data.series["png"].values[0]
    assert (ref["width"], ref["height"]) == (7, 3) and ref["path"].endswith(".png")
    assert (run_dir / ref["path"]).read_bytes() == png.getvalue()
    ref = data.series["anim"].values[0]
    assert (ref["width"], ref["height"]) == (9, 5) and ref["path"].endswith(".gif")
    assert "junk" not in data.series


def test_image_after_the_loop_does_not_overwrite_one_inside(store_dir):
    """Outside any loop an image gets the step after the key's last one, not 0 again."""
    import numpy as np

    fw.init()
    for epoch in fw.loop("epoch", range(3)):
        fw.log_image("samples", np.full((2, 2), epoch * 50, np.uint8))
    fw.log_image("samples", np.full((2, 2), 255, np.uint8))  # after the loop, no step
    fw.log_image("samples", np.full((2, 2), 254, np.uint8))
    fw.finish()
    run_dir = only_run(store_dir)
    series = RunReader(run_dir).load().series["samples"]
    assert list(series.step) == [0, 1, 2, 3, 4]
    paths = [ref["path"] for ref in series.values]
    assert len(set(paths)) == 5  # five files, none overwritten
