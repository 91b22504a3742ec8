"""ModelArgs: every number that defines a Mistral-style transformer, in one dataclass.

Mistral publishes its checkpoints with a ``params.json``; Hugging Face ships the same model with a
``config.json`` that uses other names (and other defaults: its ``rms_norm_eps`` defaults to 1e-6,
while Mistral 7B v0.1 uses 1e-5; v0.1's ``params.json`` has no ``rope_theta``, which means 10000).
Both readers end in the same validated ``ModelArgs``. They refuse, naming the field, what this
model does not implement (``rope_scaling``, an activation other than SiLU, tied embeddings, another
``model_type``) instead of ignoring it, and never replace a given value (``num_key_value_heads: 0``
is an error, not "the default").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

MAX_CONFIG_BYTES = 1_000_000      # a real config.json / params.json is about 1 KB


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or inconsistent with another one.

    ``field``: the ModelArgs field concerned, when there is one (the readers translate it into the
    file's own key, e.g. ``n_kv_heads`` -> ``num_key_value_heads``).
    """

    def __init__(self, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.field = field


INT_FIELDS = ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size")


def check_int_field(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is an int > 0 (not a bool, not a float such as 32.0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"ModelArgs.{name} must be an int, got {value!r} ({type(value).__name__})", name)
    if value <= 0:
        raise ConfigError(f"ModelArgs.{name} must be > 0, got {value}", name)


@dataclass
class ModelArgs:
    """Hyper-parameters of a Mistral-style decoder.

    Attributes:
        dim: width of the residual stream (d_model).
        n_layers: number of transformer blocks.
        head_dim: width of one attention head.
        hidden_dim: inner width of the SwiGLU feed-forward.
        n_heads: number of query heads.
        n_kv_heads: number of key/value heads (grouped-query attention: n_heads % n_kv_heads == 0).
        vocab_size: number of token ids.
        norm_eps: epsilon inside RMSNorm.
        rope_theta: base of the RoPE frequencies.
        sliding_window: W, the number of keys a query sees, itself included
            (query i sees keys j with i - W < j <= i). ``None`` means full causal attention.
    """

    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: Optional[int] = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def mistral_7b(cls) -> "ModelArgs":
        """Mistral 7B v0.1 (arXiv:2310.06825, Table 1)."""
        return cls(dim=4096, n_layers=32, head_dim=128, hidden_dim=14336, n_heads=32, n_kv_heads=8,
                   vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096)

    @classmethod
    def tiny(cls, **overrides: Any) -> "ModelArgs":
        """A small configuration with the same shape rules as 7B, for CPU tests and notebooks."""
        base = dict(dim=64, n_layers=2, head_dim=16, hidden_dim=160, n_heads=4, n_kv_heads=2,
                    vocab_size=256, norm_eps=1e-5, rope_theta=10000.0, sliding_window=8)
        base.update(overrides)
        return cls(**base)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the field if a value is impossible or degenerate."""
        for name in INT_FIELDS:
            check_int_field(name, getattr(self, name))
        if self.head_dim % 2 != 0:
            raise ConfigError(f"ModelArgs.head_dim must be even for RoPE (it rotates pairs), got {self.head_dim}",
                              "head_dim")
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(
                f"ModelArgs.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads}): "
                "each key/value head serves a whole group of query heads", "n_kv_heads")
        # norm_eps only guards a division: 1e300 would swamp every activation. rope_theta is the base of
        # the frequencies theta^(-2i/d): at or below 1 they no longer decrease along the head.
        for name, low, high, rule in (("norm_eps", 0.0, 1.0, "in (0, 1)"),
                                      ("rope_theta", 1.0, math.inf, "a finite number > 1")):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or not low < value < high):
                raise ConfigError(f"ModelArgs.{name} must be {rule}, got {value!r}", name)
        if self.sliding_window is not None:
            w = self.sliding_window
            if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
                raise ConfigError(f"ModelArgs.sliding_window must be a positive int or None, got {w!r}",
                                  "sliding_window")

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def replace(self, **changes: Any) -> "ModelArgs":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ readers
    @classmethod
    def from_params_json(cls, path: str | Path) -> "ModelArgs":
        """Read Mistral's ``params.json`` (consolidated layout)."""
        raw = _read_json(path)
        _refuse_unsupported(raw, PARAMS_UNSUPPORTED, path)
        try:
            _require(raw, ("dim", "n_layers", "hidden_dim", "n_heads", "vocab_size"))
            return cls(
                dim=raw["dim"], n_layers=raw["n_layers"],
                head_dim=_given(raw, "head_dim", lambda: _head_dim(raw, "dim", "n_heads")),
                hidden_dim=raw["hidden_dim"], n_heads=raw["n_heads"],
                n_kv_heads=_given(raw, "n_kv_heads", lambda: raw["n_heads"]),
                vocab_size=raw["vocab_size"], norm_eps=_given(raw, "norm_eps", lambda: 1e-5),
                # v0.1's params.json has no rope_theta: Mistral's reference code then uses 10000.
                rope_theta=_given(raw, "rope_theta", lambda: 10000.0),
                sliding_window=raw.get("sliding_window"),
            )
        except ConfigError as e:
            raise ConfigError(f"{path}: {_with_key(e, PARAMS_KEYS, 'params.json')}", e.field) from None

    @classmethod
    def from_hf_config(cls, path_or_dict: str | Path | dict) -> "ModelArgs":
        """Read a Hugging Face ``config.json`` of a MistralForCausalLM."""
        if isinstance(path_or_dict, dict):
            raw, where = path_or_dict, "config"
        else:
            raw, where = _read_json(path_or_dict), str(path_or_dict)
        _refuse_unsupported(raw, HF_UNSUPPORTED, where)
        theta = raw.get("rope_theta")
        if theta is None and isinstance(raw.get("rope_parameters"), dict):
            theta = raw["rope_parameters"].get("rope_theta")
        try:
            _require(raw, ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                           "vocab_size"))
            n_heads = raw["num_attention_heads"]
            return cls(
                dim=raw["hidden_size"], n_layers=raw["num_hidden_layers"],
                head_dim=_given(raw, "head_dim", lambda: _head_dim(raw, "hidden_size", "num_attention_heads")),
                hidden_dim=raw["intermediate_size"], n_heads=n_heads,
                n_kv_heads=_given(raw, "num_key_value_heads", lambda: n_heads), vocab_size=raw["vocab_size"],
                # Hugging Face's MistralConfig defaults rms_norm_eps to 1e-6; its config.json always writes it.
                norm_eps=_given(raw, "rms_norm_eps", lambda: 1e-6),
                rope_theta=theta if theta is not None else 10000.0,
                sliding_window=raw.get("sliding_window"),
            )
        except ConfigError as e:
            raise ConfigError(f"{where}: {_with_key(e, HF_KEYS, 'config.json')}", e.field) from None

    def to_params_json(self) -> dict:
        """The ``params.json`` dictionary Mistral's layout uses."""
        return {"dim": self.dim, "n_layers": self.n_layers, "head_dim": self.head_dim,
                "hidden_dim": self.hidden_dim, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "norm_eps": self.norm_eps, "vocab_size": self.vocab_size, "rope_theta": self.rope_theta,
                "sliding_window": self.sliding_window}

    def to_hf_config(self) -> dict:
        """A ``config.json`` dictionary for transformers' MistralForCausalLM."""
        return {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "hidden_size": self.dim, "num_hidden_layers": self.n_layers, "head_dim": self.head_dim,
                "intermediate_size": self.hidden_dim, "num_attention_heads": self.n_heads,
                "num_key_value_heads": self.n_kv_heads, "vocab_size": self.vocab_size,
                "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta,
                "sliding_window": self.sliding_window, "hidden_act": "silu", "tie_word_embeddings": False,
                "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 32768}


# ModelArgs field -> the key each file format uses for it
PARAMS_KEYS = {f: f for f in INT_FIELDS + ("norm_eps", "rope_theta", "sliding_window")}
HF_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "head_dim": "head_dim",
           "hidden_dim": "intermediate_size", "n_heads": "num_attention_heads",
           "n_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size", "norm_eps": "rms_norm_eps",
           "rope_theta": "rope_theta", "sliding_window": "sliding_window"}


def _hf_rope_type(raw: dict):
    """rope_scaling / rope_parameters of another type than plain RoPE (transformers 4 / 5 spelling)."""
    scaling = raw.get("rope_scaling")
    if scaling is not None:
        return scaling
    params = raw.get("rope_parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        return params
    kind = params.get("rope_type", "default")
    return None if kind == "default" else kind


# key -> (is it unsupported?, why). Fields that are absent (or null) are always fine.
HF_UNSUPPORTED = {
    "model_type": (lambda v: v != "mistral", "this package implements model_type 'mistral' only"),
    "architectures": (lambda v: not isinstance(v, list) or "MistralForCausalLM" not in v,
                      "this package implements MistralForCausalLM only"),
    "hidden_act": (lambda v: v not in ("silu", "swish"), "the feed-forward here is SwiGLU, with SiLU"),
    "tie_word_embeddings": (lambda v: v is not False,
                            "the output head here is its own matrix, not the embedding table"),
    "rope_scaling": (lambda v: True, "RoPE scaling is not implemented (plain RoPE only)"),
    "rope_parameters": (lambda v: _hf_rope_type({"rope_parameters": v}) is not None,
                        "only rope_type 'default' (plain RoPE) is implemented"),
}
PARAMS_UNSUPPORTED = {
    "moe": (lambda v: bool(v), "mixture-of-experts layers are not implemented"),
    "vision_encoder": (lambda v: bool(v), "a vision encoder is not implemented"),
    "rope_scaling": (lambda v: bool(v), "RoPE scaling is not implemented (plain RoPE only)"),
    "yarn": (lambda v: bool(v), "RoPE scaling (YaRN) is not implemented (plain RoPE only)"),
    "tied_embeddings": (lambda v: v is not False,
                        "the output head here is its own matrix, not the embedding table"),
}


def _refuse_unsupported(raw: dict, table: dict, where: Any) -> None:
    for key, (unsupported, why) in table.items():
        if raw.get(key) is not None and unsupported(raw[key]):
            raise ConfigError(f"{where}: field {key!r} = {raw[key]!r:.100} is not supported: {why}")


def _require(raw: dict, keys) -> None:
    for key in keys:
        if key not in raw:
            raise ConfigError(f"has no field {key!r}")


def _given(raw: dict, key: str, default):
    """raw[key] when present and not null (even 0: it is then refused, not replaced), else default()."""
    value = raw.get(key)
    return default() if value is None else value


def _head_dim(raw: dict, num: str, den: str) -> int:
    """head_dim when the file does not give it: width / heads, which must then divide exactly."""
    check_int_field("dim", raw[num])
    check_int_field("n_heads", raw[den])
    if raw[num] % raw[den] != 0:
        raise ConfigError(f"{num} ({raw[num]}) must be divisible by {den} ({raw[den]}) when head_dim is "
                          "not given", "head_dim")
    return raw[num] // raw[den]


def _with_key(e: ConfigError, keys: dict, filename: str) -> str:
    """The message of ``e``, plus the file's own name for the field when it differs from ours."""
    key = keys.get(e.field)
    return f"{e} ({filename} field {key!r})" if key and key != e.field else str(e)


def _read_json(path: str | Path) -> dict:
    from .checkpoint.files import as_path, parse_json, read_regular_file     # (checkpoint/ imports this module)

    path = as_path(path, "config path")
    data = parse_json(read_regular_file(path, MAX_CONFIG_BYTES, "config file", ConfigError), path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
