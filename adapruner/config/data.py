"""Where text comes from: :class:`DataSource`, its CLI shorthand and the partitions of builtin and file text."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from adapruner.catalog import BUILTIN_CORPORA
from adapruner.config.values import StrictModel

Split = Literal["train", "validation", "test"]
PARTITION_SPLITS: tuple[str, ...] = ("train", "validation", "test")


class DataSource(StrictModel):
    """Where text comes from.

    ``kind``:
      - ``builtin``: a corpus installed with Python or Debian (``name`` from ``BUILTIN_CORPORA``);
      - ``file``: a local ``.txt`` (one document per blank-line separated block) or ``.jsonl`` file;
      - ``hf``: a Hugging Face dataset (``name``, ``config``, ``split``, ``field``; ``data_files`` for
        generic loaders such as ``json``).

    ``split`` for builtin and file sources picks a deterministic partition (train 80%, validation 10%,
    test 10% of fixed-size blocks) so calibration, search validation and the final report never share
    text; ``None`` means the role's default (calibration: train; evaluation: test for builtin corpora,
    the whole file for files). For ``hf`` it is the dataset split name (default ``train``).
    """

    kind: Literal["builtin", "file", "hf"]
    name: str = Field(min_length=1)
    config: str | None = None
    split: str | None = None
    field: str = "text"
    data_files: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DataSource:
        if self.kind == "builtin":
            BUILTIN_CORPORA.check(self.name)
        if self.kind in ("builtin", "file") and self.split not in (None, *PARTITION_SPLITS):
            raise ValueError(f"split {self.split!r} is not one of {', '.join(PARTITION_SPLITS)}")
        if self.kind == "file":
            suffix = Path(self.name).suffix
            if suffix not in (".txt", ".jsonl", ".json", ".md"):
                raise ValueError(f"file {self.name!r}: use a .txt, .md or .jsonl file")
        return self

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """Parse the CLI shorthand.

        ``pydoc`` / ``builtin:pydoc[:split]``; ``file:PATH[:split]`` or a path ending in .txt/.jsonl;
        ``hf:NAME[:CONFIG[:SPLIT[:FIELD]]]``.
        """
        kind, sep, rest = spec.partition(":")
        if not sep:
            if spec in BUILTIN_CORPORA:
                return cls(kind="builtin", name=spec)
            return cls(kind="file", name=spec)
        if kind == "hf":
            parts = rest.split(":")
            if len(parts) > 4:
                raise ValueError(f"data source {spec!r}: use hf:NAME[:CONFIG[:SPLIT[:FIELD]]]")
            name, config, split, field = (parts + [""] * 4)[:4]
            return cls(kind="hf", name=name, config=config or None, split=split or None, field=field or "text")
        if kind in ("builtin", "file"):
            name, split = rest, None
            head, colon, tail = rest.rpartition(":")
            if colon and tail in PARTITION_SPLITS:
                name, split = head, tail
            return cls(kind=kind, name=name, split=split)
        if len(kind) == 1 and sep:  # a Windows drive letter: C:\path
            return cls(kind="file", name=spec)
        raise ValueError(f"data source {spec!r}: kind must be builtin, file or hf")

    def resolved_split(self, role: Literal["calibration", "evaluation"]) -> str:
        """The split actually read: builtin corpora default to train (calibration) or test (evaluation),
        files to ``all`` (the whole file), HF datasets to ``train``."""
        if self.split:
            return self.split
        if self.kind == "builtin":
            return "train" if role == "calibration" else "test"
        return "all" if self.kind == "file" else "train"

    def label(self) -> str:
        """A short stable name, used in sample ids and reports."""
        base = f"{self.kind}:{self.name}"
        if self.config:
            base += f":{self.config}"
        return base + (f":{self.split}" if self.split else "")


def text_key(source: DataSource, role: Literal["calibration", "evaluation"]) -> tuple:
    """What identifies the text a source reads in a role: two equal keys read the same text."""
    return source.kind, source.name, source.config, source.resolved_split(role)

