from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from adapruner.calibration import load_documents
from adapruner.config import DataSource, EvalConfig
from adapruner.evaluate.zeroshot import CHOICES, cloze_items, offline_task_items, zero_shot
from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def jargon_items():
    return offline_task_items("cloze:jargon")


def test_cloze_items_are_well_formed(jargon_items):
    assert len(jargon_items) > 300
    for item in jargon_items:
        assert len(item.choices) == len(set(item.choices)) == CHOICES and 0 <= item.label < CHOICES
        assert all(choice not in item.context for choice in item.choices)


def test_cloze_text_never_overlaps_the_calibration_text(jargon_items):
    train = load_documents(DataSource(kind="builtin", name="jargon"), "calibration")  # the calibration default
    flat = " ".join(" ".join(doc.split()) for doc in train)
    # Whole sentences are held out (a short half sentence may recur by chance, e.g. "in your own meaning.").
    for item in jargon_items:
        assert item.context not in flat
        assert f"{item.context} {item.choices[item.label]}" not in flat


def test_choosing_by_length_scores_chance(jargon_items):
    """The distractors are picked so that the truth's length rank is uniform: no length heuristic wins."""
    ranks = Counter(sorted(range(CHOICES), key=lambda k: len(it.choices[k])).index(it.label) for it in jargon_items)
    for rank in range(CHOICES):
        assert 0.18 < ranks[rank] / len(jargon_items) < 0.32, ranks
    labels = Counter(item.label for item in jargon_items)
    assert max(labels.values()) / len(jargon_items) < 0.32


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="evaluate.zero_shot: only 0 cloze sentences"):
        cloze_items(["Too short."])


def _own_accuracy(model, tokenizer, items) -> float:
    """Sum of log-probabilities of each choice after ``context + " "``, computed directly."""
    correct = 0
    for item in items:
        scores = []
        for choice in item.choices:
            context = tokenizer(item.context, add_special_tokens=False).input_ids
            target = tokenizer(" " + choice, add_special_tokens=False).input_ids
            ids = torch.tensor([context + target])
            with torch.no_grad():
                logp = F.log_softmax(model(ids).logits[0, :-1].double(), -1)
            positions = torch.arange(len(context) - 1, ids.shape[1] - 1)
            scores.append(logp[positions, ids[0, len(context) :]].sum().item())
        correct += max(range(len(scores)), key=scores.__getitem__) == item.label
    return correct / len(items)


def test_offline_task_runs_through_lm_eval_end_to_end(tiny_tokenizer):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), max_position_embeddings=1024)
    result = zero_shot(model, tiny_tokenizer, ["cloze:gnu-standards"], limit=16)
    task = result["cloze:gnu-standards"]
    assert 0.0 <= task["acc"] <= 1.0 and 0.0 <= task["acc_norm"] <= 1.0
    items = offline_task_items("cloze:gnu-standards", n_items=16)
    assert task["samples"] == len(items)
    # lm-eval's accuracy is the argmax of the summed choice log-likelihoods, the same as computed here.
    assert task["acc"] == pytest.approx(_own_accuracy(model, tiny_tokenizer, items))


def test_task_names_are_checked():
    assert EvalConfig(zero_shot=("cloze:jargon", "piqa")).zero_shot == ("cloze:jargon", "piqa")
    with pytest.raises(ValidationError, match="unknown zero-shot task 'mmlu'; valid: boolq, piqa"):
        EvalConfig(zero_shot=("mmlu",))
    with pytest.raises(ValidationError, match="unknown builtin corpus 'wiki'"):
        EvalConfig(zero_shot=("cloze:wiki",))
