"""A small name → object registry shared by methods, datasets and custom models.

Names are the wiring (as in timm's `@register_model`): registering the same name twice is an error, and looking
up an unknown name raises a :class:`~kdbench.core.errors.UserError` that suggests the closest valid names.

A loader may mark a name unavailable (a plugin that failed to import, issue #34): the other names work, the
first use of the registry warns once per such name on stderr, and asking for that name is a one-line UserError
saying why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kdbench.core.errors import UserError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # Called once before the first lookup, to import the modules that register entries (lazy, so that
        # importing kdbench stays cheap and third-party plugins load only when needed).
        self._loader = loader
        self._loaded = loader is None
        self._unavailable: dict[str, str] = {}  # name -> why (e.g. its plugin's import error)
        self._unwarned: list[str] = []  # the reasons not yet said

    def _ensure_loaded(self, *, warn: bool = True) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()
        if warn and self._unwarned:
            # One line each, once per process: the library's warning lines (as kdbench.report.results' skipped
            # records) go to stderr, where the CLI's own lines go.
            for why in self._unwarned:
                print(f"warning: {why}; its {self.kind}s are unavailable, the others work", file=sys.stderr)
            self._unwarned.clear()

    def mark_unavailable(self, name: str, why: str) -> None:
        """`name` cannot be registered (its module failed to import): said once on first use of the registry, and
        the error of a lookup of `name`."""
        self._unavailable[name] = why
        self._unwarned.append(why)

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        self._ensure_loaded(warn=False)
        if name not in self._items and name in self._unavailable:  # the error says it all: one line, not two
            raise UserError(f"{self.kind} '{name}' is unavailable: {self._unavailable[name]}")
        self._ensure_loaded()
        if name not in self._items:
            raise unknown_name(self.kind, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
