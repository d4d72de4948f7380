"""Calibration and evaluation text: built-in corpora, data sources, token streams and seeded windows."""

from __future__ import annotations

from adapruner.calibration.builtin import gnu_standards_text, jargon_text, pydoc_text
from adapruner.calibration.sampling import Sample, sample_windows, stack
from adapruner.calibration.sources import BLOCK_WORDS, load_documents, token_stream

__all__ = [
    "BLOCK_WORDS",
    "Sample",
    "gnu_standards_text",
    "jargon_text",
    "load_documents",
    "pydoc_text",
    "sample_windows",
    "stack",
    "token_stream",
]
