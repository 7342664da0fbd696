"""Loops over time: a ``forward`` that steps a cell in a Python loop, unrolled by a trace and rolled back into one step.

``for t in range(x.shape[1]): h, c = self.cell(x[:, t], (h, c))`` cannot be followed symbolically (the length is a
Proxy). Here the model is traced by ``torch.export`` at a fixed length, where the loop is unrolled, and the copies
are rolled back up:

1. *frames*: the nodes that pick frame ``i`` of a sequence (``x[:, i]``, ``x[:, i:i + 1]``, ``x.unbind(1)[i]``),
   for every ``i`` of its length, start the iterations; a node belongs to iteration ``i`` when the latest frame it
   depends on is ``i``;
2. *collector*: the ``torch.stack`` / ``torch.cat`` that gathers one value of every iteration, in order (the
   outputs the loop appended); what reads it is after the loop;
3. *match*: the nodes of iteration ``i + 1`` must repeat those of iteration ``i`` one for one (same operation, same
   constants, same weights), reading iteration ``i``'s values where ``i`` read iteration ``i - 1``'s: those values
   are the loop's carried state, and what iteration 0 read in their place its initial value;
4. *roll*: the iterations and the collector become one :class:`Recurrence` module (the body of one iteration as a
   graph), which the graph converter streams as a stream operation whose state is the carried values.

The result is a graph the converter runs at other lengths like any traced model; the proof at conversion
(:mod:`edgeseq.proof`) then checks the step against the model itself over a long stream.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from edgeseq.errors import UnsupportedModuleError
from edgeseq.graph.fold import _attr
from edgeseq.graph.frame import AxisSum
from edgeseq.graph.ops import STREAM_OPS, Build, BuildCtx, GraphOp, Timing, _frame, _timed, full, held, refuse
from edgeseq.graph.trace import where
from edgeseq.step import StateTensor

LOOP_FRAMES = 7  # the length a loop is unrolled at (prime: not mistaken for a feature axis of the same size)
MIN_ITERATIONS = 4  # fewer copies than this cannot show what repeats (the last one is not compared)

aten = torch.ops.aten
_SELECT, _SLICE, _UNBIND = aten.select.int, aten.slice.Tensor, aten.unbind.int
_COLLECT = {aten.stack.default: "stack", aten.cat.default: "cat"}


@dataclass(frozen=True)
class Pick:
    """How an iteration reads its frame of ``source``: ``select`` drops the time axis, ``slice`` keeps it (length 1)."""

    kind: str
    axis: int


class LoopRefusal(UnsupportedModuleError):
    """A loop over time that cannot be rolled into a step (the reason names the source line)."""


class NoLoop(LoopRefusal):
    """The traced graph holds no loop over the frames of a sequence."""


# ------------------------------------------------------------------------------------------------ tracing
def unrolled(model: nn.Module, x: torch.Tensor) -> tuple[fx.GraphModule, torch.Tensor]:
    """(the model traced by torch.export at the length of ``x``, its loops unrolled; the input it was traced at):
    at batch 2 with a dynamic batch, else (a model that fixes its batch) at batch 1."""
    try:
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                                 strict=False)
    except Exception:
        x = x[:1]
        try:
            ep = torch.export.export(model, (x,), strict=False)
        except Exception:  # control flow on tensor values (if x.sum() > 0): the symbolic trace's error says it
            raise NoLoop("torch.export cannot trace it either") from None
    from edgeseq.graph.fold import fold_constants
    from edgeseq.graph.pt2 import plain_module

    # a plain module returning the outputs alone (of the liquid / CfC libraries' (outputs, final state))
    plain = plain_module(ep.module(), type(model).__name__)

    fold_constants(plain)  # weights computed in every iteration (softplus(w), a mask): computed once
    return plain, x


# ------------------------------------------------------------------------------------------------ rolling
def reroll(model: nn.Module, example: torch.Tensor, axis: int) -> fx.GraphModule:
    """``model`` as a graph with its loop over time rolled into a :class:`Recurrence` (see the module doc)."""
    T = min(int(example.shape[axis]), LOOP_FRAMES)
    x = example[:1].detach().float().narrow(axis, 0, T)
    gm, x = unrolled(model, torch.cat([x, x]))
    return roll(gm, x, model)


def roll(gm: fx.GraphModule, x: torch.Tensor, model: nn.Module | None = None) -> fx.GraphModule:
    """The loop of an unrolled graph (traced at the input ``x``: a torch.export program, a ``.pt2`` archive's)
    rolled into a :class:`Recurrence`; :class:`NoLoop` when it has none. ``model``: for the state's name."""
    graph = gm.graph
    nodes = list(graph.nodes)
    picks = _frame_picks(nodes)
    if not picks:
        raise NoLoop("no loop over the frames of a sequence was found in the traced graph")
    n = len(next(iter(picks.values())))
    if any(len(v) != n for v in picks.values()):
        raise LoopRefusal(f"reads {sorted({len(v) for v in picks.values()})} frames of different sequences")
    iteration = {}  # node -> latest frame index it depends on (-1: none)
    pick_of = {node: (key, i) for key, per in picks.items() for i, node in enumerate(per)}
    for node in nodes:
        its = [iteration.get(a, -1) for a in node.all_input_nodes]
        iteration[node] = pick_of[node][1] if node in pick_of else max(its, default=-1)
    collector = _collector(nodes, iteration, n)
    after = _downstream(collector)
    bodies = [[m for m in nodes if iteration[m] == i and m not in after] for i in range(n)]
    carried, init = _match(bodies, pick_of, collector)
    return _rewrite(gm, model, x, bodies, picks, pick_of, collector, carried, init, n)


def _frame_picks(nodes: list[fx.Node]) -> dict[tuple, list[fx.Node]]:
    """(source, Pick) -> the nodes picking frames 0, 1, ... of it, for each source read frame by frame whole."""
    found: dict[tuple, dict[int, fx.Node]] = {}
    for node in nodes:
        if node.op != "call_function":
            continue
        src, key, index = None, None, None
        if node.target is _SELECT and len(node.args) == 3:
            src, dim, index = node.args
            key = Pick("select", dim)
        elif node.target is _SLICE and len(node.args) == 4 and node.args[3] == node.args[2] + 1:
            src, dim, index, _ = node.args
            key = Pick("slice", dim)
        elif node.target is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].target is _UNBIND:
            src, dim = node.args[0].args[0], node.args[0].args[1] if len(node.args[0].args) > 1 else 0
            index, key = node.args[1], Pick("select", dim)
        if not isinstance(src, fx.Node) or not isinstance(index, int) or index < 0:
            continue
        val = src.meta.get("val")
        if not isinstance(val, torch.Tensor) or not isinstance(key.axis, int):
            continue
        key = (src, Pick(key.kind, key.axis % val.dim()))
        found.setdefault(key, {})[index] = node
    out = {}
    for key, per in found.items():
        size = key[0].meta["val"].shape[key[1].axis]
        if key[1].axis >= 1 and isinstance(size, int) and size >= MIN_ITERATIONS and sorted(per) == list(range(size)):
            out[key] = [per[i] for i in range(size)]
    return out


def _collector(nodes: list[fx.Node], iteration: dict, n: int) -> fx.Node:
    found = []
    for node in nodes:
        if node.op == "call_function" and node.target in _COLLECT and isinstance(node.args[0], (list, tuple)):
            parts = node.args[0]
            if len(parts) == n and [iteration.get(p) for p in parts] == list(range(n)):
                found.append(node)
    if len(found) != 1:
        raise LoopRefusal(f"the loop's outputs are gathered by {len(found)} torch.stack / torch.cat calls; one, of "
                          "every iteration's output in order, is needed (outputs.append(y) ... torch.stack(outputs, 1))")
    return found[0]


def _downstream(node: fx.Node) -> set[fx.Node]:
    seen, todo = {node}, list(node.users)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += list(m.users)
    return seen


def _match(bodies: list[list[fx.Node]], pick_of: dict, collector: fx.Node) -> tuple[dict[int, int], dict[int, fx.Node]]:
    """Check that every iteration repeats the one before; return (carried: position read -> position written one
    iteration before, init: position read -> the value iteration 0 reads there)."""
    last = set(bodies[-1])
    for m in bodies[-1]:
        for u in m.users:
            if u not in last and u is not collector:
                raise LoopRefusal(f"the loop's last state is used after the loop at {where(u)}: a stream has no last "
                                  "frame (use the outputs gathered at every frame)")
    # the last iteration is left out: what it carries is read by no one, so the trace dropped it
    bodies = bodies[:-1]
    n = len(bodies)
    sizes = {len(b) for b in bodies}
    if len(sizes) != 1:
        odd = next(i for i, b in enumerate(bodies) if len(b) != len(bodies[1]))
        first_extra = bodies[odd][-1] if bodies[odd] else collector
        raise LoopRefusal(f"the loop's body differs between iterations ({[len(b) for b in bodies]} operations; "
                          f"iteration {odd} at {where(first_extra)})")
    pos = [{m: j for j, m in enumerate(b)} for b in bodies]
    same: dict = {}
    carried: dict[tuple[int, int], int] = {}  # (node position, arg slot) -> position written by the iteration before
    init: dict[tuple[int, int], fx.Node] = {}
    for i in range(n - 1):
        for j, (a, b) in enumerate(zip(bodies[i], bodies[i + 1])):
            if a.op != b.op or a.target != b.target:
                raise LoopRefusal(f"the loop's body differs between iterations {i} and {i + 1} at {where(b)} "
                                  f"({a.target} vs {b.target})")
            if a in pick_of:
                if pick_of[a][0] != pick_of[b][0]:
                    raise LoopRefusal(f"iterations {i} and {i + 1} read different sequences at {where(b)}")
                continue
            slots_a, slots_b = _flat_args(a), _flat_args(b)
            if len(slots_a) != len(slots_b):
                raise LoopRefusal(f"the loop's body differs between iterations {i} and {i + 1} at {where(b)}")
            for s, (u, v) in enumerate(zip(slots_a, slots_b)):
                if not isinstance(u, fx.Node) or not isinstance(v, fx.Node):
                    if u != v:
                        raise LoopRefusal(f"the loop's body differs between iterations {i} and {i + 1} at {where(b)} "
                                          f"(a constant {u!r} becomes {v!r}: a value computed from the step's number)")
                    continue
                if u in pos[i] and v in pos[i + 1] and pos[i][u] == pos[i + 1][v]:
                    continue  # within the iteration
                outside = all(w not in p for w in (u, v) for p in pos)
                if outside and _equivalent(u, v, same):
                    continue  # a weight or a value computed before the loop (or its copy, made in each iteration)
                if outside:
                    raise LoopRefusal(f"the loop's body differs between iterations {i} and {i + 1} at {where(b)}: it "
                                      f"reads {u.name} in one and {v.name} in the other (a different module or "
                                      "weight at each step)")
                key = (j, s)
                if v in pos[i] and (i > 0 and u in pos[i - 1] or i == 0):
                    w = pos[i][v]
                    if i == 0:
                        init[key] = u
                    if carried.setdefault(key, w) != w or (i > 0 and pos[i - 1][u] != w):
                        raise LoopRefusal(f"the loop's state is read differently in iterations {i} and {i + 1} at "
                                          f"{where(b)}")
                    continue
                raise LoopRefusal(f"iteration {i + 1} reads a value of an earlier iteration than the one before at "
                                  f"{where(b)}: only the last iteration's values can be the loop's state")
    return carried, init


def _equivalent(u: fx.Node, v: fx.Node, memo: dict) -> bool:
    """Whether two values from outside the loop are the same: one node, two constants of equal value, or one
    operation on such values (the per-iteration copies of a constant a cell makes in its forward)."""
    if u is v:
        return True
    if (u, v) in memo:
        return memo[(u, v)]
    memo[(u, v)] = False
    ok = False
    if u.op == v.op == "get_attr":
        a, b = _attr(u.graph.owning_module, u.target), _attr(v.graph.owning_module, v.target)
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
    elif u.op == v.op and u.op in ("call_function", "call_method") and u.target == v.target:
        fa, fb = _flat_args(u), _flat_args(v)
        ok = len(fa) == len(fb) and all(
            _equivalent(p, q, memo) if isinstance(p, fx.Node) and isinstance(q, fx.Node) else
            (not isinstance(p, fx.Node) and not isinstance(q, fx.Node) and p == q) for p, q in zip(fa, fb))
    memo[(u, v)] = ok
    return ok


def _flat_args(node: fx.Node) -> list:
    flat: list = []

    def walk(a):
        if isinstance(a, (list, tuple)):
            flat.append(("seq", len(a)))
            for b in a:
                walk(b)
        elif isinstance(a, dict):
            for k in sorted(a):
                flat.append(("key", k))
                walk(a[k])
        else:
            flat.append(a)

    walk(node.args)
    walk(node.kwargs)
    return flat


def _rewrite(gm, model, x, bodies, picks, pick_of, collector, carried, init, n) -> fx.GraphModule:
    """The graph with iterations and collector replaced by one call of a :class:`Recurrence`."""
    from edgeseq.graph.analyze import run_recording

    proto = bodies[1]  # an iteration reading its state from the one before (iteration 0 reads initial values)
    index = {m: j for j, m in enumerate(proto)}
    sources = list(picks)
    # the body as a graph: frames, carried values, then what it reads from before the loop
    body = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    frame_ph = [body.placeholder(f"frame{k}") for k in range(len(sources))]
    writes = sorted(set(carried.values()))
    carry_ph = {w: body.placeholder(f"carry{c}") for c, w in enumerate(writes)}
    outside: list[fx.Node] = []
    outside_ph: dict[fx.Node, fx.Node] = {}

    for j, m in enumerate(proto):
        if m in pick_of:
            env[m] = frame_ph[sources.index(pick_of[m][0])]
            continue
        slot = itertools.count()  # the slots of _flat_args, in the order _map_slots visits them

        def arg(a, j=j, slot=slot):
            s = next(slot)
            if not isinstance(a, fx.Node):
                return a
            if a in index:
                return env[a]
            if (j, s) in carried:
                return carry_ph[carried[(j, s)]]
            if a.op == "get_attr":
                if a not in env:
                    env[a] = body.get_attr(a.target)
                return env[a]
            if a not in outside_ph:
                outside.append(a)
                outside_ph[a] = body.placeholder(f"outer{len(outside)}")
            return outside_ph[a]

        new_args = _map_slots(m.args, arg)
        new_kwargs = _map_slots(m.kwargs, arg)
        env[m] = body.create_node(m.op, m.target, new_args, new_kwargs, name=m.name)
        env[m].meta = dict(m.meta)
    y_node = collector.args[0][1]  # iteration 1's collected value
    body.output((env[y_node], *[env[proto[w]] for w in writes]))
    body.lint()
    body_gm = fx.GraphModule(gm, body, "LoopBody")
    _use_cell_steps(body_gm)
    _sums_as_products(body_gm)

    # initial values: what iteration 0 read in the carried positions, evaluated on the example and on noise
    rec = run_recording(gm, x)
    noise = run_recording(gm, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * x.std() + x.mean())
    inits = []
    for w in writes:
        keys = [k for k, v in carried.items() if v == w]
        u = init[keys[0]]
        a, b = rec[u], noise[u]
        if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] != x.shape[0]:
            raise LoopRefusal(f"the loop's initial state at {where(u)} has no batch axis "
                              f"({tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__})")
        if not torch.equal(a, b):
            raise LoopRefusal(f"the loop's initial state depends on the input ({where(u)}): the step starts every "
                              "stream from one state")
        inits.append(a[:1].detach().clone())
    frames0 = [rec[picks[k][0]] for k in sources]  # iteration 0's frames
    body_gm, inits = _fewer_carried(body_gm, inits, frames0, [rec[o] for o in outside], x.shape[0])
    names = [f"carry{c}" for c in range(len(inits))]
    kind, dim = _COLLECT[collector.target], collector.args[1] if len(collector.args) > 1 else collector.kwargs.get("dim", 0)
    dim = dim % rec[collector].dim()
    module = Recurrence(body_gm, [k[1] for k in sources], inits, names, kind, dim)
    path = _module_path(proto, model)
    name = _unique_attr(gm, path)
    gm.add_submodule(name, module)
    graph = gm.graph
    with graph.inserting_before(collector):
        call = graph.call_module(name, (*[k[0] for k in sources], *outside))
    call.meta["stack_trace"] = collector.meta.get("stack_trace")
    call.meta["state_prefix"] = path  # the state's names: rnn_cell.carry0, ...
    collector.replace_all_uses_with(call)
    graph.erase_node(collector)
    graph.eliminate_dead_code()
    alive = set(graph.nodes)
    left = [m for b in bodies for m in b if m in alive]
    for m in reversed(left):  # in-place operations that dead-code elimination keeps
        if m.users:
            raise LoopRefusal(f"a value of the loop ({where(m)}) is used after it other than through its outputs")
        graph.erase_node(m)
    gm.recompile()
    gm.meta["edgeseq_traced"] = True
    gm.meta["edgeseq_loop"] = {"iterations_traced": n, "state": names, "body_ops": len(proto)}
    return gm


def _fewer_carried(body: fx.GraphModule, inits: list, frames: list, outer: list, batch: int):
    """Drop carried values that the body computes from other carried values alone (the trace may put the next
    frame's ``w_h(h)`` at the end of an iteration, so that ``w_h(h)`` and ``h`` are both carried): such a value
    is recomputed at the start of the body from the values it comes from. Each drop is kept only when iteration 0
    gives the same outputs with it, from the same initial values."""
    k = 0
    while k < len(inits):
        trial = _without_carry(body, k, len(frames), len(inits))
        if trial is not None:
            full_inits = [v.expand(batch, *v.shape[1:]) for v in inits]
            with torch.no_grad():
                old = body(*frames, *full_inits, *outer)
                new = trial(*frames, *full_inits[:k], *full_inits[k + 1:], *outer)
            kept = [o for i, o in enumerate(old) if i != k + 1]
            if len(new) == len(kept) and all(a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-6)
                                             for a, b in zip(kept, new)):
                body, inits = trial, inits[:k] + inits[k + 1:]
                continue
        k += 1
    return body, inits


def _without_carry(body: fx.GraphModule, k: int, n_frames: int, n_carried: int) -> fx.GraphModule | None:
    """The body with carried value ``k`` recomputed from the others at its start, or None if it is not a function
    of them (and of weights and values from before the loop) alone."""
    graph = body.graph
    phs = [n for n in graph.nodes if n.op == "placeholder"]
    carry_ph = phs[n_frames:n_frames + n_carried]
    out = next(n for n in graph.nodes if n.op == "output")
    writes = list(out.args[0][1:])
    stop = {w: j for j, w in enumerate(writes) if j != k}
    cone: list[fx.Node] = []
    seen: set = set()

    def visit(m) -> bool:
        if m in stop or m.op == "get_attr" or (m.op == "placeholder" and m not in carry_ph and phs.index(m) >= n_frames):
            return True
        if m.op == "placeholder":
            return False  # a frame or a carried value: not derivable from the others
        if m in seen:
            return True
        seen.add(m)
        ok = all(visit(a) for a in m.all_input_nodes)
        cone.append(m)
        return ok

    if writes[k] in stop or not visit(writes[k]):
        return None
    new = fx.Graph()
    env: dict = {}
    for m in phs:
        if m is not carry_ph[k]:
            env[m] = new.placeholder(m.name)
            env[m].meta = dict(m.meta)
    for m in graph.nodes:
        if m.op == "get_attr":
            env[m] = new.get_attr(m.target)
    # the value, recomputed from the carried values it comes from
    sub = {w: env[carry_ph[j]] for w, j in stop.items()}
    order = {m: i for i, m in enumerate(graph.nodes)}
    for m in sorted(cone, key=order.__getitem__):
        sub[m] = new.node_copy(m, lambda a: sub[a] if a in sub else env[a])
    env[carry_ph[k]] = sub[writes[k]]
    for m in graph.nodes:
        if m.op in ("placeholder", "get_attr", "output"):
            continue
        env[m] = new.node_copy(m, lambda a: env[a])
    res = out.args[0]
    new.output(tuple(env[a] for i, a in enumerate(res) if i != k + 1))
    new.eliminate_dead_code()
    return fx.GraphModule(body, new, "LoopBody")


def _cell_lstm(x, hc, w_ih, w_hh, b_ih=None, b_hh=None):
    from edgeseq.models.rnn import LSTMCellStep

    cell = LSTMCellStep(w_ih.shape[1], w_hh.shape[1], 0, b_ih is not None)
    return cell, (x, *hc), {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}


def _cell_gru(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    from edgeseq.models.rnn import GRUCellStep

    cell = GRUCellStep(w_ih.shape[1], w_hh.shape[1], b_ih is not None)
    return cell, (x, h), {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}


def _cell_elman(nonlinearity):
    def make(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
        from edgeseq.models.rnn import ElmanCellStep

        cell = ElmanCellStep(w_ih.shape[1], w_hh.shape[1], b_ih is not None, nonlinearity)
        return cell, (x, h), {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}

    return make


# torch's cells as the rnn family's cell steps (one matmul over [x; h], slices not chunk: XNNPACK delegates them
# all; aten.lstm_cell decomposes into a chunk that it leaves outside, a second partition)
CELL_STEPS = {aten.lstm_cell.default: _cell_lstm, aten.gru_cell.default: _cell_gru,
              aten.rnn_tanh_cell.default: _cell_elman("tanh"), aten.rnn_relu_cell.default: _cell_elman("relu")}


def _use_cell_steps(body: fx.GraphModule) -> None:
    """Replace torch's recurrent cells in a loop body whose weights are constants by the rnn family's cell steps."""
    graph = body.graph
    for k, node in enumerate([n for n in graph.nodes if n.op == "call_function" and n.target in CELL_STEPS]):
        weights = node.args[2:]
        if node.kwargs or not all(w is None or (isinstance(w, fx.Node) and w.op == "get_attr") for w in weights):
            continue
        values = [None if w is None else _attr(body, w.target).detach() for w in weights]
        cell, inputs, sd = CELL_STEPS[node.target](node.args[0], node.args[1], *values)
        cell.load_torch({k_: v for k_, v in sd.items() if v is not None}, 0)
        name = f"cell_step{k}"
        body.add_submodule(name, cell.requires_grad_(False))
        with graph.inserting_before(node):
            new = graph.call_module(name, tuple(inputs))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)  # an LSTM's (h, c) is read by getitem as before
        graph.erase_node(node)
    graph.eliminate_dead_code()
    body.delete_all_unused_submodules()
    body.recompile()


def _sums_as_products(body: fx.GraphModule) -> None:
    graph = body.graph
    for k, node in enumerate([n for n in graph.nodes if n.op == "call_function" and n.target is aten.sum.dim_IntList]):
        val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
        dims = node.args[1] if len(node.args) > 1 else None
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if (not isinstance(val, torch.Tensor) or not val.is_floating_point() or not isinstance(dims, (list, tuple))
                or len(dims) != 1 or set(node.kwargs) - {"keepdim"} or not isinstance(keepdim, bool)):
            continue
        dim = dims[0] % val.dim()
        n = val.shape[dim]
        if dim == 0 or not isinstance(n, int):
            continue  # the batch axis, or a size only known at run time
        name = f"axis_sum{k}"
        body.add_submodule(name, AxisSum(dim, n, keepdim))
        with graph.inserting_before(node):
            new = graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    body.recompile()


def _map_slots(a, fn):
    if isinstance(a, (list, tuple)):
        fn(None)  # the ("seq", n) slot of _flat_args
        out = [_map_slots(b, fn) for b in a]
        return tuple(out) if isinstance(a, tuple) else out
    if isinstance(a, dict):
        out = {}
        for k in sorted(a):
            fn(None)
            out[k] = _map_slots(a[k], fn)
        return {k: out[k] for k in a}
    return fn(a)


def _module_path(proto: list[fx.Node], model: nn.Module | None = None) -> str:
    """The module the loop's body runs in most (``cell``, ``rnn_cell``): the rolled loop's name, its state's prefix."""
    counts: dict[str, int] = {}
    for m in proto:
        stack = m.meta.get("nn_module_stack")
        paths = [p for p, _ in stack.values() if p] if stack else []
        if paths:
            top = paths[0].split(".")[0]
            counts[top] = counts.get(top, 0) + 1
    if not counts:  # a cell whose forward is called directly (cell.forward(x, h)) leaves no module stack: its weights
        for m in proto:
            for a in m.all_input_nodes:
                if a.op == "get_attr" and "." in str(a.target):
                    top = str(a.target).split(".")[0]
                    counts[top] = counts.get(top, 0) + 1
    if not counts and model is not None:  # weights read through a dict (lifted, unnamed): the one child that has any
        children = [name for name, c in model.named_children() if any(True for _ in c.parameters())]
        counts = {children[0]: 1} if len(children) == 1 else {}
    return max(counts, key=counts.get) if counts else "loop"


def _unique_attr(gm: nn.Module, base: str) -> str:
    base = (base or "loop").replace(".", "_") + "_loop"
    name, k = base, 1
    while hasattr(gm, name):
        k += 1
        name = f"{base}{k}"
    return name


# ------------------------------------------------------------------------------------------------ the module
class Recurrence(nn.Module):
    """A rolled loop: ``forward(*sources, *outer)`` runs ``body(frames, carried, outer) -> (y, carried)`` over the
    sources' time axis from the initial values and gathers ``y`` (``torch.stack`` / ``torch.cat`` along ``dim``)."""

    def __init__(self, body: fx.GraphModule, picks: list[Pick], inits: list[torch.Tensor], names: list[str],
                 kind: str, dim: int):
        super().__init__()
        self.body, self.picks, self.names, self.kind, self.dim = body, picks, names, kind, dim
        for k, v in enumerate(inits):
            self.register_buffer(f"init{k}", v)

    @property
    def inits(self) -> list[torch.Tensor]:
        return [getattr(self, f"init{k}") for k in range(len(self.names))]

    def pick(self, src: torch.Tensor, k: int, t: int) -> torch.Tensor:
        p = self.picks[k]
        return src.select(p.axis, t) if p.kind == "select" else src.narrow(p.axis, t, 1)

    def forward(self, *args):
        n = len(self.picks)
        sources, outer = args[:n], args[n:]
        B = sources[0].shape[0]
        carried = [v.expand(B, *v.shape[1:]) for v in self.inits]
        ys = []
        for t in range(sources[0].shape[self.picks[0].axis]):
            y, *carried = self.body(*[self.pick(s, k, t) for k, s in enumerate(sources)], *carried, *outer)
            ys.append(y)
        return torch.stack(ys, self.dim) if self.kind == "stack" else torch.cat(ys, self.dim)


class RecurrenceOp(GraphOp):
    """The stream form of a :class:`Recurrence`: one run of its body per frame; the carried values are the state
    (kept as their difference from the initial value where that is not one constant)."""

    def __init__(self, rec: Recurrence, first: int):
        super().__init__()
        self.rec, self.first = rec, first
        self.fills = []
        for v in rec.inits:
            flat = v.reshape(-1)
            self.fills.append(float(flat[0]) if flat.numel() and bool((flat == flat[0]).all()) else None)

    def states(self):
        return tuple(StateTensor(name, tuple(v.shape[1:]),
                                 fill=fill if fill is not None else 0.0)
                     for name, v, fill in zip(self.rec.names, self.rec.inits, self.fills))

    def step(self, args, kwargs, state, t):
        rec = self.rec
        n = len(rec.picks)
        frames = []
        for k, a in enumerate(args[:n]):
            v = full(a)
            frames.append(_frame(v, rec.picks[k].axis) if rec.picks[k].kind == "select" else v)
        carried = [s if f is not None else s + v for s, f, v in zip(state, self.fills, rec.inits)]
        y, *new = rec.body(*frames, *carried, *args[n:])
        new = [c if f is not None else c - v for c, f, v in zip(new, self.fills, rec.inits)]
        return (_timed(y, rec.dim) if rec.kind == "stack" else y), held(new, state, t, self.first)


def _build(ctx: BuildCtx) -> Build:
    node = ctx.node
    rec: Recurrence = ctx.gm.get_submodule(node.target)
    n = len(rec.picks)
    srcs, outer = node.args[:n], node.args[n:]
    for s, p in zip(srcs, rec.picks):
        if not isinstance(s, fx.Node) or s.meta.get("time") != p.axis:
            raise refuse(node, f"is a loop over axis {p.axis} of a value whose time axis is "
                               f"{getattr(s, 'meta', {}).get('time')}: the loop must run over time")
    for o in outer:
        if isinstance(o, fx.Node) and o.meta.get("time") is not None:
            raise refuse(node, f"is a loop that reads the whole sequence ({o.name}) at every step: its memory grows "
                               "with the stream")
    ts = [ctx.timings[s] for s in srcs]
    if len({(t.delay, t.first) for t in ts}) != 1 or any(t.pad is not None for t in ts):
        raise refuse(node, "is a loop over sequences of different delays (or a padded one)")
    t = ts[0]
    return Build(RecurrenceOp(rec, t.first), Timing(t.delay, t.first, None, rate=t.rate))


STREAM_OPS.register(Recurrence, _build)
