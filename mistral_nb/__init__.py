"""mistral_nb: Mistral 7B (v0.1) from scratch in PyTorch, one tested module per concept.

The model's concepts sit at the top, one module each, in the order the chapters build them:
``tokenizer/``, ``config``, ``norm``, ``rope``, ``attention``, ``masks``, ``cache``, ``model``,
``generate``, ``lora`` (low-rank adapters), and ``costs`` (every count: parameters, bytes, KV cache,
FLOPs, fine-tuning memory). Around them, the
wings that serve the model: ``checkpoint/`` (files in both layouts, the Hub), ``speed/`` (weight
formats, FlashAttention's idea, the roofline), ``parallel/`` (tensor parallelism), ``training/``
(the training loop, the corpus, synthetic tasks), ``evals/`` (losses, baselines, attention heads),
``book/`` (the book's own tooling) and ``viz/`` (its figures).
"""

from .config import ConfigError, ModelArgs
from .model import Transformer
from .cache import RollingBufferCache
from .checkpoint import CheckpointError, load_model, load_pretrained, save_checkpoint
from .generate import generate
from .tokenizer import Tokenizer

__all__ = ["ModelArgs", "Transformer", "Tokenizer", "load_model", "generate", "RollingBufferCache",
           "save_checkpoint", "CheckpointError", "ConfigError", "load_pretrained"]
__version__ = "0.1.0"
