"""Built-in corpora, read from where Python or Debian installed them (never copied into the repository).

- ``pydoc``: Python's pydoc topics (:mod:`pydoc_data.topics`, part of the standard library);
- ``jargon``: the Jargon File (Debian package ``jargon-text``);
- ``gnu-standards``: the GNU coding standards and maintainer guide (Debian package ``gnu-standards``).

Each loader returns the corpus as a list of documents (strings) in a fixed order; the text is read once
per process and cached.
"""

from __future__ import annotations

import gzip
import re
import textwrap
from functools import cache
from pathlib import Path

from adapruner.errors import MissingFileError

JARGON_PATH = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
GNU_STANDARDS_PATHS: tuple[Path, ...] = (
    Path("/usr/share/doc/gnu-standards/standards.text.gz"),
    Path("/usr/share/doc/gnu-standards/maintain.text.gz"),
)

#: Paragraphs are grouped into documents of at least this many words.
DOCUMENT_WORDS = 300

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")
_BOX_DRAWING = re.compile(r"[\u2500-\u257f]")


def _is_box_line(line: str) -> bool:
    """True when box-drawing characters (``│├─═``...) make up more than half of the line's visible text."""
    visible = len(line) - sum(c.isspace() for c in line)
    return visible > 0 and 2 * len(_BOX_DRAWING.findall(line)) > visible


def clean_paragraph(paragraph: str) -> str:
    """Drop table-rule lines, trailing spaces and the common indentation of one paragraph."""
    lines = [line.rstrip() for line in paragraph.splitlines() if not _is_box_line(line)]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def group_paragraphs(text: str, *, min_words: int = DOCUMENT_WORDS) -> list[str]:
    """Split ``text`` on blank lines and group consecutive paragraphs into documents of ``min_words``+ words.

    Paragraphs keep their order and are joined with a blank line; the last document may be shorter.
    """
    documents: list[str] = []
    current: list[str] = []
    words = 0
    for raw in _BLANK_LINES.split(text.replace("\r\n", "\n")):
        paragraph = clean_paragraph(raw)
        if not paragraph.strip():
            continue
        current.append(paragraph)
        words += len(paragraph.split())
        if words >= min_words:
            documents.append("\n\n".join(current))
            current, words = [], 0
    if current:
        documents.append("\n\n".join(current))
    return documents


@cache
def _pydoc_documents() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    return tuple(topics[key].strip() for key in sorted(topics) if topics[key].strip())


@cache
def _debian_documents(corpus: str, package: str, paths: tuple[Path, ...]) -> tuple[str, ...]:
    documents: list[str] = []
    for path in paths:
        if not path.is_file():
            raise MissingFileError(
                f"builtin corpus {corpus!r} needs the Debian package {package} ({path} is missing): "
                f"apt-get install {package}"
            )
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            documents.extend(group_paragraphs(handle.read()))
    return tuple(documents)


def pydoc_text() -> list[str]:
    """Python's pydoc topics, one document per topic, sorted by topic name."""
    return list(_pydoc_documents())


def jargon_text() -> list[str]:
    """The Jargon File as documents of about 300+ words (paragraphs in file order)."""
    return list(_debian_documents("jargon", "jargon-text", (JARGON_PATH,)))


def gnu_standards_text() -> list[str]:
    """The GNU coding standards, then the GNU maintainer guide, as documents of about 300+ words."""
    return list(_debian_documents("gnu-standards", "gnu-standards", tuple(GNU_STANDARDS_PATHS)))
