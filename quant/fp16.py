"""Scheme ``fp16``: weights and arithmetic in float16 (XNNPACK's f16 kernels on ARM cores with FP16 arithmetic).

The step casts its input and state to float16 at the boundary and its output back to float32; the state stays
stored as float32 unless the state policy stores it as float16 too. ExecuTorch only: ONNX Runtime's CPU provider
has float16 kernels for few operators and would insert casts around the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeseq.quant.config import QuantConfig, Scheme, register_scheme
from edgeseq.quant.qlinear import use_linear_forms


@dataclass(frozen=True)
class Fp16Config(QuantConfig):
    scheme = "fp16"


def _apply(step, config: Fp16Config, cal) -> int:
    # a continual network's dense temporal convolutions as linear layers: XNNPACK keeps a float16 convolution's
    # weights as float32 in the program (a 3x64 TCN's file did not shrink: 1.02x), a float16 linear's as float16
    use_linear_forms(step)
    n = sum(1 for p in step.parameters() if p.is_floating_point())
    step.to(torch.float16)
    return n


register_scheme(Scheme(
    name="fp16", config=Fp16Config, targets=("executorch",),
    summary="float16 weights and arithmetic; input, output and (by default) state float32",
    apply=_apply, tolerance=5e-2, compute_dtype="float16", peak_precision="fp16",
))
