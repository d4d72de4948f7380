"""The base of every config: unknown fields, NaN/Infinity and unstorable text are refused.

``value_problem`` also serves the API's strict-input middleware, so both refuse the same values.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent as JSON text (a NUL character or a lone UTF-16 surrogate), or None."""
    if "\x00" in text:
        return "Input should not contain a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Input should be valid Unicode text (it has a lone surrogate)"
    return None


def value_problem(value: object, loc: list[str | int]) -> tuple[list[str | int], str] | None:
    """The first place inside ``value`` (text, a path, a number, or containers of them, e.g. parsed JSON) that
    cannot be stored or sent as JSON (NaN/Infinity, NUL, a lone surrogate), with the reason; None if none."""
    if isinstance(value, float) and not math.isfinite(value):
        return loc, "Input should be a finite number (JSON has no NaN or Infinity)"
    if isinstance(value, str | Path):
        problem = text_problem(str(value))
        return (loc, problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key) if isinstance(key, str) else None
            if problem:
                return [*loc, ascii(key)], f"field name: {problem}"
            found = value_problem(item, [*loc, key])
            if found:
                return found
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = value_problem(item, [*loc, index])
            if found:
                return found
    return None


class StrictModel(BaseModel):
    """Every config: unknown fields, NaN/Infinity and text with NUL or lone surrogates are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        found = value_problem(value, [])
        if found:
            raise ValueError(found[1])
        return value
