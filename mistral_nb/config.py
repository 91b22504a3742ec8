"""ModelArgs: every number that defines a Mistral-style transformer, in one dataclass.

Mistral publishes its checkpoints with a ``params.json``; Hugging Face ships the same model with a
``config.json`` that uses other names (and other defaults: its ``rms_norm_eps`` defaults to 1e-6,
while Mistral 7B v0.1 uses 1e-5; v0.1's ``params.json`` has no ``rope_theta``, which means 10000).
Both readers end in the same validated ``ModelArgs``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or inconsistent with another one."""


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
        """Raise ConfigError naming the field if a value is impossible."""
        for name in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"ModelArgs.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ConfigError(f"ModelArgs.{name} must be > 0, got {value}")
        if self.head_dim % 2 != 0:
            raise ConfigError(f"ModelArgs.head_dim must be even for RoPE (it rotates pairs), got {self.head_dim}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(
                f"ModelArgs.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads}): "
                "each key/value head serves a whole group of query heads")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"ModelArgs.{name} must be a positive number, got {value!r}")
        if self.sliding_window is not None:
            w = self.sliding_window
            if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
                raise ConfigError(f"ModelArgs.sliding_window must be a positive int or None, got {w!r}")

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
        try:
            return cls(
                dim=raw["dim"], n_layers=raw["n_layers"], head_dim=raw.get("head_dim", _div(raw, "dim", "n_heads", path)),
                hidden_dim=raw["hidden_dim"], n_heads=raw["n_heads"], n_kv_heads=raw.get("n_kv_heads", raw["n_heads"]),
                vocab_size=raw["vocab_size"], norm_eps=raw.get("norm_eps", 1e-5),
                # v0.1's params.json has no rope_theta: Mistral's reference code then uses 10000.
                rope_theta=raw.get("rope_theta", 10000.0),
                sliding_window=raw.get("sliding_window"),
            )
        except KeyError as e:
            raise ConfigError(f"{path}: params.json has no field {e.args[0]!r}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_hf_config(cls, path_or_dict: str | Path | dict) -> "ModelArgs":
        """Read a Hugging Face ``config.json`` of a MistralForCausalLM."""
        if isinstance(path_or_dict, dict):
            raw, where = path_or_dict, "config"
        else:
            raw, where = _read_json(path_or_dict), str(path_or_dict)
        theta = raw.get("rope_theta")
        if theta is None and isinstance(raw.get("rope_parameters"), dict):
            theta = raw["rope_parameters"].get("rope_theta")
        try:
            n_heads = raw["num_attention_heads"]
            head_dim = raw.get("head_dim") or _div(raw, "hidden_size", "num_attention_heads", where)
            return cls(
                dim=raw["hidden_size"], n_layers=raw["num_hidden_layers"], head_dim=head_dim,
                hidden_dim=raw["intermediate_size"], n_heads=n_heads,
                n_kv_heads=raw.get("num_key_value_heads") or n_heads, vocab_size=raw["vocab_size"],
                # Hugging Face's MistralConfig defaults rms_norm_eps to 1e-6; its config.json always writes it.
                norm_eps=raw.get("rms_norm_eps", 1e-6), rope_theta=theta if theta is not None else 10000.0,
                sliding_window=raw.get("sliding_window"),
            )
        except KeyError as e:
            raise ConfigError(f"{where}: config.json has no field {e.args[0]!r}") from None
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

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


def _read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _div(raw: dict, num: str, den: str, where: Any) -> int:
    a, b = raw[num], raw[den]
    if not isinstance(a, int) or not isinstance(b, int) or b <= 0 or a % b != 0:
        raise ConfigError(f"{where}: {num} ({a!r}) must be divisible by {den} ({b!r}) when head_dim is not given")
    return a // b
