"""Errors that edgeseq raises on purpose.

Every error a user can cause (bad files, wrong shapes, a state from another model, a failed parity check)
is an :class:`EdgeseqError`. The CLI prints these as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class EdgeseqError(Exception):
    """Base class of the errors a user can cause."""


class ConfigError(EdgeseqError, ValueError):
    """A configuration that is invalid or does not fit the weights."""


class WeightsError(EdgeseqError, ValueError):
    """Missing, corrupt or non-finite weights."""


class ShapeError(EdgeseqError, ValueError):
    """An input or state of the wrong shape or dtype."""


class StateMismatchError(EdgeseqError, ValueError):
    """A state that belongs to another model (fingerprint or layout mismatch)."""


class UnsupportedModuleError(EdgeseqError, TypeError):
    """A module that no registered converter handles."""


class ParityError(EdgeseqError):
    """An exported or converted model that disagrees with its reference past the tolerance."""


class ArtifactError(EdgeseqError):
    """An artifact or manifest that is missing, corrupt or invalid."""


class MissingDependencyError(EdgeseqError, ImportError):
    """An optional dependency (an extra) is not installed."""


def require(module: str, extra: str):
    """Import ``module`` or raise a clear error naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'edgeseq[{extra}]' ({exc})"
        ) from exc


class InputError(EdgeseqError, ValueError):
    """Input values that cannot be processed (NaN/Inf, empty)."""


class ConcurrentUseError(EdgeseqError, RuntimeError):
    """One stream session pushed from two threads at once (its state would interleave two streams)."""


class NumericalError(EdgeseqError, ArithmeticError):
    """A non-finite value that appeared inside the step (in its state or output), not in its input."""
