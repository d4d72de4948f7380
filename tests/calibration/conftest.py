"""A word-level tokenizer over ``w0``..``w299`` for the calibration tests (built offline)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

VOCAB = [f"w{i}" for i in range(300)]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Anything outside ``VOCAB`` is ``[UNK]``; EOS is ``</s>``."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"])
    tokenizer.train_from_iterator([" ".join(VOCAB)], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="</s>")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer()
