from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from adapruner.config import DataSource, EvalConfig, PruneJob, RecoverConfig, SearchJob
from adapruner.recover.base import RecoveryError, batches, lr_factor, planned_steps, training_windows

SOURCE = DataSource(kind="builtin", name="gnu-standards")


def test_token_budget_caps_the_steps(tiny_tokenizer):
    config = RecoverConfig(method="cpt", source=SOURCE, steps=50, batch_size=2, seq_len=16, max_tokens=200)
    assert planned_steps(config) == 200 // 32
    assert training_windows(tiny_tokenizer, config).shape == (6 * 2, 16)  # reads only what the run needs
    assert planned_steps(config.model_copy(update={"max_tokens": None})) == 50
    with pytest.raises(RecoveryError, match="recover.max_tokens: 10 is less than one step"):
        planned_steps(config.model_copy(update={"max_tokens": 10}))


def test_batches_cover_each_window_once_per_epoch():
    windows = torch.arange(10).view(10, 1).expand(10, 4)
    drawn = [b[:, 0].tolist() for b in batches(windows, batch_size=3, steps=6, seed=0)]
    assert all(len(set(b)) == 3 for b in drawn)
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:9]) == sorted(set(flat[:9])) and set(flat[:10]) <= set(range(10))
    assert drawn == [b[:, 0].tolist() for b in batches(windows, batch_size=3, steps=6, seed=0)]


def test_learning_rate_warms_up_then_decays():
    factors = [lr_factor(step, steps=20, warmup=4) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False)) and factors[-1] >= 0.1


def test_recovery_must_not_train_on_the_report_text(tmp_path):
    with pytest.raises(ValidationError, match="recover.source: builtin:jargon:test is a held-out|held-out partition"):
        RecoverConfig(method="lora", source=DataSource(kind="builtin", name="jargon", split="test"))
    text = tmp_path / "notes.txt"
    text.write_text("x")
    whole = DataSource(kind="file", name=str(text))
    with pytest.raises(ValidationError, match="recover.source: .* is also in evaluate.texts"):
        PruneJob(recover=RecoverConfig(method="lora", source=whole), evaluate=EvalConfig(texts=(whole,)))
    train_part = DataSource(kind="file", name=str(text), split="train")
    with pytest.raises(ValidationError, match="is also in evaluate.texts"):  # the whole file holds its train part
        SearchJob(recover=RecoverConfig(method="cpt", source=train_part), evaluate=EvalConfig(texts=(whole,)))
    # The train partition of a corpus reported on its test partition is fine; no recovery is never checked.
    PruneJob(recover=RecoverConfig(method="lora", source=DataSource(kind="builtin", name="jargon")))
    PruneJob(recover=RecoverConfig(source=whole), evaluate=EvalConfig(texts=(whole,)))


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="unknown recovery method 'qlora'; valid: none, lora, cpt"):
        RecoverConfig(method="qlora")


def test_run_prune_recovers_then_reports_before_and_after(tmp_path, tiny_model_dir):
    from adapruner.artifacts import load_pruned
    from adapruner.config import CalibrationConfig, ModelSpec, PruneConfig
    from adapruner.pipeline import run_prune
    from adapruner.report import summary_rows

    job = PruneJob(
        model=ModelSpec(source=str(tiny_model_dir), device="cpu"),
        calibration=CalibrationConfig(samples=4, seq_len=32),
        prune=PruneConfig(ratio=0.3),
        evaluate=EvalConfig(
            texts=(DataSource(kind="builtin", name="jargon"),), max_tokens=512, seq_len=64, speed=False
        ),
        recover=RecoverConfig(method="lora", source=SOURCE, steps=5, batch_size=2, seq_len=32, heldout_tokens=256),
    )
    losses = []
    outcome = run_prune(job, out=tmp_path, on_loss=lambda step, loss: losses.append(loss))
    recovery = outcome.report["recovery"]
    assert recovery["method"] == "lora" and len(recovery["loss_curve"]) == 5 == len(losses)
    label = "builtin:jargon"
    assert set(recovery["perplexity_before"]) == {label}
    assert recovery["perplexity_before"][label] != outcome.report["pruned"]["perplexity"][label]  # it trained
    assert any(row[0] == f"PPL {label} before lora" for row in summary_rows(outcome.report))
    reloaded, _ = load_pruned(tmp_path)
    ids = torch.randint(0, 90, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, outcome.model(ids).logits)


def test_cli_names_the_recovery_option(capsys):
    from adapruner.cli import main

    assert main(["prune", "--ratio", "0.2", "--recover", "qlora", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adapruner: error: --recover: unknown recovery method 'qlora'; valid: none, lora, cpt")
    assert main(["prune", "--ratio", "0.2", "--zero-shot", "mmlu", "--out", "x"]) == 2
    assert "--zero-shot: unknown zero-shot task 'mmlu'" in capsys.readouterr().err


def test_search_recovers_the_best_trial_only(tmp_path, tiny_tokenizer):
    from adapruner.models import LoadedModel
    from adapruner.search.run import run_search
    from tests.conftest import tiny_llama
    from tests.search.test_run import make_job

    folder = tmp_path / "texts"
    folder.mkdir()
    paths = {}
    for name in ("a", "b", "val", "test"):
        path = folder / f"{name}.txt"
        path.write_text("\n\n".join(f"text {name} about pruning number {i}." * 3 for i in range(40)))
        paths[name] = str(path)
    job = make_job(paths, trials=2)
    recover = {"method": "lora", "source": SOURCE, "steps": 3, "batch_size": 2, "seq_len": 32, "heldout_tokens": 256}
    job = SearchJob.model_validate(job.model_dump() | {"recover": recover})
    loaded = LoadedModel(
        tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64), tiny_tokenizer, "t"
    )
    report = run_search(job, out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache").report
    label = f"file:{paths['test']}"
    best = next(row for row in report["validation_vs_test"] if row["index"] == report["best"]["index"])
    assert best["test_ppl"][label] == report["recovery"]["perplexity_before"][label]  # agreement is pre-recovery
    assert report["pruned"]["perplexity"][label] != best["test_ppl"][label]
    assert len(report["recovery"]["loss_curve"]) == 3
