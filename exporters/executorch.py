"""Target ``executorch``: ``torch.export`` -> XNNPACK-delegated edge program -> ``.pte``.

The batch is fixed at export time (``batch=``, recorded in the manifest): ExecuTorch 1.5's XNNPACK delegate
refused to resize its outputs for a dynamic batch in our trials, and edge streams usually run batch 1.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from edgeseq.errors import require
from edgeseq.exporters.base import Exporter, FlatStep, passthrough_states, register_exporter
from edgeseq.step import StepModule

_PLUMBING = {"getitem", "executorch_call_delegate"}


@register_exporter
class ExecuTorchExporter(Exporter):
    target = "executorch"
    suffix = ".pte"
    runtime = "executorch"
    dynamic_batch = False
    extra = "executorch"

    def write(self, step: StepModule, path: Path, batch: int, custom_ops: bool = False, **_options: Any) -> dict[str, Any]:
        et = require("executorch", "executorch")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass

        names = list(step.state_spec.names)
        passed = passthrough_states(step, batch)
        if custom_ops:  # edgeseq's own operators where the step has them (edgeseq/ops.py), in a copy of the step
            from edgeseq.ops import enable

            step, _ = enable(step)
        flat = FlatStep(step, drop=frozenset(passed)).eval()
        cl = channels_last_states(step)
        state = [s.contiguous(memory_format=torch.channels_last) if i in cl else s for i, s in enumerate(step.init_state(batch))]
        args = (step.example_input(None, batch), state)
        with torch.no_grad():
            ep = torch.export.export(flat, args, strict=False)
        info: dict[str, Any] = {}
        if getattr(step, "quantization", None) is not None:
            from edgeseq.quant.precision import state_storage
            from edgeseq.quant.verify import check_exported_program

            info["state_check"] = check_exported_program(
                ep, names, state_storage(step), {names[i]: names[j] for i, j in passed.items()})
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        lowered = edge.exported_program()
        graph = delegation_stats(lowered)
        # graph inputs and outputs not memory-planned: the program reads the caller's arrays in place (no copy in
        # per call; state is most of a continual network's traffic), and a caller that sets its output buffers
        # (the native runner: two state sets that swap) gets the next state written where it wants it, with no
        # copy out either; the Python bindings give unset outputs buffers of their own. Only while no output is a
        # graph input unchanged (such an output of an unplanned input comes back wrong, ExecuTorch 1.5.1, tested)
        # and no value is returned twice (one tensor, one buffer): passed-through state is left out above; a state
        # that is the input frame itself (a one-frame delay of x) keeps both planned.
        planned = returns_an_input(ep)
        planned_out = planned or returns_a_value_twice(lowered)
        program = edge.to_executorch(ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(
            alloc_graph_input=planned, alloc_graph_output=planned_out)))
        path.write_bytes(program.buffer)
        plan = program.executorch_program.execution_plan[0]
        graph["planned_arena_bytes"] = int(sum(plan.non_const_buffer_sizes))
        # outputs outside the plan live in buffers the runtime gives them (one set of next state and y per program)
        graph["unplanned_output_bytes"] = 0 if planned_out else output_bytes(lowered)
        return {
            "runtime": {"name": "executorch", "version": getattr(et, "__version__", _et_version()), "backend": "xnnpack",
                        "channels_last_state": [names[i] for i in cl], "planned_inputs": planned,
                        "planned_outputs": planned_out, "custom_ops": custom_op_names(lowered),
                        "passthrough_state": {names[i]: names[j] for i, j in sorted(passed.items())}},
            "graph": graph,
            **info,
        }


def returns_an_input(ep) -> bool:
    """Whether an output of the exported program is one of its user inputs, unchanged."""
    inputs = set(ep.graph_signature.user_inputs)
    return any(getattr(o, "op", None) == "placeholder" and o.name in inputs for o in graph_outputs(ep))


def graph_outputs(ep) -> list:
    """The values an exported program returns (nodes, in output order)."""
    return list(next(n for n in ep.graph.nodes if n.op == "output").args[0])


def output_bytes(ep) -> int:
    """Bytes of the exported program's outputs (from their example values)."""
    return int(sum(v.meta["val"].numel() * v.meta["val"].element_size() for v in graph_outputs(ep)))


def returns_a_value_twice(ep) -> bool:
    """Whether one value of the exported program is two of its outputs, or an output is a parameter, buffer or
    constant (a placeholder): such outputs cannot each be given a caller's buffer."""
    values = graph_outputs(ep)
    return len({id(v) for v in values}) != len(values) or any(getattr(v, "op", None) == "placeholder" for v in values)


def channels_last_states(step) -> list[int]:
    """Indices of the state tensors the program takes (and gives back) channels-last: those the step says hold
    image frames (``StepModule.image_states``: a 3D continual network's ring buffers). XNNPACK computes
    convolutions in NHWC; fed NCHW state, the program transposes every buffered frame in and every new one out (on
    the X3D-like step a third of its kernel time). The runtime must then pass these tensors channels-last: a
    program exported so reads an NCHW tensor's bytes as NHWC without an error (``runtimes/et.py`` converts, from
    the manifest's ``runtime.channels_last_state``). Decided by the step, not by rank: a Mamba-2 state is
    (heads, head dim, state dim) per stream and no image."""
    names = set(step.image_states())
    return [i for i, t in enumerate(step.state_spec.tensors) if t.name in names]


def delegation_stats(ep) -> dict[str, Any]:
    """Operators inside XNNPACK partitions vs operators left to portable kernels."""
    delegated: Counter = Counter()
    left: Counter = Counter()
    partitions = 0
    for node in ep.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            partitions += 1
            lowered = getattr(ep.graph_module, node.args[0].target)
            for inner in lowered.original_module.graph_module.graph.nodes:
                if inner.op == "call_function" and _op_name(inner.target) not in _PLUMBING:
                    delegated[_op_name(inner.target)] += 1
        elif name not in _PLUMBING:
            left[name] += 1
    total = sum(delegated.values()) + sum(left.values())
    return {
        "partitions": partitions,
        "delegated_ops": sum(delegated.values()),
        "non_delegated_ops": sum(left.values()),
        "delegated_fraction": (sum(delegated.values()) / total) if total else 1.0,
        "delegated": dict(sorted(delegated.items())),
        "non_delegated": dict(sorted(left.items())),
    }


def custom_op_names(ep) -> list[str]:
    """edgeseq's own operators the program calls, as its kernels register them (``edgeseq::ssm_update.out``):
    the operators of namespace ``edgeseq`` outside the delegate, which ``to_executorch`` turns into out forms."""
    found = set()
    for node in ep.graph_module.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "namespace", None) == "edgeseq":
            found.add(f"edgeseq::{node.target.__name__.split('.')[0]}.out")
    return sorted(found)


def _op_name(target) -> str:
    """``aten.mul.Tensor`` -> ``mul``; ``dim_order_ops._to_dim_order_copy.default`` -> ``_to_dim_order_copy``."""
    parts = getattr(target, "__name__", str(target)).split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _et_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
