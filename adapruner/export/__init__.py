"""Export a pruned artifact (or any model) for a serving runtime: ``gguf`` (llama.cpp), ``hf`` (stock
``from_pretrained``) and ``decilm`` (per-layer ``block_configs`` for vLLM's ``nemotron_nas``).

The formats are listed in ``adapruner.catalog.EXPORT_FORMATS``; :func:`export_model` is the one entry
point used by the CLI, the pipeline and the search.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapruner.catalog import EXPORT_FORMATS
from adapruner.export.base import ExportError, Exporter, ExportResult, ExportSource, LayerShape, layer_shapes
from adapruner.models.loading import MANIFEST_NAME


def get_exporter(name: str) -> Exporter:
    return EXPORT_FORMATS.get(name)()


def source_from_model(model: Any, tokenizer: Any, *, name: str, dtype: str | None = None) -> ExportSource:
    """An :class:`ExportSource` of a model in memory (float weights; ``dtype``: what they were saved as)."""
    dtype = dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
    return ExportSource(model.float().eval(), tokenizer, name, dtype, None, layer_shapes(model))


def load_source(path: str | Path) -> ExportSource:
    """Load a model folder, pruned artifact, ``.gguf`` file or alias on the CPU in float32 for export."""
    from adapruner.config import ModelSpec
    from adapruner.models import load_model

    loaded = load_model(ModelSpec(source=str(path), device="cpu", dtype="float32"))
    manifest_file = Path(str(path)) / MANIFEST_NAME
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else None
    config_dtype = getattr(loaded.model.config, "dtype", None) or getattr(loaded.model.config, "torch_dtype", None)
    dtype = manifest["dtype"] if manifest else str(config_dtype or "float32").removeprefix("torch.")
    source = source_from_model(loaded.model, loaded.tokenizer, name=Path(str(path)).name or str(path), dtype=dtype)
    source.manifest = manifest
    source.removed_blocks = removed_blocks(Path(str(path)), manifest)
    return source


def removed_blocks(folder: Path, manifest: dict[str, Any] | None) -> tuple[int, ...]:
    """The dense indices of the blocks a prune job removed, from the artifact's report (if it has one)."""
    report = folder / (manifest or {}).get("report", "report.json")
    if manifest is None or not report.is_file():
        return ()
    return tuple(sorted(int(i) for i in json.loads(report.read_text()).get("blocks_removed", [])))


def export_source(source: ExportSource, fmt: str, out: str | Path, type_: str | None = None) -> ExportResult:
    """Check, then write ``source`` as ``fmt`` to ``out`` (a file for gguf, a folder otherwise)."""
    exporter = get_exporter(fmt)
    type_ = type_ or exporter.default_type(source)
    exporter.check(source, type_)
    return exporter.write(source, Path(out), type_)


def export_model(path: str | Path, fmt: str, out: str | Path, type_: str | None = None) -> ExportResult:
    """Load the model at ``path`` and export it (see :func:`export_source`)."""
    EXPORT_FORMATS.check(fmt)
    return export_source(load_source(path), fmt, out, type_)


def export_artifact(folder: str | Path, config: Any) -> list[dict[str, Any]]:
    """Write every format of ``config`` (an :class:`adapruner.config.ExportConfig`) into the artifact
    ``folder`` under the format's default name; returns the records for the report (paths relative to
    ``folder``). The artifact is loaded once; each format is checked before it is written."""
    folder = Path(folder)
    if not config.formats:
        return []
    source, records = load_source(folder), []
    for fmt in config.formats:
        exporter = get_exporter(fmt)
        type_ = config.type or exporter.default_type(source)
        result = export_source(source, fmt, folder / exporter.default_name(type_), type_)
        records.append(result.as_dict() | {"path": result.path.relative_to(folder).as_posix()})
    return records


__all__ = [
    "ExportError",
    "ExportResult",
    "ExportSource",
    "Exporter",
    "LayerShape",
    "export_artifact",
    "export_model",
    "export_source",
    "get_exporter",
    "layer_shapes",
    "load_source",
    "source_from_model",
]
