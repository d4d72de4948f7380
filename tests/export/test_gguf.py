"""GGUF export: header, per-layer arrays, tensor layouts and types, tokenizer, refusals (read back with gguf)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.cli import main
from adapruner.export import ExportError, export_model
from adapruner.export.gguf import rope_interleave
from tests.conftest import make_tiny_tokenizer, tiny_llama


def read(path):
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.ggml.t")}
    fields["tokens"] = reader.fields["tokenizer.ggml.tokens"].contents()
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def hf_rows(tensor) -> np.ndarray:
    """A GGUF f32 tensor as the HF weight ``[out, in]``."""
    return np.asarray(tensor.data, dtype=np.float32).reshape(tuple(reversed([int(n) for n in tensor.shape])))


def test_uniform_is_llama_with_scalar_widths(artifacts, tmp_path):
    result = export_model(artifacts["uniform"], "gguf", tmp_path / "m.gguf", "f32")
    fields, tensors = read(result.path)
    assert result.architecture == fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 4
    assert fields["llama.feed_forward_length"] == 40
    assert fields["llama.attention.head_count"] == 2 and fields["llama.attention.head_count_kv"] == 1
    assert fields["llama.attention.key_length"] == 8 and fields["llama.rope.dimension_count"] == 8
    assert "output.weight" in tensors  # untied head written


def test_per_layer_widths_are_deci_arrays(artifacts, tmp_path):
    result = export_model(artifacts["per_layer"], "gguf", tmp_path / "m.gguf", "f32")
    fields, tensors = read(result.path)
    assert fields["general.architecture"] == "deci"
    assert list(fields["deci.feed_forward_length"]) == [48, 40, 24, 32]
    assert list(fields["deci.attention.head_count"]) == [4, 2, 4, 2]
    assert list(fields["deci.attention.head_count_kv"]) == [2, 1, 2, 1]
    assert tuple(int(n) for n in tensors["blk.2.ffn_down.weight"].shape) == (24, 32)  # ggml order: [in, out]


def test_removed_blocks_leave_a_shorter_llama(artifacts, tmp_path):
    fields, tensors = read(export_model(artifacts["dropped"], "gguf", tmp_path / "m.gguf", "f32").path)
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 3
    assert "blk.2.attn_q.weight" in tensors and "blk.3.attn_q.weight" not in tensors


def test_weights_round_trip_in_ggml_layout(artifacts, tmp_path):
    """f32 tensors equal the HF weights, q/k with each head's rows in interleaved-RoPE order."""
    model, _ = load_pruned(artifacts["per_layer"])
    _, tensors = read(export_model(artifacts["per_layer"], "gguf", tmp_path / "m.gguf", "f32").path)
    attn = model.model.layers[3].self_attn
    np.testing.assert_array_equal(hf_rows(tensors["blk.3.attn_q.weight"]), rope_interleave(attn.q_proj.weight, 2).detach().numpy())
    np.testing.assert_array_equal(hf_rows(tensors["blk.3.attn_k.weight"]), rope_interleave(attn.k_proj.weight, 1).detach().numpy())
    np.testing.assert_array_equal(hf_rows(tensors["blk.3.ffn_down.weight"]), model.model.layers[3].mlp.down_proj.weight.detach().numpy())
    np.testing.assert_array_equal(hf_rows(tensors["token_embd.weight"]), model.model.embed_tokens.weight.detach().numpy())


def test_rope_interleave_pairs_the_rotated_halves():
    """Row ``i`` and ``i + d/2`` of a head (rotated together by HF) become rows ``2i`` and ``2i + 1``."""
    weight = torch.arange(2 * 8, dtype=torch.float32)[:, None]  # 2 heads of head_dim 8
    out = rope_interleave(weight, 2)[:, 0].tolist()
    assert out[:8] == [0, 4, 1, 5, 2, 6, 3, 7] and out[8:] == [8, 12, 9, 13, 10, 14, 11, 15]


def test_uniform_gguf_reloads_in_transformers_with_the_same_logits(artifacts, tmp_path):
    """transformers reads llama GGUF (undoing the RoPE row order): an independent reader of the file."""
    from transformers import AutoModelForCausalLM

    path = export_model(artifacts["dropped"], "gguf", tmp_path / "m.gguf", "f32").path
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    model, _ = load_pruned(artifacts["dropped"])
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_tokenizer_and_chat_template_are_included(artifacts, bpe_tokenizer, tmp_path):
    fields, _ = read(export_model(artifacts["uniform"], "gguf", tmp_path / "m.gguf", "f16").path)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokens"]) == len(bpe_tokenizer)
    assert fields["tokens"][bpe_tokenizer.eos_token_id] == "<|endoftext|>"
    assert fields["tokenizer.ggml.eos_token_id"] == bpe_tokenizer.eos_token_id
    assert len(fields["tokenizer.ggml.merges"]) > 0
    assert fields["tokenizer.chat_template"] == bpe_tokenizer.chat_template


@pytest.mark.parametrize("type_", ["f16", "bf16", "q8_0"])
def test_types(artifacts, tmp_path, type_):
    from gguf import GGMLQuantizationType as Q

    result = export_model(artifacts["uniform"], "gguf", tmp_path / "m.gguf", type_)
    fields, tensors = read(result.path)
    expected = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[type_]
    assert tensors["blk.0.attn_q.weight"].tensor_type == expected  # rows of 32 = hidden size
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    if type_ == "q8_0":  # down_proj rows are 40 channels: not whole 32-blocks, kept f16 and said so
        assert tensors["blk.0.ffn_down.weight"].tensor_type == Q.F16
        assert "--channel-multiple 32" in result.notes[0]


def test_output_biases_are_written(artifacts, tmp_path):
    model, _ = load_pruned(artifacts["bias"])
    _, tensors = read(export_model(artifacts["bias"], "gguf", tmp_path / "m.gguf", "f32").path)
    np.testing.assert_array_equal(
        np.asarray(tensors["blk.1.attn_output.bias"].data), model.model.layers[1].self_attn.o_proj.bias.detach().numpy()
    )
    assert "blk.1.ffn_down.bias" in tensors and "blk.1.attn_q.bias" not in tensors


def test_refusals_are_one_line(tmp_path, bpe_tokenizer):
    model = tiny_llama(vocab_size=len(bpe_tokenizer), layers=2, attention_bias=True)
    torch.nn.init.ones_(model.model.layers[0].self_attn.q_proj.bias)
    model.save_pretrained(tmp_path / "qbias")
    bpe_tokenizer.save_pretrained(tmp_path / "qbias")
    with pytest.raises(ExportError, match="^export --format gguf: layer 0 has q/k/v biases"):
        export_model(tmp_path / "qbias", "gguf", tmp_path / "x.gguf")
    char_level = make_tiny_tokenizer()
    save_pruned(tiny_llama(vocab_size=len(char_level), layers=2), char_level, tmp_path / "wordlevel")
    with pytest.raises(ExportError, match="tokenizer model 'WordLevel' is not exported"):
        export_model(tmp_path / "wordlevel", "gguf", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_other_model_types_are_refused(tmp_path, bpe_tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    bpe_tokenizer.save_pretrained(tmp_path / "qwen")
    with pytest.raises(ExportError, match="model_type 'qwen2' is not supported; supported: llama, mistral"):
        export_model(tmp_path / "qwen", "gguf", tmp_path / "x.gguf")


def test_cli_export(artifacts, tmp_path, capsys):
    assert main(["export", str(artifacts["per_layer"]), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    assert "(gguf, architecture deci, f16)" in capsys.readouterr().out
    assert main(["export", str(artifacts["per_layer"]), "--format", "onnx", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "adapruner: error: unknown export format 'onnx'; valid: gguf, hf, decilm"
    assert main(["export", str(artifacts["per_layer"]), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers 1 (heads 2, kv 1, ffn 40)" in err[0] and "--uniform" in err[0]
