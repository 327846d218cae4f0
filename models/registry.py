"""A name -> factory registry, used instead of if/elif chains everywhere in aevb."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    :param str kind: what the registry holds, used in error messages (e.g. ``"objective"``).
    :param str plural: its plural (default ``kind + "s"``).
    :param providers: modules whose import registers entries (``@register`` runs when a module
        is imported); they are imported before the first lookup, so that the registry is
        complete however little of aevb was imported before.
    """

    def __init__(self, kind: str, plural: str | None = None,
                 providers: tuple[str, ...] = ()):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: dict[str, T] = {}
        self._providers = providers

    @property
    def entries(self) -> dict[str, T]:
        """Name -> entry, with every provider imported."""
        while self._providers:
            first, *rest = self._providers
            self._providers = tuple(rest)  # first: a provider imports modules that look up
            importlib.import_module(first)
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._entries:  # not self.entries: a provider registering is mid-import
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
