"""A small keyed registry: families, converters, exporters, runtimes and data sets all use it."""

from __future__ import annotations

from typing import Callable, Generic, Hashable, Iterator, TypeVar

from edgeseq.errors import EdgeseqError

T = TypeVar("T")


class UnknownKeyError(EdgeseqError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps a key (a name, a type) to an entry. ``get`` of an unknown key lists the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[Hashable, T] = {}

    def register(self, key: Hashable, entry: T | None = None):
        """``reg.register(key, entry)``, or ``@reg.register(key)`` as a decorator."""
        if entry is not None:
            self._add(key, entry)
            return entry

        def deco(obj: T) -> T:
            self._add(key, obj)
            return obj

        return deco

    def _add(self, key: Hashable, entry: T) -> None:
        if key in self._items and self._items[key] is not entry:
            raise ValueError(f"{self.kind} {key!r} is already registered")
        self._items[key] = entry

    def get(self, key: Hashable) -> T:
        try:
            return self._items[key]
        except KeyError:
            raise UnknownKeyError(f"unknown {self.kind} {key!r}; known: {', '.join(map(str, self.keys()))}") from None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def keys(self) -> list:
        return list(self._items)

    def items(self) -> Iterator[tuple[Hashable, T]]:
        return iter(list(self._items.items()))

    def find(self, predicate: Callable[[Hashable, T], bool]) -> T | None:
        for k, v in self._items.items():
            if predicate(k, v):
                return v
        return None
