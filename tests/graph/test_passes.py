"""The graph converter's passes, each run alone on a small model (trace -> loops / branches -> scans and attention
recognised -> time axes -> plan -> GraphStep -> proof), and its import structure: edgeseq/graph never imports
edgeseq.convert (the converters it keeps whole are looked up in edgeseq.converters)."""

from __future__ import annotations

import ast
import pathlib

import torch
from torch import nn
from torch.nn import functional as F

from edgeseq.graph import analyze, attention, loops, scans
from edgeseq.graph.step import plan
from edgeseq.graph.trace import trace

GRAPH = pathlib.Path(__file__).resolve().parents[2] / "edgeseq" / "graph"


def test_no_module_of_the_graph_converter_imports_edgeseq_convert():
    found = []
    for path in sorted(GRAPH.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports included
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name}: {n}" for n in names if n == "edgeseq.convert" or n.startswith("edgeseq.convert.")]
    assert not found, found


class _Heinsen(nn.Module):
    def forward(self, x):
        log_a, log_b = -F.softplus(x), -F.softplus(-x)
        a_star = log_a.cumsum(dim=1)
        return a_star + (log_b - a_star).logcumsumexp(dim=1)


def test_scans_pass_alone_replaces_the_pattern_and_keeps_the_graphs_values():
    gm = trace(_Heinsen())
    x = torch.randn(1, 50, 3)
    before = gm(x)
    assert scans.recognise(gm) == 1
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"].count(scans.log_linear_scan) == 1
    assert not any(n.target in ("logcumsumexp", torch.logcumsumexp) for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), before)  # the parallel form it stands for


class _Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(3, 5)

    def forward(self, x):
        h, outs = x.new_zeros(x.shape[0], 5), []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, 1)


def test_loops_pass_alone_rolls_the_loop_and_runs_at_other_lengths():
    torch.manual_seed(0)
    model = _Cell().eval()
    gm = loops.reroll(model, torch.randn(1, 20, 3), 1)
    rolled = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), loops.Recurrence)]
    assert len(rolled) == 1 and gm.meta["edgeseq_loop"]["state"] == ["carry0"]
    x = torch.randn(2, 33, 3)  # traced unrolled at 7 frames, batch 2: run at 33 frames
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


class _Window(nn.Module):
    def forward(self, x):
        i = torch.arange(x.shape[1])
        band = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 4)
        return F.scaled_dot_product_attention(x, x, x, attn_mask=band)


def test_attention_pass_alone_finds_the_window_and_time_axes_then_plan_stream_it():
    gm = trace(_Window())
    x = torch.randn(1, 12, 6)
    before = gm(x)
    env_a, env_b = analyze.run_recording(gm, x), analyze.run_recording(gm, analyze.longer(x, 1))
    assert attention.recognise(gm, env_a, env_b) == 1
    node = next(n for n in gm.graph.nodes if n.target is attention.windowed_attention)
    assert node.args[3] == 4  # W read from the mask at 12 and 13 frames
    torch.testing.assert_close(gm(x), before)
    env = analyze.time_axes(gm, x, 1)
    assert node.meta["time"] == 1
    entries, ops, timing = plan(gm, env, 1)
    assert [type(op).__name__ for op in ops.values()] == ["WindowOp"] and timing.span == 3
