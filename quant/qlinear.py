"""The eager quantized linear layer every int8 scheme shares, written in the PT2E reference representation.

``QuantLinear`` stores int8 weights with one symmetric scale per output channel (range -127..127, as XNNPACK
and ``onnxruntime.quantization`` use) and computes

    dynamic:  y = linear(dq(q(x; qparams of this x)), dq(W_q), b)          activations: per tensor, int8 affine
    static:   y = dq(q(linear(dq(q(x; s_in)), dq(W_q), b); s_out))        s_in, s_out calibrated on rollouts

with ``torch.ops.quantized_decomposed`` quantize/dequantize ops: the same graph PT2E's ``convert_pt2e`` writes,
so ExecuTorch's XNNPACK partitioner lowers the traced step to its int8 kernels directly, and the eager module is
the exact reference the artifact is checked against. ``dequantized()`` gives the float ``nn.Linear`` with the
int8 weights dequantized (what the ONNX path exports before ``onnxruntime.quantization`` rewrites it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseq.errors import ConfigError

# registers the quantized_decomposed ops (torch's own copy; torchao, which ExecuTorch imports, registers the same)
import torch.ao.quantization.fx._decomposed  # noqa: F401,E402

qd = torch.ops.quantized_decomposed

QMIN, QMAX = -128, 127  # activations: int8 affine
WQMIN, WQMAX = -127, 127  # weights: int8 symmetric (no -128: keeps the range symmetric)
EPS = 2.0**-12  # smallest activation scale (an all-zero tensor still gets a usable scale)


REDUCED_WQMAX = 64  # onnxruntime's reduced int8 range (-64..64): see int8_dynamic.py for why ONNX needs it


def quantize_weight_per_channel(w: torch.Tensor, qmax: int = WQMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel, values in -qmax..qmax: returns (int8 weights, float32 scales).

    The grid is the one ``onnxruntime.quantization`` computes for symmetric int8 weights (scale = max|w| / qmax),
    so re-quantizing the dequantized weights there gives back the same integers."""
    scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / qmax).clamp_min(1e-12).float()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w.detach() / scale.view(shape)), -qmax, qmax).to(torch.int8)
    return q, scale


def affine_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Per-tensor int8 affine scale and zero point for the range [lo, hi] (widened to include 0), the same
    formula as ``quantized_decomposed.choose_qparams``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (QMAX - QMIN), EPS)
    zp = int(min(max(QMIN - round(lo / scale), QMIN), QMAX))
    return float(scale), zp


class RangeObserver(nn.Module):
    """Running min and max of everything it sees (calibration)."""

    def __init__(self):
        super().__init__()
        self.lo, self.hi = float("inf"), float("-inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel():
            self.lo = min(self.lo, float(x.detach().min()))
            self.hi = max(self.hi, float(x.detach().max()))
        return x

    def qparams(self) -> tuple[float, int]:
        if self.lo > self.hi:
            raise RuntimeError("observer saw no data")  # calibrate() always runs data through first
        return affine_qparams(self.lo, self.hi)


class QuantLinear(nn.Module):
    """int8 per-channel weights; activations ``"dynamic"`` (per call) or ``"static"`` (calibrated)."""

    def __init__(self, linear: nn.Linear, act: str, reduce_range: bool = False):
        super().__init__()
        if act not in ("dynamic", "static"):
            raise ValueError(f"act must be 'dynamic' or 'static', got {act!r}")
        self.act = act
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.wqmax = REDUCED_WQMAX if reduce_range else WQMAX
        q, s = quantize_weight_per_channel(linear.weight, self.wqmax)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", s)
        self.register_buffer("weight_zero_point", torch.zeros(s.shape, dtype=torch.int64))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        # static activation qparams (scale, zero point), set by calibration; python numbers so that tracing bakes
        # them into the graph as constants; the buffers carry them into state_dict() and the fingerprint
        self.in_q: tuple[float, int] | None = None
        self.out_q: tuple[float, int] | None = None
        self.register_buffer("in_qparams", torch.zeros(2))
        self.register_buffer("out_qparams", torch.zeros(2))
        self.observers: nn.ModuleDict | None = None

    def weight(self) -> torch.Tensor:
        return qd.dequantize_per_channel(self.weight_int8, self.weight_scale, self.weight_zero_point, 0, -self.wqmax, self.wqmax, torch.int8)

    def dequantized(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def start_calibration(self) -> None:
        self.observers = nn.ModuleDict({"inp": RangeObserver(), "out": RangeObserver()})

    def finish_calibration(self) -> None:
        assert self.observers is not None
        self.in_q = self.observers["inp"].qparams()
        self.out_q = self.observers["out"].qparams()
        self.in_qparams.copy_(torch.tensor(self.in_q, dtype=torch.float32))
        self.out_qparams.copy_(torch.tensor(self.out_q, dtype=torch.float32))
        self.observers = None

    @staticmethod
    def _fq(x: torch.Tensor, qp: tuple[float, int]) -> torch.Tensor:
        s, z = qp
        return qd.dequantize_per_tensor(qd.quantize_per_tensor(x, s, z, QMIN, QMAX, torch.int8), s, z, QMIN, QMAX, torch.int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observers is not None:  # calibrating: float math, record ranges
            y = F.linear(self.observers["inp"](x), self.weight(), self.bias)
            return self.observers["out"](y)
        if self.act == "dynamic":
            s, z = qd.choose_qparams.tensor(x, QMIN, QMAX, EPS, torch.int8)
            xq = qd.dequantize_per_tensor.tensor(qd.quantize_per_tensor.tensor(x, s, z, QMIN, QMAX, torch.int8), s, z, QMIN, QMAX, torch.int8)
            return F.linear(xq, self.weight(), self.bias)
        if self.in_q is None or self.out_q is None:
            raise RuntimeError("static QuantLinear used before calibration")  # quantize_ always calibrates
        y = F.linear(self._fq(x, self.in_q), self.weight(), self.bias)
        return self._fq(y, self.out_q)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, act={self.act}, weights=int8 per-channel (-{self.wqmax}..{self.wqmax})"


def check_onnx_range(config, target: str) -> None:
    """int8 schemes on onnx need weights in -64..64: onnxruntime's x86 kernels without VNNI sum pairs of u8 x s8
    products in int16, which saturates with full-range weights (measured here: 0.43 max error on one 76x256
    layer, vs 0.006 with the reduced range) and gives wrong outputs without an error."""
    if target == "onnx" and not config.reduce_range:
        raise ConfigError(
            f"{config.scheme} on onnx needs reduce_range=True (CLI: --reduce-range): onnxruntime's x86 int8 kernels "
            "saturate with full-range int8 weights on CPUs without VNNI and give wrong outputs without an error"
        )


def use_linear_forms(module: nn.Module) -> int:
    """Ask every module below ``module`` with a ``use_linear()`` method (a continual network's dense temporal
    convolution, which at one output frame is a matrix product with its taps) to rewrite itself as an
    ``nn.Linear``; return how many did."""
    return sum(1 for m in list(module.modules()) if callable(getattr(m, "use_linear", None)) and m.use_linear())


def swap_linears(module: nn.Module, make) -> int:
    """Replace every ``nn.Linear`` below ``module`` (after :func:`use_linear_forms`) by ``make(linear)``; return
    how many were replaced."""
    use_linear_forms(module)
    return _swap(module, make)


def _swap(module: nn.Module, make) -> int:
    n = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            n += 1
        else:
            n += _swap(child, make)
    return n


def dequantized_copy(step: nn.Module) -> nn.Module:
    """A deep copy of ``step`` with every :class:`QuantLinear` back as a float ``nn.Linear`` (dequantized weights)."""
    import copy

    float_step = copy.deepcopy(step)

    def back(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, QuantLinear):
                setattr(module, name, child.dequantized())
            else:
                back(child)

    back(float_step)
    return float_step
