"""Quantization configs, the state precision policy, and the scheme registry.

Every scheme is a frozen dataclass (``Int8DynamicConfig(...)``) with a ``scheme`` name and a ``version``; it goes
into the manifest through :meth:`QuantConfig.to_dict` and comes back through :func:`config_from_dict`, which only
accepts the registered schemes and their declared fields (an allowlist: nothing is evaluated). One module per
scheme (``int8_dynamic.py``, ...) registers a :class:`Scheme` that knows how to quantize a step in eager form and
which export targets can run the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from edgeseq.errors import ConfigError
from edgeseq.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from edgeseq.step import StepModule

# How a state tensor is stored between steps. The step always computes in float32; the policy decides what
# the runtime carries from one step to the next.
STATE_PRECISIONS = ("float32", "float16", "int8")


@dataclass(frozen=True)
class StatePolicy:
    """Per-state-tensor storage precision. Default: every state tensor stays float32.

    ``overrides`` maps state tensor names (``"c0"``, ``"h1"``, ``"ssm0"``, ...) to ``"float16"`` (stored and carried
    as float16: half the bytes) or ``"int8"`` (stored as int8 with a per-tensor scale calibrated on real rollouts:
    a quarter of the bytes, and the drift that FACTS.md warns about). Quantizing state is always opt-in.
    """

    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if isinstance(self.overrides, dict):
            object.__setattr__(self, "overrides", tuple(sorted(self.overrides.items())))
        for name, prec in self.overrides:
            if prec not in STATE_PRECISIONS:
                raise ConfigError(f"state policy: {name!r} -> {prec!r} is not a precision; choose from {', '.join(STATE_PRECISIONS)}")

    def precision(self, name: str) -> str:
        return dict(self.overrides).get(name, "float32")

    @property
    def is_default(self) -> bool:
        return all(p == "float32" for _, p in self.overrides)

    def to_dict(self) -> dict[str, str]:
        return dict(self.overrides)


@dataclass(frozen=True)
class QuantConfig:
    """Base of every scheme's config. ``state`` is the state precision policy (float32 everywhere by default)."""

    scheme = ""  # class attribute: the registry key, e.g. "int8-dynamic"
    version = 1
    state: StatePolicy = field(default_factory=StatePolicy)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "state"}
        return {"scheme": self.scheme, "version": self.version, **d, "state": self.state.to_dict()}


@dataclass
class Scheme:
    """A registered scheme: its config type, the targets that run it, and how to apply it.

    ``apply(step, config, calib)`` quantizes the step's modules in place (the eager quantized model every artifact
    is checked against). ``lower_onnx(float_path, out_path, config, calib)`` turns a float ONNX graph into the
    quantized one with ``onnxruntime.quantization``; ExecuTorch lowers the eager quantized step as traced.
    """

    name: str
    config: type[QuantConfig]
    targets: tuple[str, ...]
    summary: str
    apply: Callable[["StepModule", QuantConfig, Any], None]
    needs_calibration: bool = False
    lower_onnx: Callable[["Path", "Path", QuantConfig, Any], None] | None = None
    lower_tensorrt: Callable[["Path", "Path", QuantConfig, Any], None] | None = None  # the same, in TensorRT's Q/DQ form
    tolerance: float = 1e-3  # default artifact-vs-eager-quantized scaled error for this scheme
    compute_dtype: str = "float32"  # what the step computes in (fp16 scheme: float16)
    check: Callable[[QuantConfig, str], None] | None = None  # extra per-target refusals, raising ConfigError
    peak_precision: str = "fp32"  # which device peak (catalog flops_per_cycle / peak_tflops) bounds its matmuls


SCHEMES: Registry[Scheme] = Registry("quantization scheme")


def register_scheme(scheme: Scheme) -> Scheme:
    SCHEMES.register(scheme.name, scheme)
    return scheme


def scheme_of(config: QuantConfig) -> Scheme:
    found = SCHEMES.find(lambda _k, s: type(config) is s.config)
    if found is None:
        raise ConfigError(f"{type(config).__name__} is not a registered quantization config; known: {', '.join(SCHEMES.keys())}")
    return found


def schemes_for(target: str) -> list[str]:
    return [name for name, s in SCHEMES.items() if target in s.targets]


def check_target(config: QuantConfig, target: str) -> Scheme:
    """Refuse, before any work, a scheme that ``target`` cannot run; name the ones it can."""
    scheme = scheme_of(config)
    if target not in scheme.targets:
        can = schemes_for(target)
        raise ConfigError(
            f"scheme {scheme.name!r} cannot run on target {target!r} (it runs on {', '.join(scheme.targets)}); "
            f"{target} runs: {', '.join(can) if can else 'no quantization scheme'}"
        )
    if scheme.check is not None:
        scheme.check(config, target)
    return scheme


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    """Rebuild a config from its manifest dict; unknown schemes or fields are refused."""
    d = dict(d)
    scheme = SCHEMES.get(d.pop("scheme", None))
    d.pop("version", None)
    state = StatePolicy(tuple(sorted((d.pop("state", None) or {}).items())))
    allowed = {f.name for f in dataclasses.fields(scheme.config)} - {"state"}
    if "reduce_range" in d and "weights" in allowed and "weights" not in d:  # manifests written before `weights`
        d["weights"] = "int8-reduced" if d.pop("reduce_range") else "int8"
    unknown = set(d) - allowed
    if unknown:
        raise ConfigError(f"{scheme.name} config: unknown fields {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    return scheme.config(**d, state=state)
