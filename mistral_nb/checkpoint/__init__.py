"""Checkpoints in both layouts: read, validate, convert, stream into a model; write; fetch from the Hub.

Hugging Face layout: ``config.json`` + ``model.safetensors`` (or shards ``model-0000i-of-0000n.safetensors``
listed in ``model.safetensors.index.json``); names like ``model.layers.0.self_attn.q_proj.weight``;
q/k rows in the rotate-half RoPE layout.
Mistral layout: ``params.json`` + ``consolidated.safetensors``; names like ``layers.0.attention.wq.weight``
(this package's own names); q/k rows in the interleaved RoPE layout.

One module per step:

* ``files``            — opening only regular files, bounded reads, strict JSON;
* ``safetensors_file`` — the safetensors header, checked, and one tensor (or a piece of one) at a time;
* ``names``            — layout conversion: tensor names and the q/k row permutation (no files);
* ``layout``           — which files form a checkpoint; a directory holding two checkpoints is refused;
* ``loading``          — ``plan_checkpoint`` (headers only) and ``load_model``, which builds the model on
  the meta device and streams the tensors into it one at a time (no second copy), checking each for NaN/Inf;
* ``writing``          — ``save_checkpoint`` and ``convert_checkpoint``, which replace their target atomically;
* ``hub``              — the Colab path: ``load_pretrained`` fetches the real weights and picks device,
  dtype and int8 to fit the machine.

Pickle checkpoints (.bin/.pt/.pth) are refused: loading a pickle can run arbitrary code.
"""

from .hub import cuda_or_explain, load_pretrained
from .layout import PICKLE_SUFFIXES, detect_layout, read_args, weight_files
from .loading import (DTYPE_NAMES, FLOAT_DTYPES, QUANTIZE_MODES, empty_model, first_non_finite, iter_checkpoint,
                      load_model, plan_checkpoint, resolve_device, resolve_dtype)
from .names import expected_shapes, hf_to_mistral_name, mistral_to_hf_name, state_dict_for_layout
from .safetensors_file import CheckpointError, TensorInfo, read_header, read_tensor
from .writing import convert_checkpoint, save_checkpoint

__all__ = ["load_model", "save_checkpoint", "convert_checkpoint", "plan_checkpoint", "iter_checkpoint",
           "detect_layout", "read_args", "weight_files", "empty_model", "expected_shapes", "hf_to_mistral_name",
           "mistral_to_hf_name", "state_dict_for_layout", "resolve_dtype", "resolve_device", "first_non_finite",
           "CheckpointError", "TensorInfo", "read_header", "read_tensor", "PICKLE_SUFFIXES", "FLOAT_DTYPES",
           "DTYPE_NAMES", "QUANTIZE_MODES", "load_pretrained", "cuda_or_explain"]
