"""Jupyter: nbclient executes a real .ipynb on a real ipykernel (the kernel installed in
this environment): the run is recorded under the notebook's name, the notebook and the
executed cells are recorded with it, the code snapshot holds the .ipynb, `fw.show()` and
a run as a cell's value embed the local UI, which answers and may be framed locally."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.store.reader import RunReader

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "jupyter.md"
# The page's notebook, one cell per block, then a cell run after the run ended.
DOC_CELLS = [b.strip() for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)]
CELLS = [*DOC_CELLS, 'print("after the run")']


def _execute(folder: Path, cells: list[str], name: str = "analysis.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / name
    nbformat.write(nb, path)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb


def _html(outputs: list) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs)


@pytest.fixture
def notebook_run(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("PYTHONPATH", str(Path(fw.__file__).resolve().parent.parent))
    monkeypatch.setenv("FLOWILLOWER_DIR", str(folder / ".flowillower"))
    for var in ("JPY_SESSION_NAME", "FLOWILLOWER_NOTEBOOK"):
        monkeypatch.delenv(var, raising=False)
    nb = _execute(folder, CELLS)
    (run_dir,) = list((folder / ".flowillower" / "runs").iterdir())
    return folder, nb, run_dir


def test_notebook_run_is_recorded_with_its_notebook(notebook_run) -> None:
    folder, nb, run_dir = notebook_run
    reader = RunReader(run_dir)
    meta, summary = reader.meta, json.loads((run_dir / "summary.json").read_text())
    assert meta["project"] == "notebook" and summary["status"] == "success"
    assert meta["name"].startswith("analysis-")  # not ipykernel_launcher-...
    assert summary["unused_kwargs"] == [] and summary["args"] == {}  # `-f kernel.json`
    assert reader.load(["loss"]).series["loss"].values.tolist() == [1.0, 0.5, 1 / 3]
    record = json.loads((run_dir / "notebook.json").read_text())
    assert record["path"] == str((folder / "analysis.ipynb").resolve())
    # The executed cells in order, up to the cell that ended the run.
    assert [c["source"] for c in record["cells"]] == DOC_CELLS
    copy = nbformat.read(run_dir / record["copy"], as_version=4)
    assert [c.source for c in copy.cells] == CELLS
    # The working tree's code snapshot holds the saved notebook too.
    from flowillower.gitops.snapshot import read_file

    sha = meta["git"]["snapshot"]
    stored = read_file(folder / ".flowillower" / "git", sha, "analysis.ipynb")
    stored = stored.decode() if isinstance(stored, bytes) else stored
    assert ["".join(c["source"]) for c in json.loads(stored)["cells"]] == CELLS


def test_show_embeds_the_local_ui(notebook_run) -> None:
    folder, nb, run_dir = notebook_run
    run_id = run_dir.name
    shown, rich = _html(nb.cells[3].outputs), _html(nb.cells[4].outputs)
    assert '<iframe src="http://127.0.0.1:' in shown and f"#/charts?sel={run_id}" in shown
    assert f"#/run/{run_id}?sel={run_id}" in rich
    assert nb.cells[6].outputs[0]["text"] == "after the run\n"
    # The kernel is gone with its server; the same embed served here answers and may be
    # framed by a local notebook page (the UI forbids framing anywhere else).
    from flowillower.integrations.jupyter import embed_html

    markup = embed_html([run_id], "charts", dir=folder / ".flowillower")
    url = markup.split('src="', 1)[1].split("#", 1)[0]
    with urllib.request.urlopen(url + "api/runs", timeout=30) as response:
        body = json.loads(response.read())
    assert run_id in json.dumps(body)
    with urllib.request.urlopen(url, timeout=30) as response:
        csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'self' http://localhost:*" in csp
    assert "frame-ancestors 'none'" not in csp


def test_show_outside_a_notebook_prints_the_address(tmp_path, capsys) -> None:
    from flowillower.integrations.jupyter import show

    run = fw.init()
    fw.log("x", 1.0)
    show()
    out = capsys.readouterr().out
    assert out.startswith("flowillower UI: http://127.0.0.1:")
    assert f"#/charts?sel={run.id}" in out


def test_notebook_found_by_session_variable(tmp_path, monkeypatch) -> None:
    """Jupyter Server tells the kernel its notebook ($JPY_SESSION_NAME): that file wins
    over any other notebook in the folder."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    other = folder / "real.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), other)
    monkeypatch.setenv("PYTHONPATH", str(Path(fw.__file__).resolve().parent.parent))
    monkeypatch.setenv("FLOWILLOWER_DIR", str(folder / ".flowillower"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(other))
    _execute(folder, [CELLS[0], 'fw.log("x", 1.0)', "fw.finish()"], "decoy.ipynb")
    (run_dir,) = list((folder / ".flowillower" / "runs").iterdir())
    assert json.loads((run_dir / "notebook.json").read_text())["path"] == str(other.resolve())
    assert json.loads((run_dir / "run.json").read_text())["name"].startswith("real-")
    assert os.path.isfile(run_dir / "notebook" / "real.ipynb")


def test_a_notebook_left_out_of_snapshots_stays_out_of_the_run(tmp_path, monkeypatch) -> None:
    """`.flowillowerignore` keeps a notebook out of code snapshots (they travel with
    push); its copy and its cells then stay out of the run as well."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / ".flowillowerignore").write_text("secret-*.ipynb\n")
    monkeypatch.setenv("PYTHONPATH", str(Path(fw.__file__).resolve().parent.parent))
    monkeypatch.setenv("FLOWILLOWER_DIR", str(folder / ".flowillower"))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    token = 'api_key = "sk-not-for-the-store"'
    _execute(folder, [CELLS[0], token, 'fw.log("x", 1.0)', "fw.finish()"], "secret-nb.ipynb")
    (run_dir,) = list((folder / ".flowillower" / "runs").iterdir())
    record = json.loads((run_dir / "notebook.json").read_text())
    assert record["path"] == str((folder / "secret-nb.ipynb").resolve())
    assert record["copy"] is None and record["cells"] == [] and record["left_out"]
    assert not (run_dir / "notebook").exists()
    assert not any("sk-not-for-the-store" in p.read_text(errors="replace")
                   for p in run_dir.rglob("*") if p.is_file())


def test_a_local_page_shows_the_embedded_ui_and_only_ours_is_frameable(tmp_path, page) -> None:
    """In a real browser, the IFrame `show` puts into a page served from a local port
    (where Jupyter serves notebooks) shows the runs table; the plain `flowillower ui`
    server, which forbids framing, stays blank in the same IFrame."""
    from flowillower.integrations.jupyter import embed_html
    from tests.conftest import static_server, ui_server, wait_for

    run = fw.init(project="framed")
    fw.log("loss", 0.5)
    fw.finish()
    store = run.store_root
    markup = embed_html(page="runs", dir=store)
    site = tmp_path / "site"
    site.mkdir()
    (site / "nb.html").write_text(f"<html><body>{markup}</body></html>")
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    with ui_server(store) as plain_url, static_server(site) as url:
        refused = markup.replace(markup.split('src="', 1)[1].split("#", 1)[0], plain_url)
        (site / "plain.html").write_text(f"<html><body>{refused}</body></html>")
        page.goto(url + "nb.html")
        frame = wait_for(lambda: next((f for f in page.frames if f is not page.main_frame
                                       and "/#/" in f.url), None), timeout=30)
        frame.wait_for_selector(f"table.runs tr[data-id='{run.id}']")
        assert not [m for m in console if "frame-ancestors" in m], console
        page.goto(url + "plain.html")
        wait_for(lambda: [m for m in console if "frame-ancestors" in m], timeout=30,
                 what="chromium to refuse framing the plain UI")
