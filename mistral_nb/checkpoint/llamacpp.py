"""Run a GGUF file in llama.cpp (through llama-cpp-python) and read its logits at every position.

llama-cpp-python builds llama.cpp from source when it is installed (``pip install llama-cpp-python``;
benchmarks/README.md gives the pinned version and the build flags), so it is not a dependency of this
package: ``llamacpp_logits`` imports it where it runs, or, when it lives in another virtual environment,
runs this very file with that environment's interpreter (``python=`` or ``$LLAMA_CPP_PYTHON``), which
needs nothing but numpy and llama_cpp:

    $LLAMA_CPP_PYTHON mistral_nb/checkpoint/llamacpp.py model.gguf tokens.npy logits.npy

Each sequence is evaluated from an empty cache in one batch of S tokens, with a float32 KV cache
(llama.cpp's default is float16, whose rounding would add about 1e-3 of relative noise).
"""

from __future__ import annotations

import os
import sys

__all__ = ["llamacpp_available", "llamacpp_logits", "llamacpp_version", "PYTHON_ENV"]

PYTHON_ENV = "LLAMA_CPP_PYTHON"     # an interpreter in whose environment llama_cpp is installed


def _logits_in_process(model: str, tokens, threads: int = 2, kv_type: str = "f32"):
    """float32 numpy (batch, S, vocab): row i = llama.cpp's logits after token i of each sequence."""
    import numpy as np
    from llama_cpp import GGML_TYPE_F16, GGML_TYPE_F32, Llama

    kv = {"f32": GGML_TYPE_F32, "f16": GGML_TYPE_F16}[kv_type]
    seq_len = tokens.shape[1]
    llm = Llama(model_path=model, n_ctx=max(seq_len, 16), n_batch=seq_len, n_ubatch=seq_len, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False, type_k=kv, type_v=kv, flash_attn=False)
    out = np.empty((tokens.shape[0], seq_len, llm.n_vocab()), dtype=np.float32)
    for b, row in enumerate(tokens):
        llm.reset()
        llm.eval([int(t) for t in row])
        out[b] = np.asarray(llm.scores[:llm.n_tokens], dtype=np.float32)
    return out


def _importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llamacpp_available(python=None) -> bool:
    """Whether ``llamacpp_logits`` can run here: llama_cpp importable, or an interpreter given / in $LLAMA_CPP_PYTHON."""
    return bool(python or os.environ.get(PYTHON_ENV)) or _importable()


def llamacpp_version(python=None) -> str:
    """llama-cpp-python's version where ``llamacpp_logits`` would run it."""
    python = python or os.environ.get(PYTHON_ENV)
    if python is None:
        import llama_cpp

        return llama_cpp.__version__
    import subprocess

    done = subprocess.run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{python} cannot import llama_cpp: {done.stderr[-500:]}")
    return done.stdout.strip()


def llamacpp_logits(model_path, tokens, python=None, threads: int = 2, kv_type: str = "f32"):
    """llama.cpp's logits (batch, S, vocab) as a float32 torch tensor, for ``tokens`` (batch, S) ids
    (include BOS yourself). ``python``: run in that interpreter's environment (default: this process if
    llama_cpp imports, else ``$LLAMA_CPP_PYTHON``). ImportError saying how to get llama.cpp otherwise."""
    import numpy as np
    import torch

    ids = np.asarray(torch.as_tensor(tokens).cpu(), dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"tokens must be (batch, seq) ids, got shape {ids.shape}")
    python = python or os.environ.get(PYTHON_ENV)
    if python is None:
        if not _importable():
            raise ImportError("llama_cpp is not installed here: pip install llama-cpp-python (it builds llama.cpp), "
                              f"or set ${PYTHON_ENV} to the python of an environment that has it")
        return torch.from_numpy(_logits_in_process(str(model_path), ids, threads, kv_type))
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "tokens.npy"), os.path.join(tmp, "logits.npy")
        np.save(src, ids)
        done = subprocess.run([str(python), os.path.abspath(__file__), str(model_path), src, dst, kv_type, str(threads)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"llama.cpp via {python} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        return torch.from_numpy(np.load(dst))


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))      # run as a script: this directory's modules
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]   # (gguf.py, ...) must not shadow others
    import numpy as np

    if len(sys.argv) not in (4, 5, 6):
        sys.exit("usage: llamacpp.py MODEL.gguf TOKENS.npy OUT.npy [f32|f16] [threads]")
    kv = sys.argv[4] if len(sys.argv) > 4 else "f32"
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    np.save(sys.argv[3], _logits_in_process(sys.argv[1], np.load(sys.argv[2]), threads, kv))


if __name__ == "__main__":
    main()
