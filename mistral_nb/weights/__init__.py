"""Checkpoints in both layouts: read, validate, convert, stream into a model; and write.

Hugging Face layout: ``config.json`` + ``model.safetensors`` (or shards ``model-0000i-of-0000n.safetensors``
listed in ``model.safetensors.index.json``); names like ``model.layers.0.self_attn.q_proj.weight``;
q/k rows in the rotate-half RoPE layout.
Mistral layout: ``params.json`` + ``consolidated.safetensors``; names like ``layers.0.attention.wq.weight``
(this package's own names); q/k rows in the interleaved RoPE layout.

One module per step:

* ``names``   — layout conversion: tensor names and the q/k row permutation (no files);
* ``layout``  — which files form a checkpoint; a directory holding two checkpoints is refused;
* ``loading`` — ``plan_checkpoint`` (headers only) and ``load_model``, which builds the model on the
  meta device and streams the tensors into it one at a time (no second copy), checking each for NaN/Inf;
* ``writing`` — ``save_checkpoint`` and ``convert_checkpoint``, which replace their target atomically.

Pickle checkpoints (.bin/.pt/.pth) are refused: loading a pickle can run arbitrary code.
"""

from ..config import ModelArgs
from ..model import Transformer
from ..quant import Int8Linear, quantize_model
from ..rope import hf_to_mistral_qk, mistral_to_hf_qk
from ..safetensors_io import CheckpointError, TensorInfo, read_header, read_tensor
from .layout import PICKLE_SUFFIXES, _weight_files, detect_layout, read_args, weight_files
from .loading import (DTYPE_NAMES, FLOAT_DTYPES, QUANTIZE_MODES, _release, _set_tensor, empty_model,
                      first_non_finite, iter_checkpoint, load_model, plan_checkpoint, resolve_device, resolve_dtype)
from .names import (_HF_LAYER, _HF_TOP, _MISTRAL_LAYER, _MISTRAL_TOP, _is_q_or_k, expected_shapes, hf_to_mistral_name,
                    mistral_to_hf_name, state_dict_for_layout)
from .writing import convert_checkpoint, save_checkpoint

__all__ = ["load_model", "save_checkpoint", "convert_checkpoint", "plan_checkpoint", "iter_checkpoint",
           "detect_layout", "read_args", "weight_files", "empty_model", "expected_shapes", "hf_to_mistral_name",
           "mistral_to_hf_name", "state_dict_for_layout", "resolve_dtype", "resolve_device", "first_non_finite",
           "CheckpointError", "TensorInfo", "read_header", "read_tensor", "hf_to_mistral_qk", "mistral_to_hf_qk",
           "ModelArgs", "Transformer", "Int8Linear", "quantize_model", "PICKLE_SUFFIXES", "FLOAT_DTYPES",
           "DTYPE_NAMES", "QUANTIZE_MODES"]
