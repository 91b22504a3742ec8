"""mistral_nb: Mistral 7B (v0.1) from scratch in PyTorch, one tested module per concept."""

from .config import ConfigError, ModelArgs
from .model import Transformer
from .cache import RollingBufferCache
from .safetensors_io import CheckpointError
from .weights import load_model, save_checkpoint
from .generate import generate
from .hub import load_pretrained
from .tokenizer import Tokenizer

__all__ = ["ModelArgs", "Transformer", "Tokenizer", "load_model", "generate", "RollingBufferCache",
           "save_checkpoint", "CheckpointError", "ConfigError", "load_pretrained"]
__version__ = "0.1.0"
