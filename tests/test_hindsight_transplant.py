"""Transplanting new fw.log statements into old code versions, and classifying them."""

from __future__ import annotations

import ast
import textwrap

import pytest

from flowillower.hindsight.analysis import analyze
from flowillower.hindsight.transplant import TransplantError, transplant


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


NEW = src('''
    import flowillower as fw

    model = build()
    opt = make_opt(model)
    with fw.checkpointing(model=model, optimizer=opt):
        for epoch in fw.loop("epoch", range(5)):
            lr = opt.param_groups[0]["lr"]
            fw.log("lr", lr)
            for batch in fw.loop("step", data):
                loss = train_step(model, batch)
                fw.log("loss", loss)
            acc = evaluate(model)
            fw.log("acc", acc)
            fw.log("wnorm", model.weight.norm().item())
    fw.log("final", model.weight.sum().item())
''')


def lines_of(source: str) -> list[str]:
    return [line.rstrip() for line in source.splitlines()]


def test_renamed_variable_and_added_line() -> None:
    old = src('''
        import flowillower as fw

        net = build()  # the old version called it net
        opt = make_opt(net)
        with fw.checkpointing(model=net, optimizer=opt):
            for epoch in fw.loop("epoch", range(5)):
                print("epoch", epoch)  # a line the new version dropped
                for batch in fw.loop("step", data):
                    loss = train_step(net, batch)
                    fw.log("loss", loss)
                acc = evaluate(net)
                fw.log("acc", acc)
        ''')
    result = transplant(old, NEW, ["lr", "wnorm", "final"])
    out = lines_of(result.source)
    ast.parse(result.source)
    # lr (and the helper line computing it) goes before the inner loop, after the print.
    i = out.index('        print("epoch", epoch)  # a line the new version dropped')
    assert out[i + 1] == "        lr = opt.param_groups[0]['lr']"
    assert out[i + 2] == "        fw.log('lr', lr)"
    assert out[i + 3].startswith("        for batch in fw.loop")
    # wnorm after the acc log, with model renamed to net
    j = out.index('        fw.log("acc", acc)')
    assert out[j + 1] == "        fw.log('wnorm', net.weight.norm().item())"
    assert out[-1] == "fw.log('final', net.weight.sum().item())"
    assert {p.names[0]: p.renames for p in result.placements}["wnorm"] == {"model": "net"}
    assert result.placements[0].helpers == 1
    assert old.splitlines()[2] in result.source  # comments survive


def test_moved_block_lands_after_its_anchor() -> None:
    # The evaluation moved before the inner loop in the old version: the new statement
    # (logging the evaluation) follows it there.
    old = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            acc = evaluate(model)
            fw.log("acc", acc)
            for batch in fw.loop("step", data):
                step(batch)
        ''')
    new = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            for batch in fw.loop("step", data):
                step(batch)
            acc = evaluate(model)
            fw.log("acc", acc)
            fw.log("acc2", acc * 2)
        ''')
    result = transplant(old, new, ["acc2"])
    out = lines_of(result.source)
    assert out[out.index('    fw.log("acc", acc)') + 1] == "    fw.log('acc2', acc * 2)"
    assert analyze(result.source, ["acc2"], "epoch")[0].place == "outer"


def test_moved_block_that_breaks_the_value_fails_clearly() -> None:
    # The statement follows report(), which the old version runs before computing `grad`:
    # placing it after report() would read `grad` before it exists.
    old = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            for batch in fw.loop("step", data):
                step(batch)
            report()
            grad = grad_norm(model)
        ''')
    new = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            for batch in fw.loop("step", data):
                step(batch)
            grad = grad_norm(model)
            report()
            fw.log("grad", grad)
        ''')
    swapped = new.replace("    report()\n    fw.log", "    fw.log").replace(
        "grad = grad_norm(model)\n", "grad = grad_norm(model)\n    report()\n", 1)
    # When it directly follows the assignment, it lands right after it in the old order.
    placed = transplant(old, swapped.replace("    report()\n    fw.log", "    fw.log"),
                        ["grad"])
    assert lines_of(placed.source)[-1] == "    fw.log('grad', grad)"
    with pytest.raises(TransplantError, match=r"`fw.log\('grad', grad\)`.*reads `grad`.*only "
                                              r"assigns after"):
        transplant(old, new, ["grad"])


def test_unknown_variable_and_missing_loop_fail_clearly() -> None:
    old = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            train(epoch)
        ''')
    new = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            train(epoch)
            fw.log("m", momentum)
        ''')
    with pytest.raises(TransplantError, match="`momentum`, which does not exist in the old"):
        transplant(old, new, ["m"])
    new_loop = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            train(epoch)
            for batch in fw.loop("val", data):
                fw.log("v", batch)
                check(batch)
        ''')
    old_loop = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(3)):
            train(epoch)
            for batch in fw.loop("val", data):
                check(batch)
        ''')
    assert "fw.log('v', batch)" in transplant(old_loop, new_loop, ["v"]).source
    with pytest.raises(TransplantError, match=r"fw.loop\('val'\) loop around it .* no "
                                              "counterpart"):
        transplant(old, new_loop.replace("check(batch)", "check(batch)\n        train(epoch)"),
                   ["v"])
    with pytest.raises(TransplantError, match="no fw.log statement for nope"):
        transplant(old, new, ["nope"])


def test_new_block_comes_along_and_present_statements_are_kept() -> None:
    old = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(4)):
            acc = train(epoch)
            fw.log("acc", acc)
        ''')
    new = src('''
        import flowillower as fw
        for epoch in fw.loop("epoch", range(4)):
            acc = train(epoch)
            fw.log("acc", acc)
            if epoch % 2 == 0:
                fw.log("even_acc", acc)
        ''')
    result = transplant(old, new, ["even_acc", "acc"])
    assert result.present == ["acc"]
    assert "    if epoch % 2 == 0:\n        fw.log('even_acc', acc)" in result.source
    with pytest.raises(TransplantError, match="part of a larger statement"):
        transplant(old, new.replace('fw.log("acc", acc)', 'x = fw.log("x", acc)'), ["x"])


def test_one_line_blocks_fall_back_to_the_syntax_tree() -> None:
    old = "import flowillower as fw\nfor e in fw.loop('epoch', range(2)): train(e)\n"
    new = ("import flowillower as fw\nfor e in fw.loop('epoch', range(2)):\n    train(e)\n"
           "    fw.log('e', e)\n")
    result = transplant(old, new, ["e"])
    tree = ast.parse(result.source)
    assert [type(s).__name__ for s in tree.body[1].body] == ["Expr", "Expr"]


def test_analysis_places_statements_and_follows_values() -> None:
    code = src('''
        import flowillower as fw
        model = build()
        fw.log("before", 1.0)
        best = 0.0
        with fw.checkpointing(model=model):
            for epoch in fw.loop("epoch", range(5)):
                fw.log("lr", 0.1)
                total = 0.0
                for batch in fw.loop("step", data):
                    loss = step(model, batch)
                    total += loss
                    fw.log("inner", loss)
                fw.log("wnorm", model.norm())
                fw.log("avg", total / 4)
                acc = evaluate(model)
                best = max(best, acc)
                fw.log("best", best)
                fw.log("acc", acc)
        fw.log("final", model.norm())
        fw.log("final_best", best)
        ''')
    infos = {i.names[0]: i for i in analyze(code, ["before", "lr", "inner", "wnorm", "avg",
                                                   "best", "acc", "final", "final_best"],
                                            "epoch")}
    assert infos["before"].place == "pre" and not infos["before"].needs
    assert infos["lr"].place == "outer" and not infos["lr"].needs
    assert infos["inner"].place == "inner"
    assert infos["wnorm"].place == "outer" and not infos["wnorm"].needs
    assert infos["avg"].needs == {"inner"}  # total is accumulated by the skipped loop
    assert infos["acc"].needs == set()
    assert "carried" in infos["best"].needs
    assert infos["final"].place == "post" and not infos["final"].needs
    assert infos["final_best"].needs == {"loop"}


def test_analysis_follows_helper_functions() -> None:
    code = src('''
        import flowillower as fw

        def train_epoch(model, data):
            for batch in fw.loop("step", data):
                fw.log("in_helper", step(model, batch))

        def report(model):
            fw.log("helper_outer", model.norm())

        def main():
            fw.log("setup", 1)
            for epoch in fw.loop("epoch", range(3)):
                train_epoch(model, data)
                report(model)

        main()
        fw.log("after", 2)
        ''')
    infos = {i.names[0]: i for i in analyze(code, ["in_helper", "helper_outer", "setup",
                                                   "after"], "epoch")}
    assert infos["in_helper"].place == "inner"
    assert infos["helper_outer"].place == "outer"
    assert infos["setup"].place == "pre"
    assert infos["after"].place == "post"


def test_new_imports_and_helper_functions_come_along() -> None:
    old = src('''
        import flowillower as fw
        net = build()
        for epoch in fw.loop("epoch", range(3)):
            train(net)
        ''')
    new = src('''
        import math
        import flowillower as fw

        def norm(m):
            return math.sqrt(sum(float((p * p).sum()) for p in m.parameters()))

        model = build()
        for epoch in fw.loop("epoch", range(3)):
            train(model)
            fw.log("norm", norm(model))
        ''')
    result = transplant(old, new, ["norm"])
    tree = ast.parse(result.source)
    kinds = [type(s).__name__ for s in tree.body]
    assert kinds == ["Import", "Import", "FunctionDef", "Assign", "For"]
    assert ast.unparse(tree.body[-1].body[-1]) == "fw.log('norm', norm(net))"
    assert "carried math, norm" in result.placements[-1].where


def test_comprehension_variables_are_not_free_names() -> None:
    old = 'import flowillower as fw\nnet = make()\nfor e in fw.loop("epoch", range(2)):\n    train(net)\n'
    new = old + '    fw.log("w", sum(p.norm() for p in net.parameters()))\n'
    assert "fw.log('w', sum((p.norm() for p in net.parameters())))" in transplant(
        old, new, ["w"]).source


def _fake_run(tmp_path, n: int, iter_s: float, setup_s: float, starts: list[int]):
    """A RunInfo with a hand-written checkpoint manifest (no training needed)."""
    import json

    from flowillower.hindsight.checkpoint import CheckpointStore
    from flowillower.hindsight.planner import RunInfo

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir(parents=True)
    lines = [{"type": "meta", "outer": "epoch", "objects": {}, "setup_s": setup_s}]
    seq = 0
    for i in range(n):
        for kind in (["start"] if i in starts else []) + ["inner"]:
            (ckpt / f"c{seq:06d}.pt").write_bytes(b"")
            lines.append({"type": "ckpt", "seq": seq, "kind": kind, "i": i, "m": 0,
                          "file": f"c{seq:06d}.pt", "bytes": 1000})
            seq += 1
        lines.append({"type": "iter", "i": i, "t": iter_s, "inner": iter_s * 0.9,
                      "n_inner": 1, "ckpt": True})
    (ckpt / f"c{seq:06d}.pt").write_bytes(b"")
    lines.append({"type": "ckpt", "seq": seq, "kind": "final", "i": n, "m": 0,
                  "file": f"c{seq:06d}.pt", "bytes": 1000})
    lines.append({"type": "end", "n": n})
    (ckpt / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    store = CheckpointStore(tmp_path)
    return RunInfo("run", tmp_path, {}, None, "success", {}, "epoch", n, True,
                   [iter_s] * n, [iter_s * 0.9] * n, setup_s, 0.0, store, set())


def test_planner_strategies_estimates_and_splits(tmp_path) -> None:
    from flowillower.hindsight.planner import StatementInfo, plan_run, schedule

    outer = [StatementInfo(["w"], 5, "outer")]
    inner = [StatementInfo(["g"], 7, "inner", {"inner"})]
    info = _fake_run(tmp_path / "a", 20, 1.0, 20.0, starts=[0, 5, 10, 15])
    plan = plan_run(info, outer)
    assert "inner loops skipped via checkpoints" in plan.strategy
    assert plan.tasks[0].skip == list(range(20))
    # 20 s set-up + 20 x (0.1 s outside the inner loop + 2 restores) + exit
    assert 22.0 < plan.estimate < 22.5
    assert schedule([plan], 2) == plan.estimate and len(plan.tasks) == 1  # set-up dominates
    info = _fake_run(tmp_path / "b", 20, 1.0, 2.0, starts=[0, 5, 10, 15])
    plan = plan_run(info, inner)
    assert "re-executed from the nearest checkpoint" in plan.strategy
    total = schedule([plan], 2)
    assert [(t.first, t.stop) for t in plan.tasks] == [(0, 10), (10, 20)]
    assert plan.tasks[1].restore_first and 12.0 < total < 12.5
    carried = [StatementInfo(["b"], 9, "outer", {"carried"})]
    plan = plan_run(info, carried)
    schedule([plan], 2)
    assert len(plan.tasks) == 1 and "in order from the first iteration" in plan.strategy


def test_one_line_loop_body_takes_new_statements_in_order():
    """A one-line `for ...: x` leaves no line to insert under: the tree is rebuilt, and
    two statements placed after the same anchor keep the current script's order."""
    old = 'import flowillower as fw\nfor epoch in fw.loop("epoch", range(3)): loss = epoch * 2\n'
    new = ('import flowillower as fw\nfor epoch in fw.loop("epoch", range(3)):\n'
           '    loss = epoch * 2\n    fw.log("a", loss)\n    fw.log("b", loss + 1)\n')
    result = transplant(old, new, ["a", "b"])
    body = ast.parse(result.source).body[1].body
    assert [ast.unparse(s) for s in body] == [
        "loss = epoch * 2", "fw.log('a', loss)", "fw.log('b', loss + 1)"]
