"""One small registry used by every plug-in kind (adapters, metrics, data sources, ...).

Entries name their implementation by import path (``"module:attr"``) so that the list of valid names is
known without importing torch: the API process and :mod:`adapruner.config` validate names against it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from adapruner.errors import UserError


class UnknownNameError(UserError):
    """A name that is not in a registry; the message lists the valid ones."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    summary: str


class Registry:
    """Names -> lazily imported implementations, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, summary: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, summary)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise :class:`UnknownNameError` listing the valid names."""
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {', '.join(self._entries)}")
        return name

    def get(self, name: str) -> Any:
        """Import and return the implementation registered as ``name``."""
        module, _, attr = self._entries[self.check(name)].target.partition(":")
        return getattr(importlib.import_module(module), attr)
