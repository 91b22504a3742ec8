"""Mistral 7B at its real size on this CPU: bf16 and int8 decoding against the memory bandwidth.

Writes (once, cached) a checkpoint with exactly ``ModelArgs.mistral_7b()``'s shapes and random bf16
weights, in Hugging Face's sharded layout, so that this package and transformers read the very same
files. Then, each in a fresh process (a 7B model in bf16 fills 14.5 GB: two cannot share 24 GB), and
interleaved over ``--rounds`` rounds:

* ``ours_bf16``   ``load_model(dtype=bfloat16)``, streamed tensor by tensor;
* ``ours_bf16_packed``  ``load_model(dtype=bfloat16, pack=True)``: linear weights packed for oneDNN (cpu_pack.py);
* ``ours_int8``   ``load_model(dtype=bfloat16, quantize="int8")``: the blocks' linear weights in int8;
* ``hf_bf16``     transformers' ``MistralForCausalLM.from_pretrained(dtype=bfloat16)``;
* ``hf_bf16_compiled``  the same with its forward under ``torch.compile`` and a static KV cache
  (``generate(..., cache_implementation="static")``, transformers' documented recipe for a compiled
  decode); the warm-up generation compiles it (prefill and decode shapes), outside the timings.

Each process first measures this machine's memory bandwidth (a read-only sum and a copy of 1 GB), then
loads the model (wall time, peak resident memory over the loaded weights' bytes), then generates 33
tokens greedily after a 128-token prompt, ``--reps`` times, stamping the clock as each token is sampled:
the prefill is the time to the first token, the decode the 32 steps after it, each timed directly. Decode GB/s = weight bytes read per token (every weight once, one embedding row)
x tokens/s; the ceiling is the read bandwidth (the median over all processes of the run) over that byte
count.

    python benchmarks/cpu_7b.py                # loads the 7B model 10 times; records results/cpu_7b.json
    python benchmarks/cpu_7b.py --dir /big/disk/mistral7b-random   # where the checkpoint goes

Needs: 14.5 GB of free disk for the checkpoint (kept for later runs; delete it when done) and about
16 GB of free RAM (the bf16 model plus ~1 GB). Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

DEFAULT_DIR = Path(os.environ.get("MISTRAL_NB_CACHE", Path.home() / ".cache" / "mistral_nb")) / "mistral-7b-random-bf16"
METHODS = ("ours_bf16", "ours_bf16_packed", "ours_int8", "hf_bf16", "hf_bf16_compiled")
SHARD_BYTES = 4 * 2**30
GB = 1e9


# ----------------------------------------------------------------------------- the checkpoint
def bench_args(tiny: bool):
    from mistral_nb import ModelArgs

    return ModelArgs.tiny(vocab_size=32000, n_layers=2) if tiny else ModelArgs.mistral_7b()


def write_checkpoint(path: Path, tiny: bool = False, seed: int = 0) -> None:
    """Random bf16 weights of Mistral 7B's exact shapes, HF layout, ~4 GB shards (written once)."""
    from safetensors.torch import save_file

    from mistral_nb.checkpoint import empty_model, mistral_to_hf_name

    marker = path / "COMPLETE"
    if marker.is_file():
        return
    args = bench_args(tiny)
    path.mkdir(parents=True, exist_ok=True)
    meta = empty_model(args)
    gen = torch.Generator().manual_seed(seed)
    names = [(n, tuple(p.shape)) for n, p in meta.named_parameters()]
    shards, current, size = [], [], 0
    for n, shape in names:
        nbytes = 2 * torch.Size(shape).numel()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((n, shape))
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    t0 = time.perf_counter()
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for n, shape in shard:
            if n.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:   # std 0.02: the usual init scale, keeps 32 random layers finite
                t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
            tensors[mistral_to_hf_name(n)] = t      # q/k rows: random, so either RoPE layout is as valid
            total += t.numel() * 2
        save_file(tensors, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
        del tensors
        print(f"wrote {fname} ({time.perf_counter() - t0:.0f} s)", flush=True)
    config = args.to_hf_config()
    config["torch_dtype"] = "bfloat16"
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=2))
    marker.write_text(f"random bf16 weights, seed {seed}: {args}\n")


# ----------------------------------------------------------------------------- one measurement process
def bandwidth(gb: float = 1.0, repeats: int = 5) -> dict:
    """Read-only (sum) and copy (read + write) bandwidth of a ``gb`` GB float32 buffer, best of repeats."""
    n = int(gb * GB / 4)
    src = torch.ones(n)
    dst = torch.empty_like(src)
    read, copy = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        src.sum()
        read.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(src)
        copy.append(time.perf_counter() - t0)
    return {"read_gb_per_s": round(n * 4 / min(read[1:]) / GB, 2), "copy_gb_per_s": round(2 * n * 4 / min(copy[1:]) / GB, 2)}


def child(method: str, path: Path, prompt_len: int, new_tokens: int, reps: int) -> dict:
    from common import PeakRSS

    from mistral_nb.costs import decode_bytes_per_token, model_nbytes

    out = {"method": method, **bandwidth()}
    torch.manual_seed(0)
    prompt = torch.randint(3, 32000, (prompt_len,)).tolist()
    with PeakRSS(interval=0.01) as rss:
        t0 = time.perf_counter()
        if method.startswith("ours"):
            from mistral_nb import load_model
            model = load_model(path, dtype=torch.bfloat16, quantize="int8" if method == "ours_int8" else None,
                               pack=method == "ours_bf16_packed", progress=False)
        else:
            from transformers import MistralForCausalLM
            model = MistralForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
            if method == "hf_bf16_compiled":
                model.forward = torch.compile(model.forward, dynamic=False)
        out["load_s"] = round(time.perf_counter() - t0, 3)
    weights = model_nbytes(model)
    out.update(weights_gb=round(weights / GB, 3), load_peak_rss_increase_gb=round(rss.peak_increase / GB, 3),
               load_peak_over_weights=round(rss.peak_increase / weights, 3))
    if method.startswith("ours"):
        from mistral_nb import generate
        out["read_per_token_gb"] = round(decode_bytes_per_token(model) / GB, 4)

        def run(n, stamp):
            return generate(model, [prompt], max_new_tokens=n, on_token=lambda t: stamp())[0]
    else:
        from transformers.generation.streamers import BaseStreamer

        out["read_per_token_gb"] = round(decode_bytes_per_token(_hf_view(model)) / GB, 4)
        ids = torch.tensor([prompt])

        class Stamps(BaseStreamer):            # put() gets the prompt first, then each new token
            def __init__(self, stamp):
                self.stamp, self.calls = stamp, 0

            def put(self, value):
                self.calls += 1
                if self.calls > 1:
                    self.stamp()

            def end(self):
                pass

        static = {"cache_implementation": "static"} if method == "hf_bf16_compiled" else {}

        def run(n, stamp):
            with torch.inference_mode():
                res = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=Stamps(stamp),
                                     **static)
            return res[0, prompt_len:].tolist()
    prefill, decode, tokens = timed_runs(run, new_tokens, reps)
    p, d = statistics.median(prefill), statistics.median(decode)
    out.update(prefill_s=[round(x, 3) for x in prefill], decode_s=[round(x, 3) for x in decode],
               prefill_tokens_per_s=round(prompt_len / p, 2), decode_tokens_per_s=round(new_tokens / d, 3),
               decode_gb_per_s=round(out["read_per_token_gb"] * new_tokens / d, 2),
               ceiling_tokens_per_s=round(out["read_gb_per_s"] / out["read_per_token_gb"], 3),
               greedy_tokens=tokens)
    out["fraction_of_ceiling"] = round(out["decode_tokens_per_s"] / out["ceiling_tokens_per_s"], 3)
    return out


def timed_runs(run, new_tokens: int, reps: int):
    """Time ``run(new_tokens + 1, stamp)`` ``reps`` times after a warm-up: ``stamp()`` is called as each
    token is sampled, so the prefill is start -> first token and the decode the ``new_tokens`` steps
    after it, each timed directly. Returns (prefill seconds, decode seconds, the last run's tokens)."""
    def once():
        stamps = []
        t0 = time.perf_counter()
        tokens = run(new_tokens + 1, lambda: stamps.append(time.perf_counter()))
        if len(stamps) != new_tokens + 1:
            raise RuntimeError(f"expected {new_tokens + 1} sampled tokens, saw {len(stamps)}")
        return stamps[0] - t0, stamps[-1] - stamps[0], tokens

    once()                                                      # warm-up (allocations, first calls)
    prefill, decode, tokens = [], [], None
    for _ in range(reps):
        p, d, tokens = once()
        if not (p > 0 and d > 0):
            raise RuntimeError(f"non-positive timing (prefill {p} s, decode {d} s): the clock or the run is wrong")
        prefill.append(p)
        decode.append(d)
    return prefill, decode, tokens


def _hf_view(model):
    """An object with ``tok_embeddings`` and the parameters of an HF model, for decode_bytes_per_token."""
    class View(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m
            self.tok_embeddings = m.model.embed_tokens
    return View(model)

SUMMARY_KEYS = ("load_s", "load_peak_over_weights", "weights_gb", "read_per_token_gb", "prefill_tokens_per_s",
                "decode_tokens_per_s", "decode_gb_per_s")


def summarize(runs: list, methods) -> tuple[dict, dict, float]:
    """Medians per method over the rounds, and the ratios between methods.

    The read bandwidth of one process varied from run to run on the recording machine (from about 29 to
    50 GB/s for the same 1 GB sum, steady within a process), so every method's ceiling uses one figure:
    the median over all processes of the run.
    """
    bandwidth = round(statistics.median(x["read_gb_per_s"] for x in runs), 2)
    summary = {}
    for method in methods:
        rs = [x for x in runs if x["method"] == method]
        summary[method] = {k: round(statistics.median(x[k] for x in rs), 3) for k in SUMMARY_KEYS}
        summary[method]["ceiling_tokens_per_s"] = round(bandwidth / summary[method]["read_per_token_gb"], 3)
        summary[method]["fraction_of_ceiling"] = round(summary[method]["decode_tokens_per_s"]
                                                       / summary[method]["ceiling_tokens_per_s"], 3)
    ratios = {}
    if {"ours_bf16", "hf_bf16"} <= set(summary):
        ratios["ours_bf16_decode_time_over_hf"] = round(summary["hf_bf16"]["decode_tokens_per_s"] / summary["ours_bf16"]["decode_tokens_per_s"], 3)
        ratios["ours_bf16_prefill_time_over_hf"] = round(summary["hf_bf16"]["prefill_tokens_per_s"] / summary["ours_bf16"]["prefill_tokens_per_s"], 3)
    if {"ours_bf16_packed", "hf_bf16"} <= set(summary):
        ratios["ours_packed_decode_time_over_hf"] = round(summary["hf_bf16"]["decode_tokens_per_s"] / summary["ours_bf16_packed"]["decode_tokens_per_s"], 3)
        ratios["ours_packed_prefill_time_over_hf"] = round(summary["hf_bf16"]["prefill_tokens_per_s"] / summary["ours_bf16_packed"]["prefill_tokens_per_s"], 3)
    for ours in ("ours_bf16", "ours_bf16_packed"):       # against transformers compiled, the fair peer
        if {ours, "hf_bf16_compiled"} <= set(summary):
            key = ours.removeprefix("ours_").replace("bf16_packed", "packed")
            for what in ("decode", "prefill"):
                ratios[f"ours_{key}_{what}_time_over_hf_compiled"] = round(
                    summary["hf_bf16_compiled"][f"{what}_tokens_per_s"] / summary[ours][f"{what}_tokens_per_s"], 3)
    if {"hf_bf16", "hf_bf16_compiled"} <= set(summary):
        ratios["hf_compiled_over_hf_decode_tokens_per_s"] = round(
            summary["hf_bf16_compiled"]["decode_tokens_per_s"] / summary["hf_bf16"]["decode_tokens_per_s"], 3)
    if {"ours_bf16", "ours_bf16_packed"} <= set(summary):
        ratios["packed_over_bf16_decode_tokens_per_s"] = round(summary["ours_bf16_packed"]["decode_tokens_per_s"] / summary["ours_bf16"]["decode_tokens_per_s"], 3)
    if {"ours_bf16", "ours_int8"} <= set(summary):
        ratios["int8_over_bf16_decode_tokens_per_s"] = round(summary["ours_int8"]["decode_tokens_per_s"] / summary["ours_bf16"]["decode_tokens_per_s"], 3)
    greedy = {m: next(x["greedy_tokens"] for x in runs if x["method"] == m) for m in methods}
    if {"ours_bf16", "hf_bf16"} <= set(greedy):
        same = [x == y for x, y in zip(greedy["ours_bf16"], greedy["hf_bf16"])]
        ratios["greedy_tokens_equal_ours_hf"] = f"{sum(same)}/{len(same)}"
    return summary, ratios, bandwidth


# ----------------------------------------------------------------------------- the driver
def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Cost: 14.5 GB of disk for the random checkpoint (written once, kept in --dir), about 16 GB of "
               "free RAM, and about 20 minutes on 2 Zen 5 cores (2026-12-04) for the default 2 rounds x 5 methods (each loads the "
               "7B model in a fresh process; the compiled one compiles it first). Overwrites the committed benchmarks/results/cpu_7b.json (not with "
               "--tiny). Nothing else should run meanwhile.")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the random 7B checkpoint is (written once)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the methods")
    p.add_argument("--reps", type=int, default=2, help="timed generations per process (after a warm-up)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens (the prefill)")
    p.add_argument("--new", type=int, default=32, help="decode steps timed after the first new token")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="what to measure (default: all; with --tiny all but hf_bf16_compiled, whose compilation "
                        "takes minutes)")
    p.add_argument("--tiny", action="store_true", help="smoke test: a 2-layer model, --dir required, nothing recorded")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--resummarize", action="store_true",
                   help="recompute the summary of the recorded results/cpu_7b.json from its runs (no measurement)")
    a = p.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.dir, a.prompt, a.new, a.reps)), flush=True)
        return
    from common import RESULTS, record

    if a.resummarize:
        old = json.loads((RESULTS / "cpu_7b.json").read_text())
        methods = list(dict.fromkeys(x["method"] for x in old["runs"]))
        summary, ratios, bandwidth = summarize(old["runs"], methods)
        keep = {k: v for k, v in old.items() if k not in ("command", "machine", "machine_note", "summary", "ratios", "read_gb_per_s")}
        record("cpu_7b", {"measured_by": old.get("measured_by", old["command"]), "measured_on": old["machine"],
                          **keep, "read_gb_per_s": bandwidth, "summary": summary, "ratios": ratios})
        return
    if a.tiny and a.dir == DEFAULT_DIR:
        sys.exit("cpu_7b: --tiny needs --dir (a scratch directory)")
    if a.methods is None:
        a.methods = [m for m in METHODS if not (a.tiny and m == "hf_bf16_compiled")]
    from mistral_nb.speed.cpu_pack import pack_available

    if "ours_bf16_packed" in a.methods and not pack_available():
        print("cpu_7b: no oneDNN bf16 kernel here; skipping ours_bf16_packed", flush=True)
        a.methods = [m for m in a.methods if m != "ours_bf16_packed"]
    from mistral_nb.checkpoint.hub import available_ram       # MemAvailable: free memory plus droppable page cache

    free = available_ram()
    if free is not None and free < 16 * GB and not a.tiny:
        sys.exit(f"cpu_7b: {free / GB:.1f} GB of RAM free; the bf16 model needs ~16 GB. Close other programs.")
    t0 = time.perf_counter()
    write_checkpoint(a.dir, a.tiny)
    write_s = time.perf_counter() - t0
    runs = []
    for r in range(a.rounds):
        for method in a.methods:
            cmd = [sys.executable, __file__, "--child", method, "--dir", str(a.dir), "--prompt", str(a.prompt),
                   "--new", str(a.new), "--reps", str(a.reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"cpu_7b: {method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            res = json.loads(lines[-1][len("RESULT "):])
            res["round"] = r
            runs.append(res)
            print({k: v for k, v in res.items() if k != "greedy_tokens"}, flush=True)
    summary, ratios, bandwidth_gb_per_s = summarize(runs, a.methods)
    print("summary:", json.dumps(summary, indent=1), ratios)
    if a.tiny:
        print("tiny run: nothing recorded")
        return
    import transformers

    record("cpu_7b", {"checkpoint": "random bf16, ModelArgs.mistral_7b() shapes, HF layout",
                      "transformers": transformers.__version__,
                      "checkpoint_write_s": round(write_s, 1), "prompt_tokens": a.prompt, "new_tokens": a.new,
                      "rounds": a.rounds, "reps": a.reps, "read_gb_per_s": bandwidth_gb_per_s, "summary": summary,
                      "ratios": ratios, "runs": runs})


if __name__ == "__main__":
    main()
