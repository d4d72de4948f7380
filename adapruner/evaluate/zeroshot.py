"""Zero-shot accuracy through lm-evaluation-harness (Gao et al., EleutherAI, "A framework for few-shot
language model evaluation"), the seven commonsense tasks LLM-Pruner and AdaPruner report (BoolQ, PIQA,
HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA), and an offline multiple-choice cloze task built at run time.

The offline task ``cloze:CORPUS`` takes sentences of a built-in corpus's *test* partition (never its
train partition, the calibration text; sentences that also occur in the train partition are dropped):
the context is the previous sentence and the first half of the sentence, the right answer its second
half, and three distractors are second halves of other test sentences next to it in character length,
with the truth's length rank drawn uniformly, so that a model choosing by length scores chance. It is written as an lm-eval task
(YAML + JSONL) into a temporary folder and run through lm-eval exactly as the standard tasks are.
"""

from __future__ import annotations

import json
import logging
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapruner.calibration import load_documents
from adapruner.catalog import OFFLINE_ZERO_SHOT
from adapruner.config import DataSource
from adapruner.errors import UserError
from adapruner.models.loading import input_device

#: Most items of an offline cloze task.
CLOZE_ITEMS = 500
#: Choices per item: the true continuation and ``CHOICES - 1`` distractors.
CHOICES = 4
#: Random other sentences among which the distractors nearest in length are picked.
DISTRACTOR_POOL = 64
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_MIN_WORDS, _MAX_WORDS = 8, 40


@dataclass(frozen=True)
class ClozeItem:
    context: str
    choices: tuple[str, ...]
    label: int  # index of the true continuation in ``choices``


def split_sentences(documents: Sequence[str]) -> list[list[str]]:
    """Each document's prose sentences (whitespace normalised), in order; code and headings, where
    letters are not most of the characters, are dropped."""
    out = []
    for document in documents:
        text = " ".join(document.split())
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
        out.append([s for s in sentences if sum(c.isalpha() or c == " " for c in s) >= 0.85 * len(s)])
    return out


def _normalised(documents: Sequence[str]) -> str:
    return " ".join(" ".join(document.split()) for document in documents)


def cloze_items(
    documents: Sequence[str], *, n_items: int = CLOZE_ITEMS, seed: int = 0, exclude: Sequence[str] = ()
) -> list[ClozeItem]:
    """Multiple-choice cloze items from ``documents`` (seeded); a sentence that occurs in ``exclude``
    (e.g. the calibration text) is used neither as an item nor as a distractor."""
    excluded = _normalised(exclude)
    candidates: list[tuple[str, str]] = []  # (context, true continuation)
    for sentences in split_sentences(documents):
        kept = [s if s not in excluded else None for s in sentences]
        for prev, sentence in zip(kept, kept[1:], strict=False):
            if prev is None or sentence is None:
                continue
            words = sentence.split()
            if not _MIN_WORDS <= len(words) <= _MAX_WORDS:
                continue
            half = len(words) // 2
            candidates.append((f"{prev} {' '.join(words[:half])}", " ".join(words[half:])))
    if len(candidates) < CHOICES:
        raise UserError(f"evaluate.zero_shot: only {len(candidates)} cloze sentences in the text; need {CHOICES}")
    rng = random.Random(f"cloze:{seed}")
    chosen = rng.sample(range(len(candidates)), min(n_items, len(candidates)))
    items = []
    for index in chosen:
        context, truth = candidates[index]
        others = rng.sample(range(len(candidates)), min(DISTRACTOR_POOL, len(candidates)))
        pool = {candidates[i][1] for i in others} - {truth}
        pool = sorted((text for text in pool if text not in context), key=lambda text: (len(text), text))
        # The truth's length rank among the choices is uniform: ``shorter`` distractors just shorter
        # than it and the rest just longer (ties in length count as shorter or longer at random).
        shorter = rng.randrange(CHOICES)
        below = [text for text in pool if len(text) < len(truth) or (len(text) == len(truth) and rng.random() < 0.5)]
        above = [text for text in pool if text not in below]
        distractors = below[len(below) - shorter :] if shorter else []
        distractors += above[: CHOICES - 1 - len(distractors)]
        if len(distractors) < CHOICES - 1:
            continue
        choices = [truth, *distractors]
        rng.shuffle(choices)
        items.append(ClozeItem(context, tuple(choices), choices.index(truth)))
    return items


def offline_task_items(task: str, *, n_items: int = CLOZE_ITEMS, seed: int = 0) -> list[ClozeItem]:
    """The items of an offline task ``cloze:CORPUS``: the corpus's test partition, minus any sentence
    of its train partition."""
    kind, _, corpus = task.partition(":")
    if kind not in OFFLINE_ZERO_SHOT:
        raise UserError(f"evaluate.zero_shot: {task!r} is not an offline task ({', '.join(OFFLINE_ZERO_SHOT)})")
    test = load_documents(DataSource(kind="builtin", name=corpus, split="test"), "evaluation")
    train = load_documents(DataSource(kind="builtin", name=corpus, split="train"), "calibration")
    return cloze_items(test, n_items=n_items, seed=seed, exclude=train)


def lm_eval_name(task: str) -> str:
    """The lm-eval task name of ``task`` (offline tasks get a prefixed name without colons)."""
    kind, colon, corpus = task.partition(":")
    return f"adapruner_{kind}_{corpus.replace('-', '_')}" if colon else task


def write_task(folder: Path, name: str, items: Sequence[ClozeItem]) -> Path:
    """Write ``items`` as an lm-eval multiple-choice task ``name`` (``name.yaml`` + ``name.jsonl``)."""
    import yaml

    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(asdict(item)) + "\n" for item in items))
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def zero_shot(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Zero-shot accuracy of the in-memory ``model`` on each task through lm-eval's ``HFLM``.

    Returns ``{task: {"acc", "acc_norm", "samples"}}``; ``acc`` sums the log-likelihood of each choice,
    ``acc_norm`` divides it by the choice's length in bytes (lm-eval's definitions).
    """
    if not tasks:
        return {}
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("evaluate.zero_shot: needs lm-eval: pip install 'adapruner[eval]'") from None

    device = input_device(model)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="adapruner-zeroshot-") as tmp:
        folder = Path(tmp)
        names = _write_offline_tasks(folder, tasks, n_items=limit or CLOZE_ITEMS, seed=seed)
        online = [task for task in tasks if ":" not in task]
        manager = TaskManager(include_path=str(folder), include_defaults=bool(online))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
        try:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(names.values()),
                task_manager=manager,
                limit=limit,
                log_samples=False,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        except (ConnectionError, OSError) as error:
            raise UserError(
                f"evaluate.zero_shot: cannot load the data of {', '.join(online) or 'a task'} "
                f"(the standard tasks need the Hugging Face hub; offline use cloze:CORPUS): {error}"
            ) from error
    model.eval()
    return {task: _accuracy(results, name) for task, name in names.items()}


def _write_offline_tasks(folder: Path, tasks: Sequence[str], *, n_items: int, seed: int) -> dict[str, str]:
    """The lm-eval name of every task; the offline ones (``cloze:CORPUS``) written into ``folder``."""
    names = {task: lm_eval_name(task) for task in tasks}
    for task in tasks:
        if ":" in task:
            write_task(folder, names[task], offline_task_items(task, n_items=n_items, seed=seed))
    return names


def _accuracy(results: dict[str, Any], name: str) -> dict[str, Any]:
    """``{"acc", "acc_norm", "samples"}`` of task ``name`` in lm-eval's ``simple_evaluate`` results."""
    result = results["results"][name]
    return {
        "acc": float(result["acc,none"]),
        "acc_norm": float(result["acc_norm,none"]) if "acc_norm,none" in result else None,
        "samples": int(results["n-samples"][name]["effective"]),
    }
