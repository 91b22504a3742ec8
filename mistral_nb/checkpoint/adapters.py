"""LoRA adapters in peft's files: ``adapter_config.json`` + ``adapter_model.safetensors``.

peft names an adapter's tensors after the module it wraps in transformers' ``MistralForCausalLM``,
behind its own two wrappers (``PeftModelForCausalLM.base_model`` is a ``LoraModel`` whose ``model`` is
the transformers model)::

    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight     (r, in)
    base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight     (out, r)

The matrices are the same as this package's, with one exception. transformers keeps the rows of
q_proj and k_proj in the rotate-half RoPE order, this package in Mistral's interleaved order
(``rope.py``), and the rows of ``W + s B A`` are the rows of ``B``: so ``lora_B`` of wq and wk is
permuted per head on the way out and back (``lora_A``, whose rows are the rank, is not). Forgetting
it gives an adapter that loads without complaint and computes something else; only a logit test
against transformers + peft catches it (``tests/test_lora.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch

from ..lora import TARGETS, LoRAConfig, apply_lora, lora_layers
from ..rope import hf_to_mistral_qk, mistral_to_hf_qk
from .files import parse_json, read_regular_file
from .names import hf_to_mistral_name, mistral_to_hf_name

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "peft_key", "adapter_config", "write_adapter", "read_adapter"]

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
_KEY = re.compile(r"base_model\.model\.(model\.layers\.\d+\.[a-z_]+\.[a-z_]+)\.lora_([AB])\.weight")
# Settings of peft's LoraConfig this package does not implement: a file that uses one is refused.
_PLAIN = {"peft_type": "LORA", "bias": "none", "lora_bias": False, "fan_in_fan_out": False, "use_dora": False,
          "use_rslora": False, "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
          "alpha_pattern": {}, "layer_replication": None, "trainable_token_indices": None}


def peft_key(name: str, matrix: str) -> str:
    """'layers.0.attention.wq', 'A' -> 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'."""
    return PREFIX + mistral_to_hf_name(name + ".weight").removesuffix(".weight") + f".lora_{matrix}.weight"


def _qk_heads(model, name: str) -> Optional[int]:
    """Heads whose rows a wq/wk adapter's B holds (None for the other layers: no permutation)."""
    leaf = name.rsplit(".", 1)[-1]
    return {"wq": model.args.n_heads, "wk": model.args.n_kv_heads}.get(leaf)


def adapter_config(config: LoRAConfig, base_model_name_or_path: Optional[str] = None) -> dict:
    """The ``adapter_config.json`` of peft for these adapters (the fields peft reads, plain LoRA)."""
    modules = sorted(mistral_to_hf_name(f"layers.0.{TARGETS[t]}.{t}.weight").split(".")[-2] for t in config.targets)
    return {**_PLAIN, "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
            "revision": None, "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
            "target_modules": modules, "init_lora_weights": True, "inference_mode": True, "layers_pattern": None}


def write_adapter(model, path, base_model_name_or_path: Optional[str] = None) -> Path:
    """Write ``model``'s adapters to the directory ``path`` (created if needed) in peft's layout."""
    from safetensors.torch import save_file

    layers = list(lora_layers(model))
    if not layers or getattr(model, "lora_config", None) is None:
        raise ValueError("save_adapter: the model has no LoRA adapters (call apply_lora first)")
    tensors = {}
    for name, layer in layers:
        b = layer.lora_B.weight.detach()
        heads = _qk_heads(model, name)
        tensors[peft_key(name, "A")] = layer.lora_A.weight.detach().cpu().contiguous()
        tensors[peft_key(name, "B")] = (b if heads is None else mistral_to_hf_qk(b, heads)).cpu().contiguous()
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"save_adapter: {path} is a file; give a directory")
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    config = adapter_config(model.lora_config, base_model_name_or_path)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _read_config(path: Path) -> dict:
    where = path / CONFIG_FILE
    if not where.is_file():
        raise FileNotFoundError(f"load_adapter: {path} has no {CONFIG_FILE} (is it a peft adapter directory?)")
    config = parse_json(read_regular_file(where, 1 << 20, "adapter config"), where, ValueError)
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for key, plain in _PLAIN.items():
        if key in config and config[key] != plain and not (plain == {} and config[key] is None):
            raise ValueError(f"{where}: {key} = {config[key]!r}; this package reads plain LoRA adapters only "
                             f"({key} = {plain!r})")
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise ValueError(f"{where}: the field {key!r} is missing")
    return config


def _read_tensors(path: Path) -> dict:
    """{(our module name, 'A' | 'B'): tensor} of a peft adapter file, refusing keys we do not know."""
    from safetensors.torch import load_file

    where = path / WEIGHTS_FILE
    if not where.is_file():
        raise FileNotFoundError(f"load_adapter: {path} has no {WEIGHTS_FILE}")
    out = {}
    for key, tensor in load_file(str(where)).items():
        m = _KEY.fullmatch(key)
        ours = hf_to_mistral_name(m.group(1) + ".weight") if m else None
        if ours is None or ours.rsplit(".", 2)[-2] not in TARGETS:
            raise ValueError(f"{where}: tensor {key!r} is not the LoRA matrix of a block's linear layer in "
                             "transformers' MistralForCausalLM")
        out[(ours.removesuffix(".weight"), m.group(2))] = tensor
    return out


def _targets_of(tensors: dict, where: Path, n_layers: int) -> tuple:
    names = {name for name, _ in tensors}
    targets = tuple(t for t in TARGETS if any(n.endswith("." + t) for n in names))
    expected = {f"layers.{i}.{TARGETS[t]}.{t}" for i in range(n_layers) for t in targets}
    missing = sorted(expected - names) + sorted(f"{n}.lora_{m}" for n in names for m in "AB"
                                                if (n, m) not in tensors)
    extra = sorted(names - expected)
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"has {extra[0]}, beyond the model's {n_layers} layers"
        raise ValueError(f"{where}: the adapter does not cover every layer of this model alike ({what})")
    return targets


def read_adapter(model, path) -> torch.nn.Module:
    """Load a peft adapter directory into ``model`` (adding the adapters if it has none)."""
    path = Path(path)
    config = _read_config(path)
    tensors = _read_tensors(path)
    targets = _targets_of(tensors, path / WEIGHTS_FILE, model.args.n_layers)
    r = int(next(t for (_, m), t in tensors.items() if m == "A").shape[0])
    want = LoRAConfig(r, config["lora_alpha"], targets, float(config.get("lora_dropout", 0.0)))
    if config["r"] != r:
        raise ValueError(f"{path}: adapter_config.json says r = {config['r']}, the tensors have rank {r}")
    have = getattr(model, "lora_config", None)
    if have is None:
        with torch.random.fork_rng(devices=[]):          # the draws are overwritten: leave the RNG alone
            apply_lora(model, want.r, want.alpha, want.targets, want.dropout)
    elif (have.r, have.alpha, have.targets) != (want.r, want.alpha, want.targets):
        raise ValueError(f"{path}: an adapter of another shape (r={want.r}, alpha={want.alpha}, targets="
                         f"{want.targets}) than the model's (r={have.r}, alpha={have.alpha}, targets={have.targets})")
    with torch.no_grad():
        for name, layer in lora_layers(model):
            if layer.merged:
                raise ValueError(f"load_adapter: {name}'s adapter is merged into its weight; unmerge_lora first")
            a, b = tensors[(name, "A")], tensors[(name, "B")]
            heads = _qk_heads(model, name)
            for t, dest, label in ((a, layer.lora_A.weight, "A"), (b, layer.lora_B.weight, "B")):
                if tuple(t.shape) != tuple(dest.shape):
                    raise ValueError(f"{path}: {peft_key(name, label)} has shape {tuple(t.shape)}, but this "
                                     f"model's {name} needs {tuple(dest.shape)}: an adapter of another model")
            layer.lora_A.weight.copy_(a)
            layer.lora_B.weight.copy_(b if heads is None else hf_to_mistral_qk(b, heads))
    return model
