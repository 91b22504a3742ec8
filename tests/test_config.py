import json
import math

import pytest

from mistral_nb import ModelArgs
from mistral_nb.config import ConfigError


def test_params_json_without_rope_theta_means_10000(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
                             "n_kv_heads": 8, "norm_eps": 1e-05, "sliding_window": 4096, "vocab_size": 32000}))
    assert ModelArgs.from_params_json(p) == ModelArgs.mistral_7b()


def test_hf_config_of_mistral_7b(tmp_path):
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
           "sliding_window": 4096}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert ModelArgs.from_hf_config(tmp_path / "config.json") == ModelArgs.mistral_7b()
    # transformers >= 5 writes rope_theta inside rope_parameters
    cfg2 = dict(cfg, rope_parameters={"rope_theta": 1e6, "rope_type": "default"})
    del cfg2["rope_theta"]
    assert ModelArgs.from_hf_config(cfg2).rope_theta == 1e6


def test_round_trip_dicts():
    a = ModelArgs.mistral_7b()
    assert ModelArgs.from_hf_config(a.to_hf_config()) == a


@pytest.mark.parametrize("field,value,message", [
    ("n_kv_heads", 3, "divisible by n_kv_heads"),
    ("dim", 0, "dim must be > 0"),
    ("n_layers", -1, "n_layers must be > 0"),
    ("head_dim", 15, "even"),
    ("sliding_window", 0, "sliding_window"),
    ("norm_eps", -1.0, "norm_eps"),
    ("vocab_size", 3.5, "vocab_size must be an int"),
])
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ModelArgs.mistral_7b().replace(**{field: value})


def test_missing_field_and_bad_json(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"dim": 64}))
    with pytest.raises(ConfigError, match="no field 'n_layers'"):
        ModelArgs.from_params_json(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelArgs.from_params_json(p)
    with pytest.raises(FileNotFoundError):
        ModelArgs.from_params_json(tmp_path / "nope.json")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 60, "num_attention_heads": 7,
                                                      "num_hidden_layers": 1, "intermediate_size": 8,
                                                      "vocab_size": 10}))
    with pytest.raises(ConfigError, match="divisible"):
        ModelArgs.from_hf_config(tmp_path / "config.json")


# ---------------------------------------------------------------- issue 12
HF_7B = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
         "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
         "sliding_window": 4096, "tie_word_embeddings": False, "rope_scaling": None}


def test_the_released_configs_are_accepted():
    assert ModelArgs.from_hf_config(HF_7B) == ModelArgs.mistral_7b()
    v5 = {k: v for k, v in HF_7B.items() if k not in ("rope_theta", "rope_scaling")}
    v5["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}      # transformers 5's spelling
    assert ModelArgs.from_hf_config(v5) == ModelArgs.mistral_7b()
    assert ModelArgs.from_hf_config({**HF_7B, "hidden_act": "swish"}) == ModelArgs.mistral_7b()   # = SiLU


@pytest.mark.parametrize("field,value,why", [
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "RoPE scaling is not implemented"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}, "only rope_type 'default'"),
    ("hidden_act", "gelu", "the feed-forward here is SwiGLU, with SiLU"),
    ("tie_word_embeddings", True, "the output head here is its own matrix"),
    ("model_type", "llama", "this package implements model_type 'mistral' only"),
    ("architectures", ["LlamaForCausalLM"], "this package implements MistralForCausalLM only"),
])
def test_unsupported_features_are_refused(tmp_path, field, value, why):
    (tmp_path / "config.json").write_text(json.dumps({**HF_7B, field: value}))
    with pytest.raises(ConfigError, match=rf"config.json: field '{field}' = .* is not supported: {why}"):
        ModelArgs.from_hf_config(tmp_path / "config.json")
    params = ModelArgs.mistral_7b().to_params_json()
    (tmp_path / "params.json").write_text(json.dumps({**params, "moe": {"num_experts": 8}}))
    with pytest.raises(ConfigError, match="params.json: field 'moe' = .* is not supported: mixture-of-experts"):
        ModelArgs.from_params_json(tmp_path / "params.json")


@pytest.mark.parametrize("field,value,message", [
    ("num_key_value_heads", 0, r"ModelArgs.n_kv_heads must be > 0, got 0 \(config.json field 'num_key_value_heads'\)"),
    ("head_dim", 0, r"ModelArgs.head_dim must be > 0, got 0"),
    ("rope_theta", 1e-300, r"ModelArgs.rope_theta must be a finite number > 1, got 1e-300"),
    ("rope_theta", math.inf, r"ModelArgs.rope_theta must be a finite number > 1, got inf"),
    ("rms_norm_eps", 1e300,
     r"ModelArgs.norm_eps must be in \(0, 1\), got 1e\+300 \(config.json field 'rms_norm_eps'\)"),
    ("rms_norm_eps", math.nan, r"ModelArgs.norm_eps must be in \(0, 1\), got nan"),
    ("num_hidden_layers", math.inf, r"ModelArgs.n_layers must be an int, got inf \(float\) \(config.json field "
                                    r"'num_hidden_layers'\)"),
    ("hidden_size", 4096.0, r"ModelArgs.dim must be an int, got 4096.0 \(float\) \(config.json field 'hidden_size'\)"),
    ("sliding_window", math.inf, r"ModelArgs.sliding_window must be a positive int or None, got inf"),
])
def test_degenerate_values_are_refused(tmp_path, field, value, message):
    """Refused by name — never replaced by a default (num_key_value_heads 0 used to become n_heads)."""
    (tmp_path / "config.json").write_text(json.dumps({**HF_7B, field: value}))
    with pytest.raises(ConfigError, match=f"config.json: {message}"):
        ModelArgs.from_hf_config(tmp_path / "config.json")


def test_params_json_head_dim_and_types(tmp_path):
    p = tmp_path / "params.json"
    # head_dim given: dim need not be a multiple of n_heads (as the Hugging Face reader already allowed)
    p.write_text(json.dumps({"dim": 100, "head_dim": 16, "n_layers": 1, "hidden_dim": 64, "n_heads": 4,
                             "vocab_size": 10}))
    assert (ModelArgs.from_params_json(p).head_dim, ModelArgs.from_params_json(p).dim) == (16, 100)
    # head_dim not given: then dim / n_heads must divide (path named once)
    p.write_text(json.dumps({"dim": 100, "n_layers": 1, "hidden_dim": 64, "n_heads": 8, "vocab_size": 10}))
    with pytest.raises(ConfigError, match=r"params.json: dim \(100\) must be divisible by n_heads \(8\) when "
                                          r"head_dim is not given") as info:
        ModelArgs.from_params_json(p)
    assert str(info.value).count(str(p)) == 1
    # a string dim is a type error about dim, not a divisibility problem
    p.write_text(json.dumps({"dim": "4096", "n_layers": 1, "hidden_dim": 64, "n_heads": 32, "vocab_size": 10}))
    with pytest.raises(ConfigError, match=r"params.json: ModelArgs.dim must be an int, got '4096' \(str\)$") as info:
        ModelArgs.from_params_json(p)
    assert str(info.value).count(str(p)) == 1
    p.write_text(json.dumps({"dim": 4096, "n_layers": 1, "hidden_dim": 64, "n_heads": 32, "n_kv_heads": 0,
                             "vocab_size": 10}))
    with pytest.raises(ConfigError, match=r"ModelArgs.n_kv_heads must be > 0, got 0"):
        ModelArgs.from_params_json(p)
