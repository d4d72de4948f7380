"""decilm export, checked against the rules of vLLM's ``nemotron_nas`` loader (vLLM cannot run here).

:class:`NemotronNasReference` rebuilds the model from ``config.json`` and the safetensors exactly as that
loader does: block configs read as attributes, ``num_attention_heads`` query heads in every attention,
``num_attention_heads // n_heads_in_group`` KV heads, ``ffn.intermediate_size`` when the block has no
``ffn_mult``, ``attention_bias`` / ``qkv_bias`` / ``mlp_bias``, ``no_op`` skipping, every weight name
required to be a parameter. Its logits must equal the pruned HF model's.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig

from adapruner.artifacts import load_pruned
from adapruner.export import export_model
from adapruner.export.decilm import pad_heads, query_heads
from adapruner.export.base import LayerShape


class NemotronNasReference:
    """The parameter shapes vLLM's DeciLM builds, loaded with the exported weights, and its forward."""

    def __init__(self, folder):
        # as vLLM reads it: the folder's own config class through trust_remote_code
        self.config = config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__name__ == "DeciLMConfig" and config.model_type == "nemotron-nas"
        self.params = self.shapes()
        weights = load_file(str(folder / "model.safetensors"))
        unexpected = set(weights) - set(self.params)
        assert not unexpected, f"the loader has no parameter for {sorted(unexpected)}"
        missing = set(self.params) - set(weights) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
        assert not missing, f"weights missing: {sorted(missing)}"
        for name, tensor in weights.items():
            assert tuple(tensor.shape) == self.params[name], name
        self.w = {k: v.float() for k, v in weights.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        hidden, heads = c.hidden_size, c.num_attention_heads
        head_dim = getattr(c, "head_dim", hidden // heads)
        attention_bias = getattr(c, "attention_bias", False)
        qkv_bias = getattr(c, "qkv_bias", attention_bias)
        out = {"model.embed_tokens.weight": (c.vocab_size, hidden), "model.norm.weight": (hidden,),
               "lm_head.weight": (c.vocab_size, hidden)}
        for i, block in enumerate(c.block_configs):
            p = f"model.layers.{i}"
            if not block.attention.no_op:
                kv = heads // block.attention.n_heads_in_group
                out |= {f"{p}.input_layernorm.weight": (hidden,), f"{p}.self_attn.q_proj.weight": (heads * head_dim, hidden),
                        f"{p}.self_attn.k_proj.weight": (kv * head_dim, hidden),
                        f"{p}.self_attn.v_proj.weight": (kv * head_dim, hidden),
                        f"{p}.self_attn.o_proj.weight": (hidden, heads * head_dim)}
                if qkv_bias:
                    out |= {f"{p}.self_attn.{n}_proj.bias": (s,) for n, s in (("q", heads * head_dim), ("k", kv * head_dim), ("v", kv * head_dim))}
                if attention_bias:
                    out[f"{p}.self_attn.o_proj.bias"] = (hidden,)
            if not block.ffn.no_op:
                assert not hasattr(block.ffn, "ffn_mult"), "ffn_mult rounds to multiples of 256"
                size = block.ffn.intermediate_size
                out |= {f"{p}.post_attention_layernorm.weight": (hidden,), f"{p}.mlp.gate_proj.weight": (size, hidden),
                        f"{p}.mlp.up_proj.weight": (size, hidden), f"{p}.mlp.down_proj.weight": (hidden, size)}
                if getattr(c, "mlp_bias", False):
                    out |= {f"{p}.mlp.gate_proj.bias": (size,), f"{p}.mlp.up_proj.bias": (size,), f"{p}.mlp.down_proj.bias": (hidden,)}
        return out

    def norm(self, x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps) * self.w[name]

    def linear(self, x, name):
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def attention(self, x, p, block):
        c = self.config
        heads, head_dim = c.num_attention_heads, c.head_dim
        kv = heads // block.attention.n_heads_in_group
        b, t, _ = x.shape
        q = self.linear(x, f"{p}.q_proj").view(b, t, heads, head_dim).transpose(1, 2)
        k = self.linear(x, f"{p}.k_proj").view(b, t, kv, head_dim).transpose(1, 2)
        v = self.linear(x, f"{p}.v_proj").view(b, t, kv, head_dim).transpose(1, 2)
        inv = 1.0 / c.rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.arange(t).float()[:, None] * inv[None, :]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

        def rope(z):  # neox style (vLLM's default for DeciLM): rotate halves
            half = z.shape[-1] // 2
            return z * cos + torch.cat([-z[..., half:], z[..., :half]], -1) * sin

        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.linear(out.transpose(1, 2).reshape(b, t, heads * head_dim), f"{p}.o_proj")

    def __call__(self, ids):
        x = self.w["model.embed_tokens.weight"][ids]
        for i, block in enumerate(self.config.block_configs):
            p = f"model.layers.{i}"
            if not block.attention.no_op:
                x = x + self.attention(self.norm(x, f"{p}.input_layernorm.weight"), f"{p}.self_attn", block)
            if not block.ffn.no_op:
                h = self.norm(x, f"{p}.post_attention_layernorm.weight")
                x = x + self.linear(F.silu(self.linear(h, f"{p}.mlp.gate_proj")) * self.linear(h, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj")
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        return self.norm(x, "model.norm.weight") @ head.t()


@pytest.mark.parametrize("name", ["uniform", "per_layer", "dropped", "bias"])
def test_vllm_rules_rebuild_the_pruned_model(artifacts, tmp_path, name):
    result = export_model(artifacts[name], "decilm", tmp_path / "d", "f32")
    reference = NemotronNasReference(result.path)
    model, _ = load_pruned(artifacts[name])
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reference(ids), model(ids).logits, atol=1e-5, rtol=1e-4)
    config = json.loads((result.path / "config.json").read_text())
    assert config["model_type"] == "nemotron-nas" and config["architectures"] == ["DeciLMForCausalLM"]
    assert len(config["block_configs"]) == model.config.num_hidden_layers


def test_per_layer_block_configs(artifacts, tmp_path):
    result = export_model(artifacts["per_layer"], "decilm", tmp_path / "d", "bf16")
    config = json.loads((result.path / "config.json").read_text())
    assert [b["ffn"]["intermediate_size"] for b in config["block_configs"]] == [48, 40, 24, 32]
    assert config["num_attention_heads"] == 4
    assert [b["attention"]["n_heads_in_group"] for b in config["block_configs"]] == [2, 4, 2, 4]
    assert "layers 1, 3 padded to 4 query heads" in result.notes[0]
    assert load_file(str(result.path / "model.safetensors"))["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert (result.path / "tokenizer.json").is_file()


def test_query_heads_fit_every_layer():
    shapes = [LayerShape(9, 3, 10), LayerShape(6, 2, 10), LayerShape(3, 1, 10)]
    assert query_heads(shapes) == 12  # multiple of 3, 2 and 1, at least 9
    assert query_heads([LayerShape(6, 2, 4)] * 2) == 6


def test_pad_heads_keeps_each_group_first():
    weight = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(12, 1)  # 2 KV groups x 2 heads x head_dim 3
    out = pad_heads(weight, dim=0, n_kv=2, real=2, padded=3, head_dim=3)
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 0, 6, 7, 8, 9, 10, 11, 0, 0, 0]
    assert torch.equal(pad_heads(weight.t(), dim=1, n_kv=2, real=2, padded=3, head_dim=3), out.t())


def test_removed_blocks_become_no_op_blocks_at_their_dense_position(tmp_path, bpe_tokenizer):
    from adapruner.artifacts import save_pruned
    from tests.export.conftest import pruned_tiny

    folder = save_pruned(pruned_tiny(bpe_tokenizer, per_layer=True, drop=(1,)), bpe_tokenizer, tmp_path / "a",
                         extra={"report": "report.json"})
    (folder / "report.json").write_text(json.dumps({"blocks_removed": [1]}))
    result = export_model(folder, "decilm", tmp_path / "d", "f32")
    config = json.loads((result.path / "config.json").read_text())
    assert [b["attention"]["no_op"] for b in config["block_configs"]] == [False, True, False, False]
    assert config["block_configs"][1]["ffn"]["no_op"] and config["num_hidden_layers"] == 4
    assert [b["ffn"].get("intermediate_size") for b in config["block_configs"]] == [48, None, 24, 32]
    reference = NemotronNasReference(result.path)
    assert not any(name.startswith("model.layers.1.") for name in reference.w)
    model, _ = load_pruned(folder)
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reference(ids), model(ids).logits, atol=1e-5, rtol=1e-4)


def test_the_folder_ships_its_config_class_and_it_round_trips(artifacts, tmp_path):
    result = export_model(artifacts["per_layer"], "decilm", tmp_path / "d", "f32")
    assert json.loads((result.path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_decilm.DeciLMConfig"
    }
    config = AutoConfig.from_pretrained(result.path, trust_remote_code=True)
    block = config.block_configs[1]
    assert block.ffn.intermediate_size == 40 and block.attention.n_heads_in_group == 4
    assert not hasattr(block.ffn, "ffn_mult") and not hasattr(block.ffn, "hidden_act")  # vLLM tests with hasattr
    config.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["block_configs"] == json.loads((result.path / "config.json").read_text())["block_configs"]
