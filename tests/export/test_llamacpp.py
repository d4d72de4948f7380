"""llama.cpp as the oracle of the GGUF export: the exported files, loaded by llama.cpp itself, give the
HF model's next-token logits (tolerance per type) and its perplexity on held-out text within 1%.

Tiny random models cover uniform (``llama``), per-layer (``deci``) and FLAP-bias layouts; a pruned
SmolLM2-135M covers a real model, uniform and with per-layer widths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.config import DataSource, PruneJob
from adapruner.evaluate import perplexity
from adapruner.export import export_model

pytestmark = pytest.mark.slow

#: RMS logit difference allowed, relative to the spread (std) of the HF logits, per GGUF type (f32 is bounded
#: by llama.cpp's default f16 KV cache). Measured on the tiny models: f32 1e-4, f16 4e-4, bf16 3e-3, q8_0 1e-2;
#: on the pruned SmolLM2 (30 layers): f32 3e-3, f16 5e-3. A wrong layout is off by about 1.
TOLERANCE = {"f32": 1e-3, "f16": 2e-3, "bf16": 1e-2, "q8_0": 3e-2}
SMOLLM2_TOLERANCE = {"f32": 6e-3, "f16": 1e-2}
SEQ = 256  # SmolLM2 perplexity windows


def llama_logits(path, ids: list[int]) -> np.ndarray:
    from adapruner.evaluate.llamacpp import LlamaCppLM

    lm = LlamaCppLM(path, n_ctx=max(64, len(ids)))
    try:
        return lm(torch.tensor([ids])).logits[0].numpy()
    finally:
        lm.close()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Root-mean-square logit difference relative to the spread (std) of the HF logits."""
    return float(np.sqrt(np.mean((got - want) ** 2)) / want.std())


@pytest.mark.parametrize("type_", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("name", ["uniform", "per_layer", "dropped", "bias"])
def test_tiny_models_in_llamacpp(artifacts, bpe_tokenizer, tmp_path, name, type_):
    from adapruner.evaluate.llamacpp import LlamaCppTokenizer, load_llama

    path = export_model(artifacts[name], "gguf", tmp_path / "m.gguf", type_).path
    text = "the model prunes heads 12 and channels; calibration texts move 345 results."
    ids = bpe_tokenizer(text).input_ids
    model, _ = load_pruned(artifacts[name])
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert relative_error(llama_logits(path, ids), want) < TOLERANCE[type_]
    llm = load_llama(path, n_ctx=64)
    try:  # the GGUF's own tokenizer splits like the HF one
        assert LlamaCppTokenizer(llm)([text])["input_ids"][0] == ids
    finally:
        llm.close()


@pytest.fixture(scope="module")
def heldout(smollm2):
    from adapruner.calibration import token_stream

    source = DataSource(kind="builtin", name="jargon", split="test")
    return token_stream(smollm2.tokenizer, source, "evaluation", max_tokens=512)


@pytest.fixture(scope="module")
def pruned_smollm2(smollm2, heldout, tmp_path_factory):
    """SmolLM2-135M pruned by 20% (Wanda), with uniform widths and with per-layer widths (depth_slope),
    saved as artifacts, with the HF model's held-out perplexity and logits."""
    from adapruner.pipeline import prune_copy

    root, out = tmp_path_factory.mktemp("smollm2"), {}
    for name, prune in (("uniform", {"uniform": True}), ("per_layer", {"depth_slope": 0.6})):
        job = PruneJob.model_validate(
            {
                "importance": {"mix": {"wanda": 1}},
                "calibration": {"samples": 4, "seq_len": 128},
                "prune": {"ratio": 0.2, "channel_multiple": 32} | prune,
            }
        )
        model, _ = prune_copy(smollm2, job)
        with torch.no_grad():
            logits = model(heldout[None, :SEQ]).logits[0].numpy()
        ppl = perplexity(model, heldout, seq_len=SEQ).ppl
        out[name] = (save_pruned(model, smollm2.tokenizer, root / name), ppl, logits)
    return out


@pytest.mark.integration
@pytest.mark.parametrize("type_", ["f32", "f16"])
@pytest.mark.parametrize("name", ["uniform", "per_layer"])
def test_pruned_smollm2_in_llamacpp(pruned_smollm2, heldout, tmp_path, name, type_):
    """Perplexity within 1% of the HF model's, and the logits of one window within the type's tolerance."""
    from adapruner.evaluate.llamacpp import LlamaCppLM

    artifact, want, logits = pruned_smollm2[name]
    result = export_model(artifact, "gguf", tmp_path / "m.gguf", type_)
    assert result.architecture == ("llama" if name == "uniform" else "deci")
    lm = LlamaCppLM(result.path, n_ctx=SEQ)
    try:
        got = perplexity(lm, heldout, seq_len=SEQ, device="cpu").ppl
        served = lm(heldout[None, :SEQ]).logits[0].numpy()
    finally:
        lm.close()
    assert abs(got / want - 1) < 0.01, (got, want)
    assert relative_error(served, logits) < SMOLLM2_TOLERANCE[type_]
    assert (served.argmax(-1) == logits.argmax(-1)).mean() > 0.95  # the same next token almost everywhere


@pytest.mark.parametrize("name", ["per_layer", "bias"])
def test_eval_runtime_llamacpp_matches_torch(artifacts, tmp_path, capsys, name):
    import json

    from adapruner.cli import main
    from tests.export.conftest import TEXT

    text = tmp_path / "held.txt"
    text.write_text(TEXT.replace("12", "67").replace("345", "89") * 2)
    common = [str(artifacts[name]), "--text-file", str(text), "--seq-len", "48", "--json"]
    assert main(["eval", *common, "--device", "cpu"]) == 0
    torch_run = json.loads(capsys.readouterr().out)
    assert main(["eval", *common, "--runtime", "llamacpp", "--type", "f32", "--threads", "2"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert served["runtime"] == "llamacpp" and served["tokens"] == torch_run["tokens"] > 500
    assert abs(served["perplexity"] / torch_run["perplexity"] - 1) < 1e-3
    assert main(["eval", str(tmp_path / "none.gguf"), "--text-file", str(text), "--runtime", "llamacpp"]) == 2
    assert capsys.readouterr().err.strip().startswith("adapruner: error: model: GGUF file")
