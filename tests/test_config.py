import json

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
