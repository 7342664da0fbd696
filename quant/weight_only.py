"""Schemes ``int8-weight-only`` and ``int4-weight-only``: weights in blocks of ``block_size`` input values, one
scale per block, activations float. ONNX only: ``onnxruntime``'s ``MatMulNBits`` (8 or 4 bits) dequantizes the
blocks inside its kernel. ExecuTorch's XNNPACK has no float-activation / int8-weight linear here (its lowering
leaves ``dequantize_per_channel`` without a kernel), and FACTS.md records torchao weight-only int8 through
ExecuTorch giving wrong outputs; so it is refused there.

The grid is the one onnxruntime's block quantizer uses (symmetric, ``scale = v_max / -2^(bits-1)`` where ``v_max``
is the block's value of largest magnitude, ``q = clamp(round(v / scale), -2^(bits-1), 2^(bits-1) - 1)``), so its
re-quantization of our dequantized weights gives back the same integers and the eager step is the exact reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgeseq.errors import ConfigError
from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.quant.qlinear import swap_linears


@dataclass(frozen=True)
class Int8WeightOnlyConfig(QuantConfig):
    scheme = "int8-weight-only"
    block_size: int = 32  # input values per scale (a power of two, >= 16)


@dataclass(frozen=True)
class Int4WeightOnlyConfig(QuantConfig):
    scheme = "int4-weight-only"
    block_size: int = 32


def block_quantize(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """The dequantized weights on onnxruntime's symmetric block grid (blocks along the input dimension)."""
    out_f, in_f = w.shape
    pad = (-in_f) % block
    wp = F.pad(w.detach().float(), (0, pad)).reshape(out_f, -1, block)  # (out, blocks, block)
    idx = wp.abs().argmax(-1, keepdim=True)
    vmax = wp.gather(-1, idx)  # signed value of largest magnitude
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = vmax / lo
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(wp / safe), lo, hi)
    deq = torch.where(scale == 0, torch.zeros_like(wp), q * scale)
    return deq.reshape(out_f, -1)[:, :in_f].contiguous()


class WeightOnlyLinear(nn.Linear):
    """A float ``nn.Linear`` whose weights sit on the block grid (what MatMulNBits computes with)."""

    def __init__(self, lin: nn.Linear, bits: int, block: int):
        super().__init__(lin.in_features, lin.out_features, bias=lin.bias is not None)
        self.bits, self.block = bits, block
        with torch.no_grad():
            self.weight.copy_(block_quantize(lin.weight, bits, block))
            if lin.bias is not None:
                self.bias.copy_(lin.bias)
        self.weight.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights int{self.bits} in blocks of {self.block}"


def _bits(config) -> int:
    return 8 if isinstance(config, Int8WeightOnlyConfig) else 4


def _apply(step, config, cal) -> int:
    b = config.block_size
    if b < 16 or b & (b - 1):
        raise ConfigError(f"{config.scheme}: block_size must be a power of two >= 16, got {b}")
    return swap_linears(step, lambda lin: WeightOnlyLinear(lin, _bits(config), b))


def gemm_to_matmul(path: Path) -> None:
    """MatMulNBits' quantizer rewrites MatMul nodes only; torch exports ``linear`` on 2-D inputs as Gemm
    (transB=1, constant B). Rewrite those as MatMul (B transposed, stored) + Add (bias)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type != "Gemm" or n.input[1] not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0):
            nodes.append(n)
            continue
        b = numpy_helper.to_array(inits[n.input[1]])
        if attrs.get("transB", 0):
            b = b.T.copy()
        bname = n.input[1] + "_kn"
        model.graph.initializer.append(numpy_helper.from_array(b, bname))
        mm_out = n.output[0] + "_mm" if len(n.input) > 2 else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], bname], [mm_out], name=n.name + "_matmul"))
        if len(n.input) > 2:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(path))


def _lower_onnx(float_path: Path, out_path: Path, config, step) -> None:
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # INFO per node
    gemm_to_matmul(float_path)
    q = MatMulNBitsQuantizer(onnx.load(str(float_path)), bits=_bits(config), block_size=config.block_size,
                             is_symmetric=True, op_types_to_quantize=("MatMul",))
    q.process()
    q.model.save_model_to_file(str(out_path), use_external_data_format=False)


for _cfg, _bits_n in ((Int8WeightOnlyConfig, 8), (Int4WeightOnlyConfig, 4)):
    register_scheme(Scheme(
        name=_cfg.scheme, config=_cfg, targets=("onnx",),
        summary=f"int{_bits_n} weights in blocks (one scale per block), float activations; onnxruntime MatMulNBits",
        apply=_apply, lower_onnx=_lower_onnx, tolerance=1e-3,
    ))
