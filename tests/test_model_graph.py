"""Model tree, probe graph, views and summary on small real models (CPU)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Any

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from models import FakeRun, Twice, mlp  # noqa: E402

from flowillower.model import (  # noqa: E402
    capture_graph,
    collapse,
    format_summary,
    log_model,
    module_tree,
    op_view,
)


@pytest.fixture(autouse=True)
def _torch_setup() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


# -- helpers ---------------------------------------------------------------------------
def node(graph: dict, nid: str) -> dict:
    found = [n for n in graph["nodes"] if n["id"] == nid]
    assert found, f"no node {nid!r} in {[n['id'] for n in graph['nodes']]}"
    return found[0]


def modules_called(graph: dict) -> list[tuple[str, int]]:
    return [(n["path"], n["call"]) for n in graph["nodes"] if n["kind"] == "module"]


def edge_set(view: dict) -> set[tuple[str, str]]:
    return {(e["src"], e["dst"]) for e in view["edges"]}


def edge(view: dict, src: str, dst: str) -> dict:
    found = [e for e in view["edges"] if e["src"] == src and e["dst"] == dst]
    assert found, f"no edge {src} -> {dst} in {sorted(edge_set(view))}"
    return found[0]


def ops_in(graph: dict, group: str) -> list[str]:
    return [n["type"] for n in graph["nodes"] if n["kind"] == "op" and n["group"] == group]


# -- models ----------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / (d // self.heads) ** 0.5)
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool).triu(1)
            att = att.masked_fill(mask, float("-inf"))
        y = att.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class BranchyBlock(nn.Module):
    """Layer norm, attention, a residual connection and a Python `if` on the input."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = Attention(d, 2)
        self.ff = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln(x))  # residual
        if x.mean() > 0:  # data-dependent Python control flow
            return x + torch.relu(self.ff(x))
        return x * 2


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    hidden: torch.Tensor
    extra: Any = None


class DataclassModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 7)
        self.head = nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> Out:
        h = self.body(x)
        return Out(logits=self.head(h), hidden=h, extra="not a tensor")


class DictModel(DataclassModel):
    def forward(self, x: torch.Tensor) -> dict:  # type: ignore[override]
        h = self.body(x)
        return {"logits": self.head(h), "features": [h, h.sum(-1)]}


class FakeModelOutput(OrderedDict):
    """Like transformers' ModelOutput: an OrderedDict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class HFStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.encoder = nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> FakeModelOutput:
        h = self.embed(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        out = FakeModelOutput(last_hidden_state=self.encoder(h))
        if output_hidden_states:
            out["hidden_states"] = (h,)
        return out


class GPTBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = Attention(d, 2, causal=True)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 32, d: int = 16, n_layer: int = 2, ctx: int = 8) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GPTBlock(d) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        b, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc(self.dropout(x))


# -- module tree -----------------------------------------------------------------------
def test_tree_of_mlp_counts_shapes_and_frozen_parameters() -> None:
    model = mlp()
    model[0].weight.requires_grad_(False)
    tree = module_tree(model)
    assert tree["root"] == "Sequential"
    assert tree["params"] == sum(p.numel() for p in model.parameters()) == 8 * 16 + 16 + 16 * 3 + 3
    assert tree["frozen"] == 8 * 16
    assert tree["trainable"] == tree["params"] - 8 * 16
    assert tree["dtypes"] == ["float32"] and tree["devices"] == ["cpu"]
    mods = {m["path"]: m for m in tree["modules"]}
    assert list(mods) == ["", "0", "1", "2"]
    assert mods[""]["children"] == ["0", "1", "2"]
    assert mods["0"]["type"] == "Linear" and mods["0"]["depth"] == 1
    w = {p["name"]: p for p in mods["0"]["parameters"]}
    assert w["weight"]["shape"] == [16, 8] and w["weight"]["trainable"] is False
    assert w["bias"]["shape"] == [16] and w["bias"]["trainable"] is True
    assert mods["0"]["params"] == 8 * 16 + 16 and mods["0"]["trainable"] == 16
    assert mods["1"]["params"] == 0 and mods["1"]["parameters"] == []
    assert "in_features=8" in mods["0"]["extra"]


def test_tree_counts_tied_weights_once_and_lists_buffers() -> None:
    gpt = TinyGPT()
    tree = module_tree(gpt)
    unique = sum(p.numel() for p in gpt.parameters())  # parameters() deduplicates
    assert tree["params"] == unique
    head = next(m for m in tree["modules"] if m["path"] == "lm_head")
    assert head["parameters"][0]["tied"] == "wte.weight"
    conv = module_tree(ConvNet())
    bn = next(m for m in conv["modules"] if m["type"] == "BatchNorm2d")
    assert {b["name"] for b in bn["buffers"]} == {"running_mean", "running_var",
                                                  "num_batches_tracked"}
    assert conv["buffers"] == 8 + 8 + 1


# -- graphs ----------------------------------------------------------------------------
def test_mlp_graph_module_view_chain_with_edge_shapes() -> None:
    graph = capture_graph(mlp(), torch.randn(4, 8))
    assert graph["format"] == "flowillower.graph/1" and graph["error"] is None
    assert modules_called(graph) == [("", 0), ("0", 0), ("1", 0), ("2", 0)]
    view = collapse(graph)
    ids = [n["id"] for n in view["nodes"]]
    assert ids == ["in:input", "m:0:0", "m:1:0", "m:2:0", "out:output"]  # Sequential(input)
    assert edge(view, "in:input", "m:0:0")["shape"] == [4, 8]
    assert edge(view, "m:0:0", "m:1:0")["shape"] == [4, 16]
    assert edge(view, "m:1:0", "m:2:0")["shape"] == [4, 16]
    assert edge(view, "m:2:0", "out:output")["shape"] == [4, 3]
    assert all(e["dtype"] == "float32" for e in view["edges"])
    first = node(graph, "m:0:0")
    assert first["params"] == 8 * 16 + 16 and first["type"] == "Linear"
    assert first["in_shapes"] == [[4, 8]] and first["out_shapes"] == [[4, 16]]
    assert first["parent"] == "" and first["group"] == "m::0"
    assert "act/0/mean" in first["series"] and "grad/0.weight/norm" in first["series"]
    assert ops_in(graph, "m:0:0") == ["linear"]
    # The raw graph: the root call, one call per layer and the op inside each, in order.
    assert [n["id"] for n in graph["nodes"]] == [
        "in:input", "m::0", "m:0:0", "o0", "m:1:0", "o1", "m:2:0", "o2", "out:output"]
    assert [(n["id"], n["type"]) for n in graph["nodes"] if n["kind"] == "op"] == [
        ("o0", "linear"), ("o1", "relu"), ("o2", "linear")]
    assert [(e["src"], e["dst"], e["shape"]) for e in graph["edges"]] == [
        ("in:input", "o0", [4, 8]), ("o0", "o1", [4, 16]), ("o1", "o2", [4, 16]),
        ("o2", "out:output", [4, 3])]
    assert node(graph, "o0")["in_shapes"] == [[4, 8], [16, 8], [16]]  # x, weight, bias
    assert node(graph, "m::0")["params"] == 195 == graph["tree"]["params"]
    assert [node(graph, f"m:{i}:0")["params"] for i in range(3)] == [144, 0, 51]
    assert graph["hierarchy"] == {"": ["0", "1", "2"], "0": [], "1": [], "2": []}
    assert graph["probed"] is True and graph["truncated"] is False
    # Plain JSON: it survives a strict round trip unchanged (no tuples, NaN or tensors).
    assert json.loads(json.dumps(graph, allow_nan=False)) == graph


def test_transformer_block_residual_and_the_branch_taken() -> None:
    block = BranchyBlock()
    with torch.no_grad():
        block.ln.bias.fill_(0.0)
    pos = torch.randn(2, 5, 16) + 3.0  # mean > 0 after the residual: relu branch
    g_pos = capture_graph(block, pos)
    g_neg = capture_graph(block, -pos - 6.0)
    for g in (g_pos, g_neg):
        assert g["error"] is None
        # depth 1: the attention module is one node
        view = collapse(g, depth=1)
        adds = [n["id"] for n in view["nodes"] if n["type"] == "add" and n["parent"] == ""]
        # the residual: the input and the attention output both feed one add
        residual = adds[0]
        assert edge(view, "in:x", residual)["shape"] == [2, 5, 16]
        assert edge(view, "m:attn:0", residual)["shape"] == [2, 5, 16]
        assert ("in:x", "m:ln:0") in edge_set(view)
        assert ("m:ln:0", "m:attn:0") in edge_set(view)
        # default view: attn calls modules, so it opens up to its qkv / proj calls
        default = collapse(g)
        assert ("m:attn.proj:0", residual) in edge_set(default)
        assert ("m:ln:0", "m:attn.qkv:0") in edge_set(default)
    taken = [p for p, _ in modules_called(g_pos)]
    assert "ff" in taken and "ff" not in [p for p, _ in modules_called(g_neg)]
    assert "relu" in ops_in(g_pos, "m::0") and "mul" not in ops_in(g_pos, "m::0")
    assert "mul" in ops_in(g_neg, "m::0") and "relu" not in ops_in(g_neg, "m::0")
    assert len(g_pos["edges"]) != len(g_neg["edges"])
    # attention arithmetic is filed under the attention module (op level)
    attn_ops = ops_in(g_pos, "m:attn:0")
    for op in ("split", "transpose", "matmul", "softmax", "mul", "reshape"):
        assert op in attn_ops
    # ... and hidden in the module view, where attn has the qkv / proj calls inside
    assert node(g_pos, "m:attn.qkv:0")["group"] == "m:attn:0"


def test_module_called_twice_has_two_calls_of_one_module() -> None:
    graph = capture_graph(Twice(), torch.randn(3, 4))
    assert modules_called(graph) == [("", 0), ("inp", 0), ("shared", 0), ("shared", 1)]
    first, second = node(graph, "m:shared:0"), node(graph, "m:shared:1")
    assert first["path"] == second["path"] == "shared"
    assert first["params"] == second["params"] == 6 * 6 + 6
    view = collapse(graph)
    tanh = next(n["id"] for n in view["nodes"] if n["type"] == "tanh")
    assert edge(view, "m:inp:0", "m:shared:0")["shape"] == [3, 6]
    assert edge(view, "m:shared:0", tanh)["shape"] == [3, 6]
    assert edge(view, tanh, "m:shared:1")["shape"] == [3, 6]
    assert edge(view, "m:shared:1", "out:output")["shape"] == [3, 6]
    assert "act/shared#1/mean" in second["series"]


def test_dataclass_and_dict_outputs_become_named_output_nodes() -> None:
    g = capture_graph(DataclassModel(), torch.randn(2, 5))
    outs = {n["name"]: n for n in g["nodes"] if n["kind"] == "output"}
    assert set(outs) == {"logits", "hidden"}
    assert outs["logits"]["in_shapes"] == [[2, 2]] and outs["hidden"]["in_shapes"] == [[2, 7]]
    view = collapse(g)
    assert ("m:head:0", "out:logits") in edge_set(view)
    assert ("m:body:0", "out:hidden") in edge_set(view)
    assert ("m:body:0", "m:head:0") in edge_set(view)

    g = capture_graph(DictModel(), torch.randn(2, 5))
    outs = {n["name"]: n for n in g["nodes"] if n["kind"] == "output"}
    assert set(outs) == {"logits", "features.0", "features.1"}
    assert outs["features.1"]["in_shapes"] == [[2]]
    view = collapse(g)
    total = next(n["id"] for n in view["nodes"] if n["type"] == "sum")
    assert ("m:body:0", total) in edge_set(view) and (total, "out:features.1") in edge_set(view)


def test_hf_style_keyword_inputs_and_model_output() -> None:
    model = HFStyle()
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones(2, 6)
    g = capture_graph(model, {"input_ids": ids, "attention_mask": mask},
                      kwargs={"output_hidden_states": True})
    assert g["error"] is None
    inputs = {n["name"]: n for n in g["nodes"] if n["kind"] == "input"}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"]["dtype"] == "int64"
    outs = {n["name"] for n in g["nodes"] if n["kind"] == "output"}
    assert outs == {"last_hidden_state", "hidden_states.0"}
    view = collapse(g)
    assert edge(view, "in:input_ids", "m:embed:0")["dtype"] == "int64"
    mul = next(n["id"] for n in view["nodes"] if n["type"] == "mul")
    unsq = next(n["id"] for n in view["nodes"] if n["type"] == "unsqueeze")
    assert ("in:attention_mask", unsq) in edge_set(view) and (unsq, mul) in edge_set(view)
    assert edge(view, mul, "m:encoder:0")["shape"] == [2, 6, 8]


def test_small_gpt_blocks_ops_and_depth_views() -> None:
    gpt = TinyGPT()
    gpt.train()
    idx = torch.randint(0, 32, (2, 8))
    targets = torch.randint(0, 32, (2, 8))
    g = capture_graph(gpt, (idx, targets))
    assert g["error"] is None
    assert all(m.training for m in gpt.modules())  # training mode restored
    called = [p for p, _ in modules_called(g)]
    assert called[:3] == ["", "wte", "wpe"] and "h.0" in called and "h.1" in called
    assert "h" not in called  # a ModuleList is never called
    assert "arange" in ops_in(g, "m::0")
    # op level: attention arithmetic sits in the attention call of each block
    for i in (0, 1):
        ops = ops_in(g, f"m:h.{i}.attn:0")
        assert {"matmul", "softmax", "masked_fill", "triu"} <= set(ops)
    # depth 1: blocks collapse to single nodes chained by the residual stream
    shallow = collapse(g, depth=1)
    ids = {n["id"] for n in shallow["nodes"]}
    assert {"m:h.0:0", "m:h.1:0", "m:lm_head:0", "m:ln_f:0"} <= ids
    assert not any(i.startswith("m:h.0.") for i in ids)
    assert edge(shallow, "m:h.0:0", "m:h.1:0")["shape"] == [2, 8, 16]
    assert edge(shallow, "m:lm_head:0", "out:0")["shape"] == [2, 8, 32]
    loss = next(n for n in g["nodes"] if n["id"] == "out:1")
    assert loss["in_shapes"] == [[]]
    # default view: block internals visible, the residual add inside each block
    view = collapse(g)
    add = [n["id"] for n in view["nodes"] if n["type"] == "add" and n["parent"] == "h.0"][0]
    assert ("m:h.0.attn.proj:0", add) in edge_set(view)
    assert ("in:targets", "m:wte:0") not in edge_set(view)
    assert {"m:h.0.mlp.0:0", "m:h.0.mlp.1:0", "m:h.0.mlp.2:0"} <= {n["id"] for n in view["nodes"]}
    assert {gr["id"] for gr in view["groups"]} >= {"m::0", "m:h.0:0", "m:h.0.mlp:0"}
    # depth 0: the whole model is one node
    whole = collapse(g, depth=0)
    assert {n["id"] for n in whole["nodes"] if n["kind"] == "module"} == {"m::0"}
    assert edge(whole, "in:idx", "m::0")["dtype"] == "int64"
    # op level: no module nodes, every op present
    ops = op_view(g)
    assert all(n["kind"] != "module" for n in ops["nodes"])
    assert len(ops["nodes"]) == sum(1 for n in g["nodes"] if n["kind"] != "module")
    # expanding one leaf in the default view shows its op
    opened = collapse(g, expand=["lm_head"])
    assert "m:lm_head:0" not in {n["id"] for n in opened["nodes"]}


def test_conv_net_shapes_buffers_and_eval_during_probe() -> None:
    net = ConvNet()
    net.train()
    before = net.features[1].running_mean.clone()
    g = capture_graph(net, torch.randn(2, 3, 16, 16))
    assert torch.equal(net.features[1].running_mean, before)  # probe ran in eval mode
    assert all(m.training for m in net.modules())
    view = collapse(g)
    assert edge(view, "in:x", "m:features.0:0")["shape"] == [2, 3, 16, 16]
    assert edge(view, "m:features.0:0", "m:features.1:0")["shape"] == [2, 8, 16, 16]
    assert edge(view, "m:features.3:0", "m:features.4:0")["shape"] == [2, 8, 8, 8]
    flat = next(n["id"] for n in view["nodes"] if n["type"] == "flatten")
    assert edge(view, "m:features.6:0", flat)["shape"] == [2, 16, 1, 1]
    assert edge(view, flat, "m:dropout:0")["shape"] == [2, 16]
    assert edge(view, "m:dropout:0", "m:fc:0")["shape"] == [2, 16]
    assert ops_in(g, "m:features.0:0") == ["conv2d"]


def test_identity_module_stays_on_the_data_path() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 2))
    view = collapse(capture_graph(model, torch.randn(1, 3)))
    assert ("m:0:0", "m:1:0") in edge_set(view) and ("m:1:0", "m:2:0") in edge_set(view)


def test_model_raising_during_probe_keeps_tree_and_error() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ok = nn.Linear(4, 4)
            self.bad = nn.Linear(5, 2)  # wrong input size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bad(self.ok(x))

    model = Broken()
    model.train()
    g = capture_graph(model, torch.randn(2, 4))
    assert g["error"] and "RuntimeError" in g["error"]
    assert g["error_path"] == "bad"
    assert g["tree"]["params"] == 4 * 4 + 4 + 5 * 2 + 2
    assert ("ok", 0) in modules_called(g)  # the partial graph up to the failure
    assert all(m.training for m in model.modules())
    assert not model._forward_hooks and not model.ok._forward_pre_hooks  # hooks removed
    text = format_summary(g["tree"], g)
    assert "Probe failed in bad" in text
    run = FakeRun()
    stored = log_model(run, model, torch.randn(2, 4))  # never raises
    assert stored["error"] and run.files["model/graph.json"]["error"] == stored["error"]


def test_no_example_input_gives_tree_only() -> None:
    g = capture_graph(mlp())
    assert g["probed"] is False and g["nodes"] == [] and g["edges"] == []
    assert g["tree"]["params"] > 0 and g["hierarchy"][""] == ["0", "1", "2"]
    assert "--" in format_summary(g["tree"], g)


def test_summary_table_lists_layers_shapes_and_totals() -> None:
    model = Twice()
    g = capture_graph(model, torch.randn(3, 4))
    text = format_summary(g["tree"], g)
    lines = text.splitlines()
    assert any("inp (Linear)" in ln and "[3, 6]" in ln and "30" in ln for ln in lines)
    assert any("shared (Linear)" in ln and "x2" in ln and "42" in ln for ln in lines)
    assert f"Total params: {4 * 6 + 6 + 6 * 6 + 6:,}" in text
    assert "Trainable params: 72" in text
    gpt = TinyGPT()
    short = format_summary(module_tree(gpt), None, max_depth=1)
    assert "h (ModuleList)" in short and "ln_1" not in short


def test_log_model_writes_graph_json_through_the_run() -> None:
    run = FakeRun()
    graph = log_model(run, mlp(), torch.randn(2, 8))
    assert list(run.files) == ["model/graph.json"]
    written = run.files["model/graph.json"]
    assert written == graph  # the whole graph, as returned
    assert [(n["id"], n["params"]) for n in written["nodes"] if n["kind"] == "module"] == [
        ("m::0", 195), ("m:0:0", 144), ("m:1:0", 0), ("m:2:0", 51)]
    assert [e["shape"] for e in written["edges"]] == [[2, 8], [2, 16], [2, 16], [2, 3]]
    log_model(run, mlp(), name="critic")
    assert run.files["model/critic/graph.json"]["probed"] is False
    with pytest.raises(ValueError):
        log_model(run, mlp(), name="../escape")


def test_export_static_graph_optional_and_failures_recorded(monkeypatch) -> None:
    g = capture_graph(mlp(), torch.randn(2, 8))
    assert g["export"] is None  # off by default
    g = capture_graph(mlp(), torch.randn(2, 8), export=True, export_timeout=60)
    assert g["export"]["ok"] is True
    targets = [n["target"] for n in g["export"]["nodes"] if n["op"] == "call_function"]
    assert any("linear" in t for t in targets) and any("relu" in t for t in targets)

    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(1.0)

    monkeypatch.setattr(torch.export, "export", slow)
    g = capture_graph(mlp(), torch.randn(2, 8), export=True, export_timeout=0.05)
    assert g["export"]["ok"] is False and "timed out" in g["export"]["reason"]
    assert g["error"] is None and g["nodes"]  # the probe graph is unaffected

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(torch.export, "export", broken)
    g = capture_graph(mlp(), torch.randn(2, 8), export=True)
    assert g["export"] == {"ok": False, "reason": "RuntimeError: data-dependent control flow",
                           "seconds": g["export"]["seconds"]}


def test_probe_of_100_module_model_is_fast_and_json_compact() -> None:
    model = nn.Sequential(*[GPTBlock(8) for _ in range(10)])  # 10 x 10 + 1 modules
    assert sum(1 for _ in model.modules()) == 101
    x = torch.randn(1, 4, 8)
    # Fast by construction (its speed is for benchmarks, not a timed test): one probe
    # forward pass, each block entered once, whatever the number of modules.
    calls: list[str] = []
    model.register_forward_hook(lambda *_: calls.append("model"))
    for i, block in enumerate(model):
        block.register_forward_hook(lambda *_, i=i: calls.append(f"block {i}"))
    g = capture_graph(model, x)
    assert calls == [f"block {i}" for i in range(10)] + ["model"]
    assert [n["path"] for n in g["nodes"] if n["kind"] == "module"].count("3") == 1
    size = len(json.dumps(g, separators=(",", ":")))
    assert size < 1000 * len(g["nodes"])  # far below 1 KB per node


def test_max_nodes_truncates() -> None:
    g = capture_graph(TinyGPT(), torch.randint(0, 32, (1, 4)), max_nodes=20)
    assert g["truncated"] is True and len(g["nodes"]) <= 22


def test_views_and_summary_need_no_torch() -> None:
    code = (
        "import sys, flowillower, flowillower.model as m\n"
        "assert 'torch' not in sys.modules\n"
        "g = {'nodes': [], 'edges': []}\n"
        "m.collapse(g); m.format_summary({'modules': [], 'params': 0}, g)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
