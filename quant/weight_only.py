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


def _lower_onnx(float_path: Path, out_path: Path, config, step) -> None:
    import logging

    import onnx

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.setLevel(level)  # importing that module calls logging.basicConfig(level=INFO): every library's INFO
    root.handlers[:] = handlers  # lines (onnxscript's optimizer passes, ...) would reach the user's terminal
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # INFO per node
    from edgeseq.quant.onnx_select import expect_quantized, gemm_to_matmul, quantized_layer_paths, select_nodes

    gemm_to_matmul(float_path)  # MatMulNBits' quantizer rewrites MatMul nodes only
    nodes = select_nodes(float_path, quantized_layer_paths(step, (WeightOnlyLinear,)), suffixes=("", "_kn"))
    # this quantizer does not limit itself to nodes_to_include; excluding every other MatMul does
    graph = onnx.load(str(float_path))
    others = [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name not in nodes]
    q = MatMulNBitsQuantizer(graph, bits=_bits(config), block_size=config.block_size,
                             is_symmetric=True, nodes_to_exclude=others, op_types_to_quantize=("MatMul",))
    q.process()
    q.model.save_model_to_file(str(out_path), use_external_data_format=False)
    expect_quantized(out_path, len(nodes), "MatMulNBits")


for _cfg, _bits_n in ((Int8WeightOnlyConfig, 8), (Int4WeightOnlyConfig, 4)):
    register_scheme(Scheme(
        name=_cfg.scheme, config=_cfg, targets=("onnx",),
        summary=f"int{_bits_n} weights in blocks (one scale per block), float activations; onnxruntime MatMulNBits",
        apply=_apply, lower_onnx=_lower_onnx, tolerance=1e-3,
    ))
