"""The eager quantized linear layer every int8 scheme shares, written in the PT2E reference representation.

``QuantLinear`` stores 8-bit weights per output channel in one of three formats (``WEIGHT_FORMATS``): ``int8``
(symmetric, -127..127, as XNNPACK uses), ``int8-reduced`` (symmetric, -64..64: onnxruntime's ``reduce_range``) or
``uint8`` (asymmetric, 0..255 with a zero point per channel: onnxruntime's ``QUInt8`` weights), and computes

    dynamic:  y = linear(dq(q(x; qparams of this x)), dq(W_q), b)          activations: per tensor, int8 affine
    static:   y = dq(q(linear(dq(q(x; s_in)), dq(W_q), b); s_out))        s_in, s_out calibrated on rollouts;
                                                                          b rounded to the int32 grid s_in * s_w

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
from edgeseq.quant import flips

# registers the quantized_decomposed ops (torch's own copy; torchao, which ExecuTorch imports, registers the same)
import torch.ao.quantization.fx._decomposed  # noqa: F401,E402

qd = torch.ops.quantized_decomposed

QMIN, QMAX = -128, 127  # activations: int8 affine
WQMIN, WQMAX = -127, 127  # weights: int8 symmetric (no -128: keeps the range symmetric)
EPS = 2.0**-12  # smallest activation scale (an all-zero tensor still gets a usable scale)


REDUCED_WQMAX = 64  # onnxruntime's reduced int8 range (-64..64): see check_weight_format for why ONNX needs it
# weight formats: "int8" (symmetric -127..127), "int8-reduced" (symmetric -64..64), "uint8" (asymmetric 0..255)
WEIGHT_FORMATS = ("int8", "int8-reduced", "uint8")


def quantize_weight_per_channel(w: torch.Tensor, qmax: int = WQMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel, values in -qmax..qmax: returns (int8 weights, float32 scales).

    The grid is the one ``onnxruntime.quantization`` computes for symmetric int8 weights (scale = max|w| / qmax),
    so re-quantizing the dequantized weights there gives back the same integers."""
    scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / qmax).clamp_min(1e-12).float()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w.detach() / scale.view(shape)), -qmax, qmax).to(torch.int8)
    return q, scale


def quantize_weight_per_channel_uint8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric uint8 per output channel, values in 0..255: returns (uint8 weights, float32 scales, int64 zero
    points). The range of each channel is widened to include 0 (so 0 is exact) and mapped onto 0..255: the grid
    ``onnxruntime.quantization`` computes for ``QUInt8`` weights (scale = (max - min) / 255 in float64, zero point
    = round(-min / scale)), so re-quantizing the dequantized weights there gives back the same grid."""
    wd = w.detach().double().reshape(w.shape[0], -1)
    lo, hi = wd.amin(dim=1).clamp_max(0.0), wd.amax(dim=1).clamp_min(0.0)
    scale = (hi - lo) / 255.0
    ok = scale.float() > torch.finfo(torch.float32).tiny
    zp = torch.where(ok, torch.round(-lo / torch.where(ok, scale, torch.ones_like(scale))), torch.zeros_like(lo))
    scale32 = torch.where(ok, scale, torch.ones_like(scale)).float()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.round(w.detach().float() / scale32.view(shape)) + zp.view(shape).float()
    return torch.clamp(q, 0, 255).to(torch.uint8), scale32, zp.to(torch.int64)


def bias_scale(in_scale: float, weight_scale: torch.Tensor) -> torch.Tensor:
    """The grid of a static layer's int32 bias per output channel: input scale x weight scale (float32)."""
    return (torch.tensor(in_scale, dtype=torch.float32) * weight_scale.float()).float()


def round_bias(bias: torch.Tensor, in_scale: float, weight_scale: torch.Tensor) -> torch.Tensor:
    """``bias`` rounded onto :func:`bias_scale`'s grid (int32 range), as float32: what an int8 kernel that adds
    an int32 bias to its accumulator computes with (onnxruntime's ``QGemm``, XNNPACK's ``qs8`` kernels)."""
    scale = bias_scale(in_scale, weight_scale)
    q = torch.clamp(torch.round(bias.detach().double() / scale.double()), -(2**31), 2**31 - 1)
    return (q * scale.double()).float()


def affine_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Per-tensor int8 affine scale and zero point for the range [lo, hi] (widened to include 0), the same
    formula as ``quantized_decomposed.choose_qparams``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (QMAX - QMIN), EPS)
    zp = int(min(max(QMIN - round(lo / scale), QMIN), QMAX))
    return float(scale), zp


def symmetric_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Per-tensor symmetric int8 scale for the range [lo, hi]: max(|lo|, |hi|) / 127, zero point 0 (the grid
    TensorRT's explicit quantization takes: its Q/DQ scales are symmetric, zero points 0)."""
    return float(max(max(abs(lo), abs(hi)) / QMAX, EPS)), 0


ACTIVATION_GRIDS = ("affine", "symmetric")


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

    def qparams(self, grid: str = "affine") -> tuple[float, int]:
        if self.lo > self.hi:
            raise RuntimeError("observer saw no data")  # calibrate() always runs data through first
        return (symmetric_qparams if grid == "symmetric" else affine_qparams)(self.lo, self.hi)


class QuantLinear(nn.Module):
    """8-bit per-channel weights (format ``weights``, one of ``WEIGHT_FORMATS``); activations ``"dynamic"`` (per
    call) or ``"static"`` (calibrated, on an ``"affine"`` or ``"symmetric"`` int8 grid: ``grid``)."""

    def __init__(self, linear: nn.Linear, act: str, weights: str = "int8", grid: str = "affine"):
        super().__init__()
        if act not in ("dynamic", "static"):
            raise ValueError(f"act must be 'dynamic' or 'static', got {act!r}")
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        if grid not in ACTIVATION_GRIDS:
            raise ValueError(f"grid must be one of {ACTIVATION_GRIDS}, got {grid!r}")
        self.act, self.weights, self.grid = act, weights, grid
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if weights == "uint8":
            q, s, zp = quantize_weight_per_channel_uint8(linear.weight)
            self.wqrange, self.wdtype = (0, 255), torch.uint8
        else:
            qmax = REDUCED_WQMAX if weights == "int8-reduced" else WQMAX
            q, s = quantize_weight_per_channel(linear.weight, qmax)
            zp = torch.zeros(s.shape, dtype=torch.int64)
            self.wqrange, self.wdtype = (-qmax, qmax), torch.int8
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", s)
        self.register_buffer("weight_zero_point", zp)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        # static activation qparams (scale, zero point), set by calibration; python numbers so that tracing bakes
        # them into the graph as constants; the buffers carry them into state_dict() and the fingerprint
        self.in_q: tuple[float, int] | None = None
        self.out_q: tuple[float, int] | None = None
        self.register_buffer("in_qparams", torch.zeros(2))
        self.register_buffer("out_qparams", torch.zeros(2))
        self.observers: nn.ModuleDict | None = None

    def weight(self) -> torch.Tensor:
        lo, hi = self.wqrange
        return qd.dequantize_per_channel(self.weight_q, self.weight_scale, self.weight_zero_point, 0, lo, hi, self.wdtype)

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
        self.in_q = self.observers["inp"].qparams(self.grid)
        self.out_q = self.observers["out"].qparams(self.grid)
        self.in_qparams.copy_(torch.tensor(self.in_q, dtype=torch.float32))
        self.out_qparams.copy_(torch.tensor(self.out_q, dtype=torch.float32))
        self.observers = None
        if self.bias is not None:  # int8 kernels add the bias as int32 on the accumulator's grid: round it there too
            with torch.no_grad():
                self.bias.copy_(round_bias(self.bias, self.in_q[0], self.weight_scale))

    @staticmethod
    def _fq(x: torch.Tensor, qp: tuple[float, int]) -> torch.Tensor:
        s, z = qp
        q = qd.quantize_per_tensor(x, s, z, QMIN, QMAX, torch.int8)
        q = flips.seen(x, s, z, q, QMIN, QMAX)  # as a rounding-boundary audit (quant/flips.py) has it, if one runs
        return qd.dequantize_per_tensor(q, s, z, QMIN, QMAX, torch.int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observers is not None:  # calibrating: float math, record ranges
            y = F.linear(self.observers["inp"](x), self.weight(), self.bias)
            return self.observers["out"](y)
        if self.act == "dynamic":
            s, z = qd.choose_qparams.tensor(x, QMIN, QMAX, EPS, torch.int8)
            q = qd.quantize_per_tensor.tensor(x, s, z, QMIN, QMAX, torch.int8)
            q = flips.seen(x, s, z, q, QMIN, QMAX)  # as a rounding-boundary audit (quant/flips.py) has it, if one runs
            return F.linear(qd.dequantize_per_tensor.tensor(q, s, z, QMIN, QMAX, torch.int8), self.weight(), self.bias)
        if self.in_q is None or self.out_q is None:
            raise RuntimeError("static QuantLinear used before calibration")  # quantize_ always calibrates
        y = F.linear(self._fq(x, self.in_q), self.weight(), self.bias)
        return self._fq(y, self.out_q)

    def extra_repr(self) -> str:
        lo, hi = self.wqrange
        grid = f" ({self.grid})" if self.act == "static" else ""
        return f"{self.in_features}, {self.out_features}, act={self.act}{grid}, weights={self.weights} per-channel ({lo}..{hi})"


def check_weight_format(config, target: str) -> None:
    """Refuse a weight format the target cannot run correctly, before any work.

    - ExecuTorch (XNNPACK) takes symmetric int8 weights: ``uint8`` is refused there.
    - onnx refuses full-range ``int8``: onnxruntime's x86 kernels without VNNI (this machine: AVX2) multiply u8
      activations by s8 weights with VPMADDUBSW, which sums pairs of products in int16 and saturates with
      full-range weights, giving wrong outputs without an error (measured here: 0.43 max error on one 76x256
      layer vs 0.006 with the reduced range; relative error 0.13 on a 1024x2048 layer). ``uint8`` weights (the
      u8 x u8 kernels widen to int16 before multiplying: no saturation) and ``int8-reduced`` (-64..64) are exact.
    """
    weights = config.weights
    if target == "tensorrt" and weights != "int8":
        raise ConfigError(f"{config.scheme} on tensorrt takes int8 weights (TensorRT's explicit quantization is "
                          f"symmetric int8): use weights='int8' (CLI: --weights int8), its default there")
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"{config.scheme}: weights={weights!r} is not a weight format; choose from {', '.join(WEIGHT_FORMATS)}")
    if target == "executorch" and weights == "uint8":
        raise ConfigError(
            f"{config.scheme} on executorch takes int8 weights (XNNPACK's kernels are symmetric int8): use "
            "weights='int8' (CLI: --weights int8); uint8 weights are for the onnx target"
        )
    if target == "onnx" and weights == "int8":
        fmt = default_weights("onnx")
        raise ConfigError(
            f"{config.scheme} on onnx cannot use full-range int8 weights: onnxruntime's x86 int8 kernels saturate with "
            f"them on CPUs without VNNI and give wrong outputs without an error; use weights='{fmt}' (CLI: --weights "
            f"{fmt}, the onnx default)"
        )


def default_weights(target: str) -> str:
    """The weight format the int8 schemes use on ``target`` unless told otherwise: ``int8`` on ExecuTorch, ``uint8``
    on onnx (full 8 bits without saturation; the 7-bit grid drifts on long LSTM streams), ``int8`` on TensorRT
    (symmetric only). The CLI and the benchmarks take it from here."""
    return "uint8" if target == "onnx" else "int8"


def default_grid(target: str) -> str:
    """The static int8 schemes' activation grid on ``target`` unless told otherwise: ``symmetric`` on TensorRT (its
    explicit quantization takes zero points 0 only), ``affine`` elsewhere (a zero point uses all 256 levels on a
    one-sided range, e.g. after a ReLU)."""
    return "symmetric" if target == "tensorrt" else "affine"


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
