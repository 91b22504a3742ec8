"""Peak memory of load_model: streaming onto the meta device against the naive load_state_dict path.

Writes a ~1 GB random checkpoint (ModelArgs dim 2048, 3 layers, vocab 32000, float32) in a temporary
directory, then loads it in a fresh Python process per method and reads that process's peak resident
set size (resource.getrusage ru_maxrss) before and after the load:

* ``stream``        load_model(Mistral layout): meta model, one tensor at a time, no second copy;
* ``stream_hf``     load_model(Hugging Face layout): the same, plus the q/k RoPE permutation per tensor;
* ``stream_int8``   load_model(..., quantize="int8"): each linear weight quantized as it arrives;
* ``naive``         the peer: Transformer(args) on the CPU (random init) + safetensors load_file +
                    load_state_dict — the path that needs two or three copies of the model.

Reported per method: (peak - baseline) / checkpoint bytes, i.e. the memory the load itself costs, and
peak / checkpoint bytes, the whole process (Python + torch + the model) against the checkpoint.

    python benchmarks/load_memory.py            # records benchmarks/results/load_memory.json
    python benchmarks/load_memory.py --device cuda   # on a GPU: host RAM while streaming to the GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(2)
from mistral_nb import load_model, ModelArgs, Transformer
from mistral_nb.checkpoint import read_args
def status(field):   # bytes, from /proc/self/status (VmRSS now, VmHWM peak of this process's memory map)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
path, method, device = sys.argv[1], sys.argv[2], sys.argv[3]
base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base_hwm, base_now = status("VmHWM"), status("VmRSS")
if method == "naive":
    from safetensors.torch import load_file
    model = Transformer(read_args(path))
    model.load_state_dict(load_file(path + "/consolidated.safetensors"))
else:
    model = load_model(path, device=device, progress=False, quantize="int8" if method == "stream_int8" else None)
if device == "cuda":
    torch.cuda.synchronize()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
print(json.dumps({"baseline_peak_rss": base_peak, "peak_rss": peak, "baseline_vmhwm": base_hwm,
                  "peak_vmhwm": status("VmHWM"), "baseline_rss": base_now, "after_rss": status("VmRSS"),
                  "model_bytes": nbytes}))
"""


def write_checkpoint(root: Path, args, dtype) -> tuple[Path, Path, int]:
    """Random weights in both layouts; returns (mistral dir, hf dir, checkpoint bytes)."""
    import torch
    from safetensors.torch import save_file

    from mistral_nb import Transformer
    from mistral_nb.checkpoint import state_dict_for_layout

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Transformer(args).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=g) * 0.02).to(dtype) for k, s in shapes.items()}
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    mistral, hf = root / "mistral", root / "hf"
    mistral.mkdir()
    hf.mkdir()
    (mistral / "params.json").write_text(json.dumps(args.to_params_json()))
    save_file(state, str(mistral / "consolidated.safetensors"))
    (hf / "config.json").write_text(json.dumps(args.to_hf_config()))
    save_file(state_dict_for_layout(state, args, "hf"), str(hf / "model.safetensors"), metadata={"format": "pt"})
    return mistral, hf, nbytes


WRITER = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from load_memory import write_checkpoint
from mistral_nb import ModelArgs
args = ModelArgs(**json.loads(sys.argv[3]))
print(write_checkpoint(__import__("pathlib").Path(sys.argv[2]), args, getattr(torch, sys.argv[4]))[2])
"""


def measure(path: Path, method: str, device: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), method, device], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()

    from common import record
    from mistral_nb import ModelArgs

    args = ModelArgs(dim=a.dim, n_layers=a.layers, head_dim=128, hidden_dim=int(a.dim * 2.75), n_heads=a.dim // 128,
                     n_kv_heads=max(1, a.dim // 512), vocab_size=32000, sliding_window=4096)
    methods = ["stream", "stream_hf", "stream_int8"] + (["naive"] if a.device == "cpu" else [])
    results = {}
    with tempfile.TemporaryDirectory() as d:
        # written by a child process, so that this process stays small (a child's ru_maxrss starts
        # from its parent's resident size at fork)
        out = subprocess.run([sys.executable, "-c", WRITER, str(Path(__file__).parent), d, json.dumps(args.to_dict()),
                              a.dtype], check=True, capture_output=True, text=True)
        nbytes = int(out.stdout.strip().splitlines()[-1])
        mistral, hf = Path(d) / "mistral", Path(d) / "hf"
        for method in methods:
            r = measure(hf if method == "stream_hf" else mistral, method, a.device)
            r["load_over_checkpoint"] = round((r["peak_rss"] - r["baseline_peak_rss"]) / nbytes, 3)
            r["peak_over_checkpoint"] = round(r["peak_rss"] / nbytes, 3)
            r["vmhwm_load_over_checkpoint"] = round((r["peak_vmhwm"] - r["baseline_vmhwm"]) / nbytes, 3)
            results[method] = r
            print(f"{method:12s} peak-baseline {r['load_over_checkpoint']:.3f} x checkpoint, "
                  f"peak {r['peak_over_checkpoint']:.3f} x checkpoint "
                  f"(baseline {r['baseline_peak_rss'] / 1e9:.2f} GB, peak {r['peak_rss'] / 1e9:.2f} GB)")
    result = {"checkpoint_bytes": nbytes, "checkpoint_dtype": a.dtype, "device": a.device,
              "model_args": args.to_dict(), "methods": results,
              "metric": "ru_maxrss of a fresh process: baseline after importing torch and mistral_nb, peak after "
                        "the load; load_over_checkpoint = (peak - baseline) / checkpoint bytes"}
    if not a.no_record:
        record("load_memory", result)


if __name__ == "__main__":
    main()
