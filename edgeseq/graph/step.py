"""The graph converter: a user's causal model, traced, annotated and rewritten into a :class:`GraphStep`.

Passes, each reading what the one before wrote on the graph's nodes (``node.meta``):

1. :func:`edgeseq.graph.trace.trace` -- the model as a torch.fx graph, temporal modules as leaves;
2. :func:`edgeseq.graph.analyze.time_axes` -- the time axis of every value (runs at two lengths);
3. :func:`plan` -- per node: run as is on the one-frame value (per-frame operations, checked to read no other
   frame), or a stream operation with explicit state (:mod:`edgeseq.graph.ops`), with delay lines where values
   of different delays meet; everything else is refused before any step exists;
4. :class:`GraphStep` -- the step: the same graph run on a value whose time axis has length 1.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeseq.errors import ShapeError
from edgeseq.graph import analyze, attention
from edgeseq.graph.ops import (
    BuildCtx, DelayOp, Flat, GraphOp, LeafStepOp, StreamRefusal, Timing, align, find_builder, full, held, refuse,
)
from edgeseq.graph.aten import SHAPE_OPS as ATEN_SHAPE_OPS
from edgeseq.graph.frame import FrameModule, frame_rewrite
from edgeseq.graph.trace import trace
from edgeseq.step import State, StateSpec, StateTensor, StepInfo, StepModule

# tensor-making operations that may take a size read from the time axis: in the step that size is 1, and these
# build the same one-frame tensor with it (folding time into the batch and back)
SHAPE_OPS = {"view", "reshape", "expand", "unflatten", "flatten", "new_zeros", "new_ones", "new_empty", "expand_as",
             torch.reshape, torch.flatten, torch.unflatten} | ATEN_SHAPE_OPS


@dataclass
class Entry:
    node: fx.Node
    op: str | None = None  # name of its GraphOp in GraphStep.ops (None: run the node as is)
    delays: dict = field(default_factory=dict)  # input node -> name of the DelayOp that aligns it
    frame: tuple[int, ...] | None = None  # its value's shape in the step (batch excluded, time as 1)
    mode: str | None = None  # how it takes a Flat input (ops.Flat): "leaf", "elementwise", "last", "retime";
    # None: reshaped to its full value first
    rest: tuple[int, ...] = ()  # "retime": its value's shape without batch and time (the Flat's)


def _state_prefix(node: fx.Node) -> str:
    """A state's name: the module path of what made it (``front.conv``), or the graph's name for tensor code."""
    if "state_prefix" in node.meta:
        return node.meta["state_prefix"]
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")  # a torch.export graph: the module the ATen call came from
    path = list(stack.values())[-1][0] if stack else ""
    return path or node.name


def plan(gm: fx.GraphModule, env: dict, out_axis_expected: int) -> tuple[list[Entry], dict[str, GraphOp], Timing]:
    """Decide what every node becomes in the step (see the module doc); refuse what cannot stream."""
    timings: dict[fx.Node, Timing] = {}
    entries: list[Entry] = []
    ops: dict[str, GraphOp] = {}
    lines: dict[tuple[fx.Node, int], str] = {}
    pairs: dict[fx.Node, tuple[set, str] | None] = {}  # tuple-valued nodes: which elements stream (None: all)
    frames: dict[fx.Node, tuple[int, ...]] = {}  # per-frame values: their shape in the step
    out_timing = None
    for node in gm.graph.nodes:
        entry = Entry(node)
        entries.append(entry)
        value, axis = env.get(node), node.meta.get("time")
        if isinstance(value, torch.Tensor) and axis is not None and axis >= 1:
            frames[node] = tuple(1 if i == axis else s for i, s in enumerate(value.shape))[1:]
        if node.op == "placeholder":
            timings[node] = Timing()
            continue
        if node.op == "output":
            res = node.args[0]
            if not isinstance(res, fx.Node) or not isinstance(env[res], torch.Tensor):
                raise StreamRefusal(f"{type(gm).__name__}.forward returns {type(env.get(res, res)).__name__}, not one "
                                    "tensor: the graph converter streams models with one output tensor (return the "
                                    "sequence output alone)")
            if res.meta.get("time") is None:
                raise refuse(res, "is the model's output and has no time axis (a reduction over time, or one frame "
                                  "picked): a stream needs an output per frame, with the input's time axis")
            if res.meta["time"] != out_axis_expected:
                raise refuse(res, f"is the model's output with time on axis {res.meta['time']}; the input has it on "
                                  f"axis {out_axis_expected}: return the output in the input's layout")
            out_timing = timings[res]
            if out_timing.pad is not None:
                raise refuse(res, "is padded along time and returned as is")
            if out_timing.delay < 0:
                raise refuse(res, f"is the model's output, and its frame n depends on input frame n + {-out_timing.delay}: "
                                  "the model is not causal (right padding, or a slice that shifts time forward)")
            continue
        if node.op == "get_attr":
            continue
        if _element_of_pair(node, pairs):  # z, _ = self.gru(x): the sequence output
            timings[node] = timings[node.args[0]]
            continue
        tin = [a for a in node.all_input_nodes if a in timings and (a.meta.get("time") is not None or a in pairs)]
        if not node.meta.get("time_consistent", True):
            raise refuse(node, "changes the sizes of several axes with the sequence length, or its length by a "
                               "factor that is no whole fraction (time folded with something other than the "
                               "batch, or upsampled): the converter cannot follow its time axis")
        rates = sorted({timings[a].rate for a in tin})
        if len(rates) > 1:
            raise refuse(node, f"meets values at different frame rates (one frame every {rates} input frames): "
                               "subsample the faster one the same way first")
        builder = find_builder(gm, node)
        timed = tin or node.meta.get("time") is not None  # an arange over the length has no timed input
        built = builder(BuildCtx(gm, node, env, timings)) if builder is not None and timed else None
        if built is not None:
            if built.op is not None:
                name = _unique(ops, _state_prefix(node))
                ops[name] = built.op
                entry.op = name
                entry.mode = "leaf" if isinstance(built.op, LeafStepOp) else None
                _hold(built.op, [timings[a] for a in tin])
            _check_rate(node, built.timing)
            timings[node] = built.timing
            if isinstance(env[node], tuple):
                pairs[node] = built.element
            continue
        if node.op == "call_module" and builder is not None and not tin:
            raise refuse(node, "takes no time-carrying input")
        _check_length_ints(node, env)
        if not tin:
            if node.meta.get("time") is not None:
                raise refuse(node, "makes a tensor along time from the sequence length (torch.arange(T), zeros of "
                                   "length T): the graph converter cannot stream it yet")
            continue  # weights, constants, shapes: as in the model
        elements = node.meta.get("elements") if isinstance(env[node], (tuple, list)) else None
        if elements and all(isinstance(v, torch.Tensor) for v in env[node]):  # x.max(dim=-1): (values, indices)
            if any(e[0] is None for e in elements):
                raise refuse(node, "reduces over the time axis (a max, min or sort over the whole sequence): its "
                                   "result needs frames a stream has not seen yet")
            out_lengths = {e[1] for e in elements}
            pairs[node] = None
        elif node.meta.get("time") is None:
            if isinstance(env[node], torch.Tensor):
                raise refuse(node, "reduces over the time axis (a mean, sum, max, norm or attention over the whole "
                                   "sequence): its result needs frames a stream has not seen yet")
            continue  # an int (a size) or a tuple of values: no timing of its own
        else:
            out_lengths = {node.meta["length"]}
        lengths = {_length(a, env) for a in tin} | out_lengths
        if len(lengths) > 1:
            raise refuse(node, f"changes the number of frames ({sorted(lengths)}) in a way the converter does not "
                               "know (only padding, slicing and convolutions along time are rewritten)")
        if analyze.reads_other_frames(gm, node, env):
            raise refuse(node, "mixes frames: its output at frame t reads other frames (a convolution or recurrence "
                               "along time the converter has no stream form for, a flip, an attention or a pooling "
                               "over time); register a stream form with edgeseq.graph.register_stream_op")
        ts = [timings[a] for a in tin]
        out = align(ts)
        _check_rate(node, out)
        for a, t in zip(tin, ts):
            k = out.delay - t.delay
            if k % t.rate:
                raise refuse(node, f"meets values whose frames come at different phases (one frame every {t.rate} "
                                   f"input frames, {k % t.rate} apart): their strided layers must start on the same frame")
            if t.pad is not None and k // t.rate < t.pad[0]:
                raise refuse(node, "reads a sequence padded along time that no convolution or later frame consumes: "
                                   "padding along time must feed a convolution over time, or meet the unpadded "
                                   "sequence (the previous frame: F.pad(x, ...)[:, :-1] next to x)")
            if k > 0:
                if a in pairs:
                    raise refuse(node, "reads a pair of values (values, indices) that must wait for a slower input; "
                                       "pick the element first")
                if (a, k) not in lines:  # one delay line per value and delay, however many nodes read it
                    name = _unique(ops, f"{_state_prefix(a)}.delay")
                    frame = tuple(s if i != a.meta["time"] else 1 for i, s in enumerate(env[a].shape))[1:]
                    ops[name] = DelayOp(frame, k // t.rate, t.pad[1] if t.pad else 0.0)
                    _hold(ops[name], [t], padded=t.pad is not None)
                    lines[(a, k)] = name
                entry.delays[a] = lines[(a, k)]
        rewrite = frame_rewrite(gm, node, env)  # the same operation in a form the delegates run
        if rewrite is not None:
            entry.op = _unique(ops, _state_prefix(node))
            ops[entry.op] = rewrite
            _hold(rewrite, ts)
        entry.frame, entry.mode = _flat_mode(gm, node, env, rewrite, frames, entry.delays)
        if entry.mode == "retime":
            entry.rest = tuple(sz for i, sz in enumerate(env[node].shape) if i not in (0, node.meta["time"]))
        timings[node] = out
    return entries, ops, out_timing


def _hold(op: GraphOp, inputs: list[Timing], padded: bool = False) -> None:
    """Mark an op whose input comes every ``rate``-th step: the step holds its state in between (GraphOp.hold);
    a delay line starting full of a left padding (``padded``) holds it until the input's first real frame too."""
    if inputs and (inputs[0].rate > 1 or (padded and inputs[0].first)) and op.states():
        op.hold = (max(t.first for t in inputs), inputs[0].rate)


def _check_rate(node: fx.Node, timing: Timing) -> None:
    """The rate the plan followed must be the one the two runs of the model show (a stride the converter did not
    see as one, or frames stacked into features with a reshape, would give the step the wrong frames)."""
    seen = node.meta.get("rate", 1)
    if node.meta.get("time") is not None and timing.rate != seen:
        raise refuse(node, f"gives one frame every {seen} input frames, where the converter expected one every "
                           f"{timing.rate}: it changes the frame rate in a way the converter does not know (frames "
                           "stacked into features, or a stride of an operation without a stream form)")


ELEMENTWISE = {  # per-frame operations that act on each feature alone: they take a Flat value as it is
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.mul,
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, F.relu, F.gelu, F.silu, F.elu, F.leaky_relu,
    F.dropout, "add", "sub", "mul", "relu", "sigmoid", "tanh", "exp", "abs", "contiguous",
    torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.relu.default,
    torch.ops.aten.sigmoid.default, torch.ops.aten.tanh.default, torch.ops.aten.gelu.default,
    torch.ops.aten.silu.default, torch.ops.aten.dropout.default, torch.ops.aten.contiguous.default,
    nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity, nn.LeakyReLU, nn.ELU, nn.Hardswish,
}


def _flat_mode(gm: fx.GraphModule, node: fx.Node, env: dict, rewrite, frames: dict, delays: dict):
    """(the per-frame value's shape in the step, how ``node`` takes a Flat input): elementwise ops whose inputs
    all have its shape, and ``Linear`` / a rewritten LayerNorm over a last axis that is not time."""
    value, axis, frame = env[node], node.meta.get("time"), frames.get(node)
    if frame is None:
        return None, None
    tensors = [a for a in node.all_input_nodes if isinstance(env[a], torch.Tensor)]
    if delays or any(a not in frames for a in tensors):
        return frame, None  # a weight, a constant or a delayed input: run on the full value
    key = type(gm.get_submodule(node.target)) if node.op == "call_module" else node.target
    if rewrite is None and key in ELEMENTWISE and all(frames[a] == frame for a in tensors):
        return frame, "elementwise"  # (no broadcasting between values of different shapes)
    if rewrite is None and len(tensors) == 1 and _moves_time_only(env[tensors[0]], tensors[0].meta["time"], value, axis):
        return frame, "retime"  # a transpose that only moves time: on one frame, nothing moves
    last = value.dim() - 1 != axis and len(tensors) == 1 and tensors[0].meta.get("time") == axis
    if last and (isinstance(rewrite, FrameModule) or (rewrite is None and key is nn.Linear)):
        return frame, "last"
    return frame, None


def _moves_time_only(src: torch.Tensor, a: int, value: torch.Tensor, b: int) -> bool:
    """``value`` is ``src`` with its time axis moved from ``a`` to ``b`` and nothing else changed (the transposes
    around a convolution over time: (B, T, C) <-> (B, C, T))."""
    return value.dim() == src.dim() and a != b and value.shape == src.movedim(a, b).shape and torch.equal(value, src.movedim(a, b))


def _element_of_pair(node: fx.Node, pairs: dict) -> bool:
    """``node`` picks an element of a tuple-valued node (``out, h_n = self.gru(x)``, ``x.cummax(1).values``,
    ``x.max(dim=-1)[0]``): True when that element streams; a stream op's other element is refused (an RNN's h_n is
    the state after the whole sequence; a running max's indices count frames from the sequence start)."""
    import operator

    src = node.args[0] if node.args else None
    if node.target not in (operator.getitem, getattr) or src not in pairs:
        return False
    allowed = pairs[src]
    if allowed is not None and node.args[1] not in allowed[0]:
        raise refuse(src, allowed[1])
    return True


def _length(node: fx.Node, env: dict) -> int:
    elements = node.meta.get("elements") if node.meta.get("time") is None else None
    return elements[0][1] if elements else node.meta["length"]


def _check_length_ints(node: fx.Node, env: dict) -> None:
    """A size read from the time axis is 1 in the step: it may only shape tensors (fold time into the batch)."""
    if not any(a.meta.get("int_of_length") for a in node.all_input_nodes):
        return
    if node.target in SHAPE_OPS or not isinstance(env[node], torch.Tensor):
        return  # a shape, or an int computed from one
    raise refuse(node, "computes with the sequence length as a number (x.size(1) used in tensor arithmetic or to make "
                       "a tensor): in a stream the length is not known")


def _unique(ops: dict, name: str) -> str:
    base, i = name, 1
    while name in ops:
        i += 1
        name = f"{base}_{i}"
    return name


class GraphStep(StepModule):
    """A user's model as a step: the traced graph run on one frame (time axis of length 1), its stream
    operations' states threaded through. State names: ``<module path>.<tensor>`` (``front.conv.buf``,
    ``gru.h0``), plus ``frames`` (a step counter, saturating or wrapping within the period of its frame rates) when a buffer
    must wait for its first real frame or an op takes a frame every k-th step."""

    def __init__(self, gm: fx.GraphModule, entries: list[Entry], ops: dict[str, GraphOp], frame: tuple[int, ...],
                 time_axis: int, out_timing: Timing, out_frame: tuple[int, ...], info: StepInfo):
        super().__init__()
        self.net = gm
        self.graph_ops = nn.ModuleDict({_key(k): v for k, v in ops.items()})
        self.entries = entries
        self.names = list(ops)
        self.frame, self.time_axis = frame, time_axis  # the model's input without batch, time as length 1
        self.d_in, self.d_out = math.prod(frame), math.prod(out_frame)
        self.out_frame = out_frame
        tensors, self.slots = [], {}
        for name in self.names:
            own = ops[name].states()
            self.slots[name] = (len(tensors), len(tensors) + len(own))
            tensors += [StateTensor(f"{name}.{t.name}", t.shape, t.dtype, t.fill) for t in own]
        waits = [getattr(getattr(op, "conv", getattr(op, "pool", op)), "upstream", 0) or getattr(op, "first", 0)
                 for op in ops.values()]
        holds = [op.hold for op in ops.values() if op.hold is not None]
        self.cap = max(waits + [h[0] for h in holds], default=0)
        # the frame counter counts up to cap, then wraps within one period of the rates (their lcm), so that
        # (t - first) mod rate stays right for every op: a saturating counter where every rate is 1
        self.period = math.lcm(1, *(h[1] for h in holds))
        self.counted = bool(self.cap) or self.period > 1
        if self.counted:
            tensors.append(StateTensor("frames", (1,)))
        span = out_timing.span
        self.state_spec = StateSpec(tuple(tensors), delay=out_timing.delay,
                                    receptive_field=None if span is None else span + 1, output_stride=out_timing.rate)
        self.info = info
        self._mods: dict[str, nn.Module] = {}  # call_module targets, resolved on first use

    def _step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        t = state[-1] if self.counted else None
        env: dict[fx.Node, object] = {}
        delayed: dict[str, object] = {}  # a delay line's output this step (read by several nodes, stepped once)
        new: list[torch.Tensor] = []
        out = None
        for e in self.entries:
            n = e.node
            if n.op == "placeholder":
                # (B, d_in) is the input without its time axis when the rest of the frame is one axis
                flat = self.time_axis >= 1 and len(self.frame) == 2
                env[n] = Flat(x, self.frame) if flat else x.reshape(x.shape[0], *self.frame)
                continue
            if n.op == "output":
                out = env[n.args[0]]
                break
            if n.op == "get_attr":
                env[n] = _attr(self.net, n.target)
                continue
            local = env
            if e.delays:
                local = dict(env)
                for a, name in e.delays.items():
                    if name not in delayed:
                        lo, hi = self.slots[name]
                        delayed[name], s = _stepped(self.graph_ops[_key(name)], (full(env[a]),), {}, tuple(state[lo:hi]), t)
                        new += s
                    local[a] = delayed[name]
            env[n], s = self._run(e, local, state, t)
            new += s
        if self.counted:  # t + 1 until it reaches cap + period, then back by one period (cap itself where period is 1)
            new.append(t + 1.0 - float(self.period) * torch.clamp(t + 2.0 - float(self.cap + self.period), 0.0, 1.0))
        if isinstance(out, Flat) and out.t.dim() == 2:
            return out.t, tuple(new)
        out = full(out)
        return out.reshape(out.shape[0], -1), tuple(new)

    def _run(self, e: Entry, local: dict, state: State, t) -> tuple[object, tuple]:
        """One node on its inputs: a Flat input taken as it is where the node's mode allows (see :class:`Flat`)."""
        n = e.node
        if e.mode == "retime":  # the same numbers without a time axis: no op at all from a Flat, a view otherwise
            v = local[n.all_input_nodes[0]]
            return Flat(v.t if isinstance(v, Flat) else v.reshape(v.shape[0], *e.rest), e.frame), ()
        ins = [local[a] for a in n.all_input_nodes]
        flat = e.mode == "leaf" or (e.mode is not None and ins and all(isinstance(v, Flat) for v in ins))
        pick = (lambda a: local[a].t) if flat and e.mode != "leaf" else ((lambda a: local[a]) if flat else (lambda a: full(local[a])))
        args = fx.node.map_arg(n.args, pick)
        kwargs = fx.node.map_arg(n.kwargs, pick)
        s: tuple = ()
        if e.op is not None:
            lo, hi = self.slots[e.op]
            y, s = _stepped(self.graph_ops[_key(e.op)], args, kwargs, tuple(state[lo:hi]), t)
        elif n.op == "call_function":
            y = n.target(*args, **kwargs)
        elif n.op == "call_method":
            y = getattr(args[0], n.target)(*args[1:], **kwargs)
        else:
            mod = self._mods.get(n.target)
            if mod is None:  # looked up once: get_submodule walks the path on every call
                mod = self._mods[n.target] = self.net.get_submodule(n.target)
            y = mod(*args, **kwargs)
        if flat and e.mode != "leaf":
            y = Flat(y, e.frame)
        return y, s

    # the model's own layout <-> the step contract's (batch, T, d): check_parity and the CLI use these
    def frames_of(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input (its own layout) as step inputs (batch, T, d_in)."""
        a = self.time_axis
        return x.movedim(a, 1).reshape(x.shape[0], x.shape[a], -1)

    def inputs_of(self, x: torch.Tensor) -> torch.Tensor:
        """Step inputs (batch, T, d_in) in the model's own layout (the inverse of :meth:`frames_of`)."""
        a = self.time_axis
        rest = [s for i, s in enumerate(self.frame) if i != a - 1]
        return x.reshape(x.shape[0], x.shape[1], *rest).movedim(1, a)

    def outputs_of(self, y: torch.Tensor) -> torch.Tensor:
        """The model's output (its own layout) as step outputs (batch, T, d_out). Of a model returning (outputs,
        final state), as recurrent layers and the liquid / CfC libraries do, the outputs."""
        while isinstance(y, (tuple, list)) and y:
            y = y[0]
        a = self.time_axis
        return y.movedim(a, 1).reshape(y.shape[0], y.shape[a], -1)


def _stepped(op: GraphOp, args, kwargs, state: tuple, t) -> tuple[object, tuple]:
    """One stream op's step, its state held where its input is not fresh (``op.hold``)."""
    y, new = op.step(args, kwargs, state, t)
    if op.hold is not None:
        new = held(new, state, t, *op.hold)
    return y, new


def _key(name: str) -> str:
    """An op's name (a module path, ``front.conv``) as a ModuleDict key, which may not hold dots."""
    return name.replace(".", "/")


def _attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _traced(model: nn.Module, example: torch.Tensor, axis: int) -> fx.GraphModule:
    """The model as a graph: traced symbolically, or where that fails (a loop over time, a branch on a shape)
    traced unrolled by torch.export and its loop rolled into one step body (:mod:`edgeseq.graph.loops`)."""
    from edgeseq.errors import UnsupportedModuleError

    try:
        gm = trace(model)
    except UnsupportedModuleError as exc:
        from edgeseq.graph.loops import NoLoop, LoopRefusal, reroll

        try:
            return reroll(model, example, axis)
        except NoLoop:
            pass
        except LoopRefusal as why:
            raise UnsupportedModuleError(f"cannot convert {type(model).__name__}: traced unrolled (torch.export), "
                                         f"its loop over time cannot be rolled into one step: {why}") from None
        from edgeseq.graph.branches import BranchRefusal, exported

        try:
            return exported(model, example, axis, getattr(exc, "source_line", ""))
        except BranchRefusal as why:
            raise UnsupportedModuleError(f"cannot convert {type(model).__name__}: {why}") from None
        except Exception:  # torch.export cannot follow it either: the symbolic trace's reason stands
            raise exc from None
    if gm.meta.get("edgeseq_traced") and "edgeseq_loop" not in gm.meta:
        # a .pt2 program, exported at a fixed length: a loop over time in it is unrolled, and rolled back here
        from edgeseq.graph.loops import LoopRefusal, NoLoop, roll

        x = example[:1].detach().float()
        try:
            return roll(gm, x, model)
        except NoLoop:
            return gm
        except LoopRefusal as why:
            raise UnsupportedModuleError(f"cannot convert {type(model).__name__}: its loop over time (unrolled in the "
                                         f"program) cannot be rolled into one step: {why}") from None
    return gm


def convert_graph(model: nn.Module, example: torch.Tensor, time_axis: int = 1) -> GraphStep:
    """Trace ``model`` and rewrite it into a :class:`GraphStep` (see the module doc). ``example``: a real-shaped
    input (batch, time, *frame), or with time on ``time_axis`` (-1: (batch, channels, time))."""
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        raise ShapeError("convert: example must be a floating-point tensor (batch, time, ...)")
    if example.dim() < 2:
        raise ShapeError(f"convert: example must have a batch and a time axis, got shape {tuple(example.shape)}")
    axis = time_axis % example.dim()
    if axis == 0:
        raise ShapeError("convert: time_axis 0 is the batch axis; the model's input is (batch, time, ...) "
                         "(time_axis=1) or (batch, ..., time) (time_axis=-1)")
    if example.shape[axis] < 4:
        raise ShapeError(f"convert: the example has {example.shape[axis]} frames on axis {axis}; give at least 4 "
                         "(a real-length sequence traces best)")
    model = model.eval()
    gm = _traced(model, example, axis)
    from edgeseq.graph.scans import recognise

    recognise(gm)  # Heinsen's log-space scans as the recurrences they compute (edgeseq.graph.scans)
    x = example[:1].detach().float()
    if any((n.op == "call_function" and n.target in attention.SDPA) or (n.op == "call_module" and isinstance(
            gm.get_submodule(n.target), nn.MultiheadAttention)) for n in gm.graph.nodes):
        with torch.no_grad():  # attention masks evaluated at two lengths: a band of the last W frames streams
            attention.recognise(gm, analyze.run_recording(gm, x), analyze.run_recording(gm, analyze.longer(x, axis)))
    try:
        env = analyze.time_axes(gm, x, axis)
    except StreamRefusal:
        raise
    except Exception as exc:
        line = " ".join(str(exc).split())[:240]
        raise ShapeError(f"convert: {type(model).__name__} fails on the example of shape {tuple(example.shape)} "
                         f"(or one frame longer): {type(exc).__name__}: {line}") from None
    entries, ops, out_timing = plan(gm, env, axis)
    frame = tuple(s if i != axis else 1 for i, s in enumerate(x.shape))[1:]
    out = env[next(n for n in gm.graph.nodes if n.op == "output").args[0]]
    out_frame = tuple(s for i, s in enumerate(out.shape) if i not in (0, axis))
    info = StepInfo("graph", {"model": type(model).__name__, "time_axis": axis, "frame": list(frame),
                              "ops": {k: type(v).__name__ for k, v in ops.items()}})
    return GraphStep(gm, entries, ops, frame, axis, out_timing, out_frame, info).eval()
