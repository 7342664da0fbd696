"""Frozen dataclass configs: strict construction from dicts, JSON round trip."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from edgeseq.errors import ConfigError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def check_fields(cfg: Any, family: str, *, choices: dict[str, tuple] | None = None, positive: tuple[str, ...] = ()) -> None:
    """The checks every family config makes in ``__post_init__``: fields restricted to ``choices``, and
    ``positive`` fields >= 1. Raises :class:`ConfigError` (``"<family> config: ..."``)."""
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{family} config: {name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{family} config: {name} must be >= 1, got {getattr(cfg, name)}")


def config_from_dict(cls: type[C], data: dict[str, Any], *, what: str = "config") -> C:
    """Build ``cls`` from ``data``; unknown keys, missing keys and wrong types are a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints.get(name), f"{what}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check JSON values against simple annotations (int, float, bool, str, Optional, tuple)."""
    if hint is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse CLI ``key=value`` pairs; values are JSON where they parse as JSON, else strings."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"expected key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out
