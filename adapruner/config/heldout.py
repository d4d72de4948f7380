"""Held-out rules: the text a report is measured on is never text the job chose or trained on."""

from __future__ import annotations

from adapruner.config.data import DataSource, text_key
from adapruner.config.stages import RecoverConfig


def check_calibration_held_out(sources: tuple[DataSource, ...], texts: tuple[DataSource, ...]) -> None:
    """Raise when a report text (``texts``) is also a calibration source."""
    calib = {text_key(s, "calibration") for s in sources}
    for text in texts:
        if text_key(text, "evaluation") in calib:
            raise ValueError(f"evaluate.texts: {text.label()} is also a calibration source; report on held-out text")


def check_search_held_out(
    validation: tuple[DataSource, ...], sources: tuple[DataSource, ...], texts: tuple[DataSource, ...]
) -> None:
    """Raise when a report text (``texts``) is also searched calibration or validation text."""
    chosen_on = {text_key(s, "evaluation") for s in validation}
    chosen_on |= {text_key(s, "calibration") for s in sources}
    for text in texts:
        if text_key(text, "evaluation") in chosen_on:
            raise ValueError(
                f"evaluate.texts: {text.label()} is also used to choose (calibration or validation); "
                "report on held-out text, e.g. the test split"
            )


def check_recovery_held_out(recover: RecoverConfig, texts: tuple[DataSource, ...]) -> None:
    """Raise when recovery would train on text the final report is measured on (a whole file, split
    ``all``, overlaps each of its partitions)."""
    if not recover.enabled:
        return
    kind, name, config, split = text_key(recover.train_source, "calibration")
    for text in texts:
        other = text_key(text, "evaluation")
        if other[:3] == (kind, name, config) and (other[3] == split or "all" in (other[3], split)):
            raise ValueError(
                f"recover.source: {recover.source.label()} is also in evaluate.texts; "
                "recover on other text than the report's"
            )
