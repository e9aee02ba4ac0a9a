"""Bounded memory: a long run with nested loops keeps no per-iteration state."""

from __future__ import annotations

SCRIPT = """
import os, sys
import flowillower as fw

page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page

fw.init(project="memory", snapshot=False)
for epoch in fw.loop("epoch", range(20), progress=False):
    for step in fw.loop("step", range(10_000), progress=False):
        fw.log("loss", 1.0 / (step + 1))
    # Measured with nothing waiting for the writer: what is left is what the run keeps.
    fw.flush()
    print(rss(), flush=True)
fw.finish()
"""


def test_rss_does_not_grow_with_iterations(run_script, store_dir):
    proc = run_script(SCRIPT)
    rss = [int(line) for line in proc.stdout.split()]
    assert len(rss) == 20
    growth = max(rss[3:]) - rss[2]
    # The previous code kept a context id per (epoch, step): ~+45 MB over these epochs.
    assert growth <= 10 * 2**20, [round(r / 2**20, 1) for r in rss]
    # And every value was recorded, at coordinates that are still right.
    from flowillower.store.reader import RunReader

    (run_dir,) = list((store_dir / "runs").iterdir())
    data = RunReader(run_dir).load(["loss"])
    loss = data.series["loss"]
    assert len(loss.values) == 200_000
    coords = data.ctx_coords[loss.ctx]
    epoch = coords[:, data.loop_names.index("epoch")]
    step = coords[:, data.loop_names.index("step")]
    assert (epoch == loss.step // 10_000).all() and (step == loss.step % 10_000).all()
    assert (loss.values == 1.0 / (step + 1)).all()


def test_reentered_coordinates_read_as_one_context():
    import flowillower as fw
    from flowillower.store.reader import RunReader

    run = fw.init(project="memory", snapshot=False)
    with fw.iteration("epoch", 0):
        fw.log("a", 1.0)
    for _ in fw.loop("other", range(3000), progress=False):
        pass  # enough contexts to push epoch=0 out of the run's context cache
    with fw.iteration("epoch", 0):
        fw.log("a", 2.0)
    fw.finish()
    data = RunReader(run.dir).load(["a"])
    a = data.series["a"]
    assert a.values.tolist() == [1.0, 2.0]
    assert a.ctx[0] == a.ctx[1]  # one context in what readers see
    assert data.ctx_coords[a.ctx[0]].tolist()[data.loop_names.index("epoch")] == 0
